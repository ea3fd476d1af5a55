"""A tiny stand-in for the Hugging Face hub on 127.0.0.1, for download tests.

It answers the requests `huggingface_hub` makes for `hf_hub_download`, `snapshot_download` and
`HfApi.dataset_info`:

    GET  /api/datasets/<repo>/revision/<rev>        -> JSON {"id", "sha", "siblings"}
    GET  /api/datasets/<repo>/tree/<rev>[/<dir>]    -> JSON [{"type", "oid", "size", "path", "lfs"?}] (one page;
                                                       `recursive=true` lists the folders below too)
    HEAD /datasets/<repo>/resolve/<rev>/<path>      -> X-Repo-Commit, ETag, X-Linked-Etag/-Size, Content-Length
    GET  /datasets/<repo>/resolve/<rev>/<path>      -> the bytes (Range: bytes=N- honoured: 206 + Content-Range)

A revision is a branch or tag name, or the 40-hex commit of one (`commit_of`); each name has its own set
of files (`add_file(..., revision="v1")`). Errors carry the hub's X-Error-Code (RepoNotFound,
RevisionNotFound, EntryNotFound) so the client raises the same exceptions as against the real hub.

ETag styles: "lfs" (the default: ETag and X-Linked-Etag are the quoted sha256, X-Linked-Size the size, as
for the hub's large files), "git" (ETag is the git blob sha1, as for small files), "opaque" (an ETag that
is no content hash, as some mirrors send). With `redirect=True` the resolve URL answers 302 with the
metadata headers and a Location on `/cdn/...` at host `localhost` (another host name for this server),
like the hub's redirect to its CDN.

Faults, each used once per path (for GETs of the body): `drop_after[path] = n` sends the full headers then
only n body bytes and closes; `corrupt[path] = True` flips a byte of the body (size unchanged).
`refuse[path] = status` answers that HTTP status to every request for the file (HEAD and GET).
`require_token` answers 401 without `Authorization: Bearer <token>`. Every request for a dataset is
recorded in `requests`. `bytes_per_second` (None: as fast as possible) slows each body transfer to that
rate, per connection, so a download lasts long enough to be interrupted (scripts/fault_injection.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

CHUNK_BYTES = 1 << 20
THROTTLE_SLICE_SECONDS = 0.05  # a throttled body goes out in slices of this many seconds' worth


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def do_HEAD(self):
        self._dispatch(head=True)

    def do_GET(self):
        self._dispatch(head=False)

    def _send(self, status: int, headers: dict | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self, head: bool) -> None:
        hub: HubServer = self.server.hub
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if not path.startswith(("/api/datasets/", "/datasets/", "/cdn/")):
            self._send(404)  # e.g. the client's once-a-day registry fetch: not part of a download
            return
        hub.requests.append({"method": self.command, "path": path, "range": self.headers.get("Range"),
                             "authorization": self.headers.get("Authorization"),
                             "host": self.headers.get("Host")})
        cdn = path.startswith("/cdn/")
        if not cdn and hub.require_token and self.headers.get("Authorization") != f"Bearer {hub.require_token}":
            self._send(401, {"X-Error-Message": "Invalid credentials in Authorization header"}
                       if self.headers.get("Authorization") else {})
            return
        if path.startswith("/api/datasets/") and "/revision/" in path:
            repo_id, revision = path[len("/api/datasets/"):].split("/revision/", 1)
            self._repo_info(hub, repo_id, revision)
        elif path.startswith("/api/datasets/") and "/tree/" in path:
            repo_id, rest = path[len("/api/datasets/"):].split("/tree/", 1)
            revision, _, folder = rest.partition("/")
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            self._tree(hub, repo_id, revision, folder, query.get("recursive", [""])[0].lower() == "true")
        elif path.startswith("/datasets/") and "/resolve/" in path:
            repo_id, rest = path[len("/datasets/"):].split("/resolve/", 1)
            revision, _, rel = rest.partition("/")
            self._file(hub, repo_id, revision, rel, head, cdn=False)
        elif cdn:
            repo_id, revision, rel = path[len("/cdn/"):].split("/-/", 2)
            self._file(hub, repo_id, revision, rel, head, cdn=True)
        else:
            self._send(404)

    def _find_revision(self, hub: "HubServer", repo_id: str, revision: str) -> str | None:
        """The revision name `revision` stands for (itself, or the name whose commit it is); None: none."""
        if not (hub.root / repo_id).is_dir():
            self._send(404, {"X-Error-Code": "RepoNotFound"})
            return None
        for name in hub.revisions(repo_id):
            if revision in (name, hub.commit_of(repo_id, name)):
                return name
        self._send(404, {"X-Error-Code": "RevisionNotFound"})
        return None

    def _repo_info(self, hub: "HubServer", repo_id: str, revision: str) -> None:
        name = self._find_revision(hub, repo_id, revision)
        if name is None:
            return
        base = hub.root / repo_id / name
        files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        body = json.dumps({"id": repo_id, "sha": hub.commit_of(repo_id, name),
                           "siblings": [{"rfilename": f} for f in files]}).encode()
        self._send(200, {"Content-Type": "application/json"}, body)

    def _tree(self, hub: "HubServer", repo_id: str, revision: str, folder: str, recursive: bool) -> None:
        """The hub's tree listing: files with their git blob sha1 (`oid`), LFS files also with their sha256."""
        name = self._find_revision(hub, repo_id, revision)
        if name is None:
            return
        base = hub.root / repo_id / name
        start = base / folder
        if not start.is_dir():
            self._send(404, {"X-Error-Code": "EntryNotFound"})
            return
        entries = []
        for item in sorted(start.rglob("*") if recursive else start.iterdir()):
            path = item.relative_to(base).as_posix()
            if item.is_dir():
                entries.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                                "path": path})
                continue
            data = item.read_bytes()
            entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            if hub.etag_style == "lfs":
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        self._send(200, {"Content-Type": "application/json"}, json.dumps(entries).encode())

    def _file(self, hub: "HubServer", repo_id: str, revision: str, rel: str, head: bool, cdn: bool) -> None:
        name = self._find_revision(hub, repo_id, revision)
        if name is None:
            return
        commit = hub.commit_of(repo_id, name)
        file = hub.root / repo_id / name / rel
        if not file.is_file():
            self._send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
            return
        if rel in hub.refuse:
            self._send(hub.refuse[rel], {"X-Repo-Commit": commit})
            return
        data = file.read_bytes()
        meta = {"X-Repo-Commit": commit}
        if hub.etag_style == "lfs":
            sha = hashlib.sha256(data).hexdigest()
            meta.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
        elif hub.etag_style == "git":
            meta["ETag"] = f'"{git_blob_sha1(data)}"'
        else:
            meta["ETag"] = f'"mirror-{len(data)}"'
        if hub.redirect and not cdn:
            location = (f"http://localhost:{hub.port}/cdn/{urllib.parse.quote(repo_id)}/-/"
                        f"{urllib.parse.quote(name)}/-/{urllib.parse.quote(rel)}")
            self._send(302, {"Location": location, **meta})
            return
        start, end, status = 0, len(data) - 1, 200
        range_header = self.headers.get("Range")
        if range_header and hub.honour_range:
            first, _, last = range_header.removeprefix("bytes=").partition("-")
            start, end = int(first), int(last) if last else len(data) - 1
            if start >= len(data):
                self._send(416, {"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
        body = data[start:end + 1]
        if not head and hub.corrupt.pop(rel, False) and body:
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for key, value in meta.items():
            self.send_header(key, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if head:
            return
        drop = hub.drop_after.pop(rel, None)
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            return  # the connection closes with the body unfinished
        view = memoryview(body)
        rate = hub.bytes_per_second
        chunk = CHUNK_BYTES if not rate else max(1, min(CHUNK_BYTES, int(rate * THROTTLE_SLICE_SECONDS)))
        started = time.monotonic()
        for offset in range(0, len(body), chunk):
            self.wfile.write(view[offset:offset + chunk])
            if rate:  # sleep until the bytes sent so far match the rate
                time.sleep(max(0.0, started + (offset + chunk) / rate - time.monotonic()))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: "HubServer"

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away mid-body (killed): expected
            return
        super().handle_error(request, client_address)


class HubServer:
    """Context manager: `with HubServer(root) as hub: hub.endpoint` -> 'http://127.0.0.1:PORT'.

    Files live at `<root>/<repo_id>/<revision name>/<path>`.
    """

    def __init__(self, root: Path, redirect: bool = False):
        self.root = Path(root)
        self.redirect = redirect
        self.require_token: str | None = None
        self.etag_style = "lfs"
        self.honour_range = True
        self.drop_after: dict[str, int] = {}
        self.corrupt: dict[str, bool] = {}
        self.refuse: dict[str, int] = {}
        self.bytes_per_second: float | None = None
        self.requests: list[dict] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add_file(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> Path:
        target = self.root / repo_id / revision / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def revisions(self, repo_id: str) -> list[str]:
        return sorted(p.name for p in (self.root / repo_id).iterdir() if p.is_dir())

    @staticmethod
    def commit_of(repo_id: str, revision: str = "main") -> str:
        """The commit a revision name points at (stable, so tests can pin it)."""
        return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()

    def downloads_of(self, path: str) -> list[dict]:
        """The GET requests for the body of `path` (metadata HEADs left out)."""
        return [r for r in self.requests if r["method"] == "GET" and r["path"].endswith("/" + path)]


def make_shard(examples: list[dict], sample_rate: int = 16000, seconds: float = 0.25, seed: int = 0) -> bytes:
    """A gzip webdataset shard (bytes): per example `<key>.wav` (PCM16 sine + noise) and `<key>.json`."""
    import soundfile as sf
    import webdataset as wds

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    writer = wds.TarWriter(buffer, compress=True)
    for index, meta in enumerate(examples):
        t = np.arange(int(sample_rate * seconds)) / sample_rate
        frequency = float(meta.get("_frequency", 220.0 * (1 + index % 4)))
        wave = 0.3 * np.sin(2 * np.pi * frequency * t) + 0.01 * rng.standard_normal(t.size)
        audio = io.BytesIO()
        sf.write(audio, wave.astype(np.float32), sample_rate, format="WAV", subtype="PCM_16")
        meta = {k: v for k, v in meta.items() if not k.startswith("_")}
        writer.write({"__key__": f"sample{index:05d}", "wav": audio.getvalue(),
                      "json": json.dumps(meta).encode("utf-8")})
    writer.close()
    return buffer.getvalue()
