"""A tiny stand-in for the Hugging Face hub on 127.0.0.1, for download tests.

Serves `<root>/<repo_id>/<path>` at `/datasets/<repo_id>/resolve/main/<path>` with the headers the hub
sends for LFS files (X-Linked-Size, X-Linked-Etag = quoted sha256, ETag, Accept-Ranges) and honours
`Range: bytes=N-` / `bytes=N-M` (206 + Content-Range, 416 past the end). With `redirect=True` the
resolve URL answers 302 with the X-Linked-* headers and a Location on `/cdn/...` at host `localhost`
(another host name for the same server), like the hub's redirect to its CDN.

Faults, each used once per path: `drop_after[path] = n` sends the full headers then only n body bytes and
closes the connection; `corrupt[path] = True` flips a byte of the body. `require_token` answers 401
without `Authorization: Bearer <token>`. Every request is recorded in `requests`.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _send_status(self, status: int, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _serve(self, head: bool) -> None:
        hub: HubServer = self.server.hub
        raw_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        hub.requests.append({"path": raw_path, "range": self.headers.get("Range"),
                             "authorization": self.headers.get("Authorization"),
                             "host": self.headers.get("Host")})
        cdn = raw_path.startswith("/cdn/")
        if raw_path.startswith("/datasets/") and "/resolve/main/" in raw_path:
            repo_id, rel = raw_path[len("/datasets/"):].split("/resolve/main/", 1)
        elif cdn:
            repo_id, rel = raw_path[len("/cdn/"):].split("/-/", 1)
        else:
            self._send_status(404)
            return
        if hub.require_token and not cdn and self.headers.get("Authorization") != f"Bearer {hub.require_token}":
            self._send_status(401)
            return
        file = hub.root / repo_id / rel
        if not file.is_file():
            self._send_status(404)
            return
        data = file.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        linked = {"X-Linked-Size": str(len(data)), "X-Linked-Etag": f'"{sha}"'} if hub.send_linked else {}
        if hub.redirect and not cdn:
            location = f"http://localhost:{hub.port}/cdn/{urllib.parse.quote(repo_id)}/-/{urllib.parse.quote(rel)}"
            self._send_status(302, {"Location": location, **linked})
            return
        start, end = 0, len(data) - 1
        range_header = self.headers.get("Range")
        status = 200
        if range_header and hub.honour_range:
            first, _, last = range_header.removeprefix("bytes=").partition("-")
            start = int(first)
            end = int(last) if last else len(data) - 1
            if start >= len(data):
                self._send_status(416, {"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
        body = data[start:end + 1]
        if hub.corrupt.pop(rel, False) and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:] if len(body) == 1 else body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if hub.send_etag:
            self.send_header("ETag", f'"{sha}"')
        for name, value in ({} if cdn else linked).items():
            self.send_header(name, value)
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
        for offset in range(0, len(body), 1 << 20):
            self.wfile.write(view[offset:offset + (1 << 20)])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: "HubServer"


class HubServer:
    """Context manager: `with HubServer(root) as hub: hub.endpoint` -> 'http://127.0.0.1:PORT'."""

    def __init__(self, root: Path, redirect: bool = False):
        self.root = Path(root)
        self.redirect = redirect
        self.require_token: str | None = None
        self.send_linked = True
        self.send_etag = True
        self.honour_range = True
        self.drop_after: dict[str, int] = {}
        self.corrupt: dict[str, bool] = {}
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

    def add_file(self, repo_id: str, path: str, data: bytes) -> Path:
        target = self.root / repo_id / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def downloads_of(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/" + path)]


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
