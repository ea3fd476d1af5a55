"""Fetch the shards that task definitions name from the Hugging Face hub into the data home.

Only the files the configs name are fetched, each from
`{HF_ENDPOINT}/datasets/{repo_id}/resolve/main/{path}` (no listing API), into `<data home>/<path>`: the
layout `shards.resolve_shards` reads. Flow for one file:

    <path>.incomplete  --(HTTP Range resume, retries)-->  size + sha256 (or gzip/tar) check  --> os.replace
                                                            `-- failed: delete, fetch again (bounded)

The sha256 comes from the hub's `X-Linked-Etag` (LFS files; sent on the redirect to the CDN, which is
followed here by hand so its headers are kept), the size from `X-Linked-Size`/`Content-Length`. A small
record of the verified size and hash goes to `<data home>/.lalmbench-meta/<path>.json`, so a later run
checks an existing file cheaply (size, gzip header) without the network.

Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (sent as a Bearer token to the
hub host only), HF_HUB_OFFLINE=1 (never download; missing files are an error that names them).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import re
import socket
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lalmbench import __version__
from lalmbench.config import DatasetSpec
from lalmbench.data.shards import data_home, hub_relative_paths
from lalmbench.errors import ConfigError, DataError

try:  # POSIX: serialize processes that fetch the same file (e.g. several runs sharing a data home)
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock
    fcntl = None

DEFAULT_ENDPOINT = "https://huggingface.co"
META_DIR = ".lalmbench-meta"
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 5
"""Tries per file: dropped connections resume, server errors back off, bad files are fetched anew."""
MAX_BAD_FILES = 2
"""Times a file may fail verification before we give up on it."""
RETRY_BACKOFF_SECONDS = 1.0
MAX_REDIRECTS = 5
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class RemoteFile:
    """One shard of a hub dataset repo."""

    repo_id: str
    path: str
    """Path inside the repo; also the path below the data home."""
    owner: str = ""
    """Name of the dataset (train_data key or eval name) that asked for it, for messages."""

    def url(self, endpoint: str | None = None) -> str:
        quoted = urllib.parse.quote(self.path)
        return f"{endpoint or hub_endpoint()}/datasets/{self.repo_id}/resolve/main/{quoted}"

    def local_path(self, home: Path) -> Path:
        return home / self.path


@dataclass
class DownloadStats:
    files_requested: int = 0
    files_present: int = 0
    files_downloaded: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def remote_files(specs: list[DatasetSpec]) -> list[RemoteFile]:
    """Hub files named by `specs`, in order, each once. Local specs (no repo_id) are skipped."""
    seen: dict[str, RemoteFile] = {}
    for spec in specs:
        if not spec.repo_id:
            continue
        for path in hub_relative_paths(spec):
            previous = seen.get(path)
            if previous is None:
                seen[path] = RemoteFile(spec.repo_id, path, spec.name)
            elif previous.repo_id != spec.repo_id:
                raise ConfigError(
                    f"{path!r} is named by {previous.owner} (repo {previous.repo_id}) and by {spec.name} "
                    f"(repo {spec.repo_id}); both would be stored at the same place in the data home. "
                    "Give the files distinct paths.")
    return list(seen.values())


# --------------------------------------------------------------------------------------------------
# Cheap checks of files already on disk


def _meta_path(home: Path, path: str) -> Path:
    return home / META_DIR / f"{path}.json"


def _read_meta(home: Path, path: str) -> dict:
    try:
        return json.loads(_meta_path(home, path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_meta(home: Path, path: str, record: dict) -> None:
    from lalmbench.io_utils import atomic_write_json

    atomic_write_json(_meta_path(home, path), record)


def _gzip_looks_whole(path: Path, size: int) -> bool:
    """Gzip magic at the start and an 8-byte trailer that can be read (cheap: reads 10 bytes).

    Files only reach their final name after full verification, so this guards against foreign or
    hand-copied files, not against our own partial downloads (those stay `.incomplete`).
    """
    if size < 18:  # 10-byte header + 8-byte trailer
        return False
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return False
        handle.seek(-8, os.SEEK_END)
        return len(handle.read(8)) == 8


def existing_file_problem(home: Path, remote: RemoteFile) -> str | None:
    """None when the local copy looks complete; otherwise what is wrong with it."""
    local = remote.local_path(home)
    try:
        size = local.stat().st_size
    except FileNotFoundError:
        return "missing" if not Path(f"{local}.incomplete").exists() else "partially downloaded"
    record = _read_meta(home, remote.path)
    if record.get("size") is not None and record["size"] != size:
        return f"size {size} bytes, expected {record['size']}"
    if local.name.endswith((".gz", ".tgz")):
        try:
            if not _gzip_looks_whole(local, size):
                return "not a complete gzip file"
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
    return None


def find_missing(specs: list[DatasetSpec], home: str | os.PathLike | None = None) -> list[tuple[RemoteFile, str]]:
    root = data_home(home)
    out = []
    for remote in remote_files(specs):
        problem = existing_file_problem(root, remote)
        if problem is not None:
            out.append((remote, problem))
    return out


# --------------------------------------------------------------------------------------------------
# HTTP


class _Fatal(DataError):
    """An error retrying cannot fix (not found, too many redirects)."""


_STOPPED = "stopped after another download failed or the user interrupted"


class _AuthError(_Fatal):
    """401/403: every other file would fail the same way, so the other downloads stop too."""


class _Retryable(Exception):
    """A transient failure (dropped connection, 5xx, 429); the file is tried again, resuming."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # follow by hand, to keep the hub's X-Linked-* headers and drop the token off-host


_OPENER = urllib.request.build_opener(_NoRedirects())


def _explain_status(status: int, url: str, repo_id: str) -> str:
    token_set = bool(os.environ.get("HF_TOKEN"))
    if status == 401:
        todo = ("HF_TOKEN is set but the server rejected it: check that the token is valid and has read access"
                if token_set else
                "set HF_TOKEN to a Hugging Face access token (https://huggingface.co/settings/tokens)")
    elif status == 403:
        todo = (f"the dataset may be gated: accept its terms at {hub_endpoint()}/datasets/{repo_id} with the "
                "account of your HF_TOKEN" + ("" if token_set else ", and set HF_TOKEN"))
    elif status == 404:
        todo = ("the file does not exist in the repo: check repo_id and the shard pattern in the task "
                "definition, and HF_ENDPOINT if you use a mirror")
    elif status == 416:
        todo = "the server refused the resume range; delete the .incomplete file and retry"
    else:
        todo = "try again later, or with fewer --workers"
    return f"GET {url} failed with HTTP {status}: {todo}"


def _open(url: str, offset: int, repo_id: str) -> tuple[http.client.HTTPResponse, dict]:
    """GET with Range from `offset`, following redirects by hand. Returns the response and hub headers."""
    token = os.environ.get("HF_TOKEN")
    hub_host = urllib.parse.urlsplit(hub_endpoint()).netloc
    linked: dict[str, str] = {}
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        request = urllib.request.Request(current, headers={"User-Agent": f"lalmbench/{__version__}"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        if token and urllib.parse.urlsplit(current).netloc == hub_host:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            response = _OPENER.open(request, timeout=TIMEOUT_SECONDS)
        except urllib.error.HTTPError as exc:
            for name in ("X-Linked-Size", "X-Linked-Etag"):
                if exc.headers.get(name) and name not in linked:
                    linked[name] = exc.headers[name]
            if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                current = urllib.parse.urljoin(current, exc.headers["Location"])
                exc.close()
                continue
            exc.close()
            if exc.code in (429, 500, 502, 503, 504):
                raise _Retryable(_explain_status(exc.code, current, "")) from exc
            if exc.code == 416:
                raise _Retryable(_explain_status(exc.code, current, "")) from exc
            error = _AuthError if exc.code in (401, 403) else _Fatal
            raise error(_explain_status(exc.code, current, repo_id)) from exc
        for name in ("X-Linked-Size", "X-Linked-Etag"):
            if response.headers.get(name) and name not in linked:
                linked[name] = response.headers[name]
        linked.setdefault("ETag", response.headers.get("ETag") or "")
        return response, linked
    raise _Fatal(f"GET {url}: more than {MAX_REDIRECTS} redirects; check HF_ENDPOINT")


def _sha256_from_etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if _SHA256.match(value) else None


def _content_verifies(path: Path) -> str | None:
    """Without a hash: the whole file must decompress (gzip CRC and length) and read as a tar.

    One pass: the tar is read from the decompressed stream, then the rest of the stream is drained so
    that the gzip trailer is checked too (a tar reader alone stops at the end-of-archive blocks).
    """
    name = path.name.removesuffix(".incomplete")
    try:
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == b"\x1f\x8b"
        if not is_gzip and name.endswith((".gz", ".tgz")):
            return "not a gzip file"
        with (gzip.open(path, "rb") if is_gzip else open(path, "rb")) as stream:
            if name.endswith((".tar.gz", ".tgz", ".tar")):
                with tarfile.open(fileobj=stream, mode="r|") as archive:
                    for _ in archive:
                        pass
            while stream.read(CHUNK_BYTES):
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        return f"not a readable archive ({exc})"
    return None


# --------------------------------------------------------------------------------------------------
# One file


class _Progress:
    """One tqdm bar (bytes, rate, ETA) over all files of this run.

    The bar counts bytes fetched by this process. Its total is the sum of the sizes known so far,
    less what earlier runs had already fetched of resumed files, plus an estimate for files whose size
    is not known yet (their count times the average known size), so the ETA is sensible early on.
    """

    def __init__(self, files: int, enabled: bool = True):
        from tqdm import tqdm

        self._lock = threading.Lock()
        self._remaining_size: dict[str, int] = {}  # path -> size minus bytes fetched by earlier runs
        self._carried: dict[str, int] = {}  # path -> bytes on disk from earlier runs
        self._shown: dict[str, int] = {}  # path -> bytes counted in the bar
        self._files = files
        self._done = 0
        self.bar = tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc="download",
                        disable=not enabled, dynamic_ncols=True)

    def begin(self, path: str, offset: int, size: int | None) -> None:
        """A transfer of `path` starts at byte `offset` of a file of `size` bytes (None: unknown)."""
        with self._lock:
            if path not in self._shown:
                self._carried[path], self._shown[path] = offset, 0
            lost = self._carried[path] + self._shown[path] - offset
            if lost > 0:  # restarted lower than before (bad file deleted, server ignored Range)
                from_bar = min(lost, self._shown[path])
                self._shown[path] -= from_bar
                self._carried[path] -= lost - from_bar
                self.bar.update(-from_bar)
            if size is not None:
                self._remaining_size[path] = size - self._carried[path]
                known = self._remaining_size.values()
                unknown = self._files - len(self._remaining_size)
                self.bar.total = int(sum(known) + sum(known) / len(self._remaining_size) * unknown)
                self.bar.refresh()

    def update(self, path: str, nbytes: int) -> None:
        with self._lock:
            self._shown[path] = self._shown.get(path, 0) + nbytes
            self.bar.update(nbytes)

    def file_done(self) -> None:
        with self._lock:
            self._done += 1
            self.bar.set_postfix_str(f"{self._done}/{self._files} files", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _fetch_one(remote: RemoteFile, home: Path, progress: _Progress, stop: threading.Event) -> int:
    """Download, verify and move one file into place. Returns the bytes transferred."""
    dest = remote.local_path(home)
    part = Path(f"{dest}.incomplete")
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = remote.url()
    transferred = 0
    bad_files = 0
    last_error = ""
    lock_path = home / META_DIR / f"{remote.path}.lock"  # kept: unlinking a lock file races with waiters
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process fetching the same file: wait for it
        if dest.exists() and _read_meta(home, remote.path) and existing_file_problem(home, remote) is None:
            progress.file_done()  # it fetched the file while we waited
            return 0
        for attempt in range(MAX_ATTEMPTS):
            if stop.is_set():
                raise _Fatal(_STOPPED)
            if attempt:
                time.sleep(min(RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1), 30.0))
            try:
                result = _transfer(url, part, remote, progress, stop)
            except _Retryable as exc:
                last_error = str(exc)
                continue
            transferred += result.pop("transferred")
            problem = _verify(part, result)
            if problem is None:
                os.replace(part, dest)
                _write_meta(home, remote.path, {"repo_id": remote.repo_id, "size": result["size"],
                                                "sha256": result["sha256"], "url": url})
                progress.file_done()
                return transferred
            bad_files += 1
            last_error = f"{url}: downloaded file failed verification ({problem})"
            part.unlink(missing_ok=True)
            if bad_files >= MAX_BAD_FILES:
                break
    raise DataError(f"{last_error}. Gave up after {attempt + 1} tries; run the same command again to resume"
                    + (" (the partial file is kept)" if part.exists() else ""))


def _transfer(url: str, part: Path, remote: RemoteFile, progress: _Progress, stop: threading.Event) -> dict:
    """One HTTP attempt: append to `part` from its current size. Raises _Retryable on transient failures."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response, linked = _open(url, offset, remote.repo_id)
    except _Retryable:
        if offset:  # e.g. 416 for a part file longer than the remote file: start over
            part.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Retryable(f"cannot reach {url}: {reason}. Check the network or proxy, or HF_ENDPOINT") from exc
    with response:
        if response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
            if not match or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"{url}: server answered range {content_range!r} for bytes={offset}-")
            total = int(match.group(3)) if match.group(3) != "*" else None
            mode = "ab"
        else:  # 200: the whole file (the server ignored Range)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            offset, mode = 0, "wb"
        linked_size = linked.get("X-Linked-Size", "")
        if linked_size.isdigit():
            total = int(linked_size) if total is None else total
            if int(linked_size) != total:
                part.unlink(missing_ok=True)
                raise _Retryable(f"{url}: size {total} disagrees with X-Linked-Size {linked_size}")
        progress.begin(remote.path, offset, total)
        expected_sha = _sha256_from_etag(linked.get("X-Linked-Etag")) or _sha256_from_etag(linked.get("ETag"))
        hasher = hashlib.sha256() if expected_sha else None
        if hasher is not None and offset:
            with open(part, "rb") as previous:
                for block in iter(lambda: previous.read(CHUNK_BYTES), b""):
                    hasher.update(block)
        received = 0
        try:
            with open(part, mode) as out:
                while True:
                    block = response.read(CHUNK_BYTES)
                    if not block:
                        break
                    if stop.is_set():  # keep what we have: the next run resumes from here
                        raise _Fatal(_STOPPED)
                    out.write(block)
                    received += len(block)
                    if hasher is not None:
                        hasher.update(block)
                    progress.update(remote.path, len(block))
                out.flush()
                os.fsync(out.fileno())
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError, OSError) as exc:
            raise _Retryable(f"{url}: connection lost after {offset + received} bytes ({exc}); resuming") from exc
    size = offset + received
    if total is not None and size < total:
        raise _Retryable(f"{url}: connection closed after {size} of {total} bytes; resuming")
    return {"transferred": received, "size": size, "expected_size": total, "expected_sha256": expected_sha,
            "sha256": hasher.hexdigest() if hasher is not None else None}


def _verify(part: Path, result: dict) -> str | None:
    if result["expected_size"] is not None and result["size"] != result["expected_size"]:
        return f"size {result['size']} bytes, expected {result['expected_size']}"
    if result["expected_sha256"] is not None:
        if result["sha256"] != result["expected_sha256"]:
            return f"sha256 {result['sha256']}, expected {result['expected_sha256']}"
        return None
    return _content_verifies(part)


# --------------------------------------------------------------------------------------------------
# Entry points


def download_files(files: list[RemoteFile], home: str | os.PathLike | None = None, workers: int = 4,
                   progress: bool = True) -> DownloadStats:
    """Fetch `files` (already known to be missing or damaged) in parallel under one progress bar."""
    root = data_home(home)
    stats = DownloadStats(files_requested=len(files))
    if not files:
        return stats
    started = time.monotonic()
    stop = threading.Event()
    bar = _Progress(len(files), enabled=progress)
    errors: list[str] = []

    def task(remote: RemoteFile) -> int:
        try:
            return _fetch_one(remote, root, bar, stop)
        except _AuthError:
            stop.set()
            raise

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="lalmbench-download")
    try:
        futures = [pool.submit(task, remote) for remote in files]
        for future in futures:
            try:
                stats.bytes_downloaded += future.result()
                stats.files_downloaded += 1
            except DataError as exc:
                if _STOPPED not in str(exc):
                    errors.append(str(exc))
    except BaseException:  # Ctrl-C: stop the workers at their next chunk; partial files stay for resuming
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
    stats.seconds = time.monotonic() - started
    stats.failures = errors
    if errors:
        shown = "\n  - ".join(errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(f"{len(errors)} of {len(files)} downloads failed:\n  - {shown}{more}")
    return stats


def _download_hint(missing: list[RemoteFile]) -> str:
    """The `lalmbench download ...` command that fetches `missing` (catalog names where possible)."""
    from lalmbench.tasks.catalog import load_catalog

    catalog = load_catalog()
    names: dict[str, None] = {}
    unknown: dict[str, None] = {}
    for remote in missing:
        info = catalog.by_train_name(remote.owner) or catalog.by_eval_name(remote.owner)
        if info is not None:
            names.setdefault(info.name, None)
        else:
            unknown.setdefault(remote.owner or remote.repo_id, None)
    if unknown:
        return ("lalmbench download " + " ".join(list(names) + ["<your train/eval YAML>"])
                + f"  (datasets {', '.join(unknown)} are not built in: pass the YAML file that defines them)")
    return "lalmbench download " + " ".join(names)


def ensure_downloaded(specs: list[DatasetSpec], home: str | os.PathLike | None = None,
                      allow_download: bool = True, workers: int = 4) -> None:
    """Make sure every hub shard of `specs` is in the data home; fetch what is missing unless offline.

    Specs without repo_id are local files and are left to `resolve_shards`.
    """
    root = data_home(home)
    missing = find_missing(specs, root)
    if not missing:
        return
    if is_offline() or not allow_download:
        why = "HF_HUB_OFFLINE is set" if is_offline() else "downloads are disabled (--no-download)"
        shown = "\n    ".join(f"{root / r.path} ({problem})" for r, problem in missing[:20])
        more = f"\n    ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise DataError(f"{len(missing)} shard file(s) are not in the data home {root} and {why}:\n    "
                        f"{shown}{more}\nFetch them (online) with: {_download_hint([r for r, _ in missing])}"
                        + ("" if home is None else f" (with LALMBENCH_DATA_HOME={root})"))
    download_files([r for r, _ in missing], root, workers=workers)


def specs_for_targets(targets: list[str], split: str = "both") -> list[DatasetSpec]:
    """Suite/task names or YAML files -> the DatasetSpecs of their train and/or test shards."""
    from lalmbench.config import eval_configs_from_mapping, load_eval_configs, load_train_config
    from lalmbench.tasks.catalog import load_catalog

    if split not in ("train", "test", "both"):
        raise ConfigError(f"split must be train, test or both, got {split!r}")
    catalog = load_catalog()
    specs: list[DatasetSpec] = []
    for target in targets:
        path = Path(target)
        if target.endswith((".yaml", ".yml")) and path.is_file():
            import yaml

            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if isinstance(raw, dict) and "train_data" in raw:
                specs += list(load_train_config(str(path)).train_data.values()) if split != "test" else []
            elif isinstance(raw, dict):
                specs += [t.data for t in eval_configs_from_mapping(raw, str(path))] if split != "train" else []
            continue
        resolved = catalog.resolve(target)
        if split in ("train", "both"):
            specs += list(load_train_config(resolved.train_config).train_data.values())
        if split in ("test", "both"):
            specs += [t.data for t in load_eval_configs(resolved.eval_config)]
    return specs


def download_command(targets: list[str], workers: int = 4, split: str = "both") -> int:
    """`lalmbench download SUITE|TASK|YAML...`: fetch every shard they name that is not here yet."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    specs = specs_for_targets(targets, split)
    root = data_home()
    files = remote_files(specs)
    missing = find_missing(specs, root)
    print(f"data home: {root}")
    print(f"{len(files)} file(s) named, {len(files) - len(missing)} already here, {len(missing)} to fetch")
    if not missing:
        return 0
    if is_offline():
        raise DataError(f"HF_HUB_OFFLINE is set, so the {len(missing)} missing file(s) cannot be fetched; "
                        "unset it and run the command again")
    stats = download_files([r for r, _ in missing], root, workers=workers)
    rate = stats.bytes_downloaded / stats.seconds / 1e6 if stats.seconds > 0 else 0.0
    print(f"fetched {stats.files_downloaded} file(s), {stats.bytes_downloaded / 1e6:.1f} MB in "
          f"{stats.seconds:.1f} s ({rate:.1f} MB/s)")
    return 0
