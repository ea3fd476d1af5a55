"""Fetch the shards that task definitions name from the Hugging Face hub into the data home.

Glue around `huggingface_hub`: its `snapshot_download` does the transfers (the thread pool, progress bars,
redirects, the token, timeouts, resuming a dropped transfer, per-file locks, atomic placement); this
module decides which files a run needs, pins them to one commit per repo, checks what arrived against the
hub's ETag, retries each kind of failure within its own limit, and turns failures into advice.

Layout: `<data home>/<path in repo>` (`snapshot_download(local_dir=...)`), the layout of the published
system's cache, so an existing cache is used as it is. The hub client keeps a record per file (commit,
ETag, time) under `<data home>/.cache/huggingface/download/`; files without one (a cache filled by the
published system) count as present unless a revision is pinned.

    specs --> files (repo, path, revision) --> local check, no network --> offline? DataError naming the
          files and the `lalmbench download` command
      --> per (repo, revision): one API call gives the commit (and shows at once whether the hub answers)
      --> per (repo, commit): snapshot_download(revision=commit, allow_patterns=the files) --> per file
          sha256 / git sha1 vs the ETag --> a bad file is deleted and fetched once more; a file the
          repo's listing lacks is asked for alone (the hub's 404 names it); a round cut by the network
          is tried again

A dataset's `revision` (YAML `revision:`, a branch, tag or commit) pins its files; a branch or tag is
resolved to its commit whenever the hub can be reached. `data_revisions` reports the commits the files
in the data home came from, for run_summary.json.

Environment: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE=1 (never download; missing files are an error that
names them), HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT (seconds, read by huggingface_hub).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import os
import re
import tarfile
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from lalmbench.config import DatasetSpec
from lalmbench.data.shards import data_home, hub_relative_paths
from lalmbench.errors import ConfigError, DataError
from lalmbench.hub import hub_endpoint, offline_by_environment, offline_reason

log = logging.getLogger(__name__)

DEFAULT_REVISION = "main"
RECORD_DIR = Path(".cache") / "huggingface" / "download"
"""Where hf_hub_download(local_dir=...) keeps its per-file record: commit, ETag, time (three lines)."""
MAX_TRIES = 2
"""Times a file is fetched before a failed content check is reported."""
MAX_NETWORK_TRIES = 3
"""Transfers of one file started before a connection that keeps dropping is reported (a network error)."""
CHUNK_BYTES = 1 << 20
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_commit(revision: str | None) -> bool:
    return bool(revision and _COMMIT.match(revision))


@dataclass(frozen=True)
class RemoteFile:
    """One shard of a hub dataset repo."""

    repo_id: str
    path: str
    """Path inside the repo; also the path below the data home."""
    owner: str = ""
    """Name of the dataset (train_data key or eval name) that asked for it, for messages."""
    revision: str | None = None
    """Branch, tag or commit the dataset pins (None: the repo's main branch, not checked again once here)."""

    def url(self, revision: str | None = None) -> str:
        revision = revision or self.revision or DEFAULT_REVISION
        return f"{hub_endpoint()}/datasets/{self.repo_id}/resolve/{revision}/{self.path}"

    def local_path(self, home: Path) -> Path:
        return home / self.path


@dataclass
class DownloadStats:
    files_requested: int = 0
    files_downloaded: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0
    commits: dict[str, str] = field(default_factory=dict)
    """repo_id@revision -> the commit the files were fetched at."""


def remote_files(specs: list[DatasetSpec], home: str | os.PathLike | None = None) -> list[RemoteFile]:
    """Hub files named by `specs`, in order, each once, each below the data home `home` (ConfigError
    otherwise). Local specs (no repo_id) are skipped."""
    seen: dict[str, RemoteFile] = {}
    for spec in specs:
        if not spec.repo_id:
            continue
        for path in hub_relative_paths(spec, home):
            previous = seen.get(path)
            if previous is None:
                seen[path] = RemoteFile(spec.repo_id, path, spec.name, spec.revision)
            elif (previous.repo_id, previous.revision) != (spec.repo_id, spec.revision):
                raise ConfigError(
                    f"{path!r} is named by {previous.owner} (repo {previous.repo_id}, revision "
                    f"{previous.revision or DEFAULT_REVISION}) and by {spec.name} (repo {spec.repo_id}, revision "
                    f"{spec.revision or DEFAULT_REVISION}); both would be stored at the same place in the data "
                    "home. Use the same repo and revision for both, or give the files distinct paths.")
    return list(seen.values())


# --------------------------------------------------------------------------------------------------
# What is on disk (no network)


@dataclass(frozen=True)
class FileRecord:
    """hf_hub_download's record of one file in the data home."""

    commit: str
    etag: str
    stale: bool
    """The file changed after it was recorded (the client then trusts neither the commit nor the ETag)."""


def read_record(home: Path, path: str) -> FileRecord | None:
    """The record of `path`, read without taking the client's lock (which would create directories)."""
    record = home / RECORD_DIR / f"{path}.metadata"
    try:
        commit, etag, stamp = record.read_text(encoding="utf-8").splitlines()[:3]
        changed = (home / path).stat().st_mtime
        return FileRecord(commit.strip(), etag.strip(), stale=changed - 1 > float(stamp))
    except (OSError, ValueError):
        return None


def _gzip_looks_whole(path: Path, size: int) -> bool:
    """Gzip magic at the start and an 8-byte trailer that can be read (cheap: reads 10 bytes).

    Files reach their final name only when complete, so this guards against foreign or hand-copied
    files, not against our own partial downloads.
    """
    if size < 18:  # 10-byte header + 8-byte trailer
        return False
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return False
        handle.seek(-8, os.SEEK_END)
        return len(handle.read(8)) == 8


def existing_file_problem(home: Path, remote: RemoteFile, commit: str | None = None) -> str | None:
    """None when the local copy can be used; otherwise what is wrong with it.

    `commit`: the commit the file must come from (a pinned commit, or a pinned branch or tag resolved
    online); None accepts any copy that looks whole.
    """
    local = remote.local_path(home)
    try:
        size = local.stat().st_size
    except FileNotFoundError:
        return "missing"
    record = read_record(home, remote.path)
    if record is not None and record.stale:
        return "changed since it was downloaded"
    if local.name.endswith((".gz", ".tgz")):
        try:
            if not _gzip_looks_whole(local, size):
                return "not a complete gzip file"
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
    if commit is not None and (record is None or record.commit != commit):
        came_from = f"commit {record.commit[:12]}" if record is not None else "an unrecorded commit"
        return f"from {came_from}, not the pinned {commit[:12]}"
    return None


_DAMAGED = ("not a complete gzip file", "unreadable")


def _damaged(problems: list[tuple[RemoteFile, str]]) -> frozenset[str]:
    """Paths to fetch even if the hub client's record calls them current. Other problems are left to the
    client: a changed file with a sha256 ETag is hashed and fetched only if it differs (a data home copied
    without its file times is not downloaded again), a file from another commit is compared by ETag."""
    return frozenset(remote.path for remote, problem in problems if problem.startswith(_DAMAGED))


def _pinned_commit(remote: RemoteFile, commits: dict[str, str]) -> str | None:
    if is_commit(remote.revision):
        return remote.revision
    return commits.get(_revision_key(remote)) if remote.revision else None


def _find_problems(files: list[RemoteFile], root: Path, commits: dict[str, str]) -> list[tuple[RemoteFile, str]]:
    out = []
    for remote in files:
        problem = existing_file_problem(root, remote, _pinned_commit(remote, commits))
        if problem is not None:
            out.append((remote, problem))
    return out


def find_missing(specs: list[DatasetSpec], home: str | os.PathLike | None = None) -> list[tuple[RemoteFile, str]]:
    """The hub files of `specs` that are not usable in the data home, with why (no network)."""
    return _find_problems(remote_files(specs, home), data_home(home), {})


def data_revisions(specs: list[DatasetSpec], home: str | os.PathLike | None = None) -> list[dict]:
    """Per (repo, requested revision): the commits its files in the data home were fetched at.

    `unrecorded_files` counts files without the hub client's record (e.g. a cache filled by the published
    system): their commit is unknown.
    """
    root = data_home(home)
    groups: dict[tuple[str, str], list[RemoteFile]] = {}
    for remote in remote_files(specs, root):
        groups.setdefault((remote.repo_id, remote.revision or DEFAULT_REVISION), []).append(remote)
    out = []
    for (repo_id, revision), members in groups.items():
        records = [read_record(root, remote.path) for remote in members]
        commits = sorted({r.commit for r in records if r is not None and not r.stale})
        out.append({"repo_id": repo_id, "revision": revision, "commits": commits, "files": len(members),
                    "unrecorded_files": sum(r is None or r.stale for r in records)})
    return out


# --------------------------------------------------------------------------------------------------
# The hub


def _revision_key(remote: RemoteFile) -> str:
    return f"{remote.repo_id}@{remote.revision or DEFAULT_REVISION}"


def _response_of(exc: BaseException | None):
    """The HTTP answer behind a hub client failure, anywhere in its cause chain (the client wraps a HEAD that
    failed in a LocalEntryNotFoundError); None when the hub gave none."""
    while exc is not None and getattr(exc, "response", None) is None:
        exc = exc.__cause__ or exc.__context__
    return getattr(exc, "response", None)


def _hub_advice(exc: Exception, what: str, repo_id: str, revision: str) -> str:
    """A hub client failure -> what went wrong and what to do."""
    from huggingface_hub import errors

    status = getattr(_response_of(exc), "status_code", None)
    token_set = bool(os.environ.get("HF_TOKEN"))
    if isinstance(exc, errors.OfflineModeIsEnabled):  # the hub client's own words would say "unset HF_HUB_OFFLINE"
        return f"{what}: not asked, because {offline_reason() or 'huggingface_hub is in offline mode'}"
    if isinstance(exc, errors.RevisionNotFoundError):
        todo = (f"revision {revision!r} does not exist in {repo_id}: check `revision:` in the task definition "
                f"(a branch, tag or commit listed at {hub_endpoint()}/datasets/{repo_id}/commits)")
    elif isinstance(exc, errors.GatedRepoError) or status == 403:
        todo = (f"the dataset may be gated: accept its terms at {hub_endpoint()}/datasets/{repo_id} with the "
                "account of your HF_TOKEN" + ("" if token_set else ", and set HF_TOKEN"))
    elif status == 401 or (isinstance(exc, errors.RepositoryNotFoundError) and status != 404):
        todo = ("HF_TOKEN is set but the hub rejected it: check that the token is valid and has read access"
                if token_set else
                "set HF_TOKEN to a Hugging Face access token (https://huggingface.co/settings/tokens)")
    elif isinstance(exc, errors.RepositoryNotFoundError):
        todo = f"no dataset repo {repo_id} at {hub_endpoint()}: check repo_id in the task definition, and HF_ENDPOINT"
    elif isinstance(exc, errors.EntryNotFoundError) and not isinstance(exc, errors.LocalEntryNotFoundError):
        todo = (f"the file does not exist in {repo_id} at revision {revision}: check the shard pattern in the "
                "task definition, and HF_ENDPOINT if you use a mirror")
    elif status is not None:
        todo = "try again later, or with fewer --workers"
    else:  # no HTTP answer: connection refused, timeout, no usable headers
        return (f"{what}: no usable answer from the hub at {hub_endpoint()} ({type(exc).__name__}: {exc}). "
                "Check the network or proxy, or HF_ENDPOINT")
    return f"{what} failed" + (f" with HTTP {status}" if status else "") + f": {todo}"


def resolve_revisions(files: list[RemoteFile]) -> dict[str, str]:
    """repo_id@revision -> commit, one API call each. Fails at once (no retries) when the hub is unreachable."""
    from huggingface_hub import HfApi, constants

    api = HfApi(endpoint=hub_endpoint())
    commits: dict[str, str] = {}
    for remote in files:
        key = _revision_key(remote)
        if key in commits:
            continue
        revision = remote.revision or DEFAULT_REVISION
        try:
            info = api.dataset_info(remote.repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        except Exception as exc:  # one request: every failure is reported with its type and advice
            url = f"{hub_endpoint()}/api/datasets/{remote.repo_id}/revision/{revision}"
            raise DataError(_hub_advice(exc, f"GET {url} (the commit of {remote.repo_id} at {revision})",
                                        remote.repo_id, revision)) from exc
        if not is_commit(info.sha):
            raise DataError(f"{hub_endpoint()} gave no commit for {remote.repo_id} at revision {revision} "
                            f"(got {info.sha!r}); check that HF_ENDPOINT points to a Hugging Face hub or mirror")
        commits[key] = info.sha
    return commits


# --------------------------------------------------------------------------------------------------
# Checking a downloaded file against the ETag


def _file_digest(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    digest = hashlib.new(algorithm, prefix)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _archive_problem(path: Path) -> str | None:
    """Without a hash: the whole file must decompress (gzip CRC and length) and read as a tar."""
    try:
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == b"\x1f\x8b"
        if not is_gzip and path.name.endswith((".gz", ".tgz")):
            return "not a gzip file"
        with (gzip.open(path, "rb") if is_gzip else open(path, "rb")) as stream:
            if path.name.endswith((".tar.gz", ".tgz", ".tar")):
                with tarfile.open(fileobj=stream, mode="r|") as archive:
                    for _ in archive:
                        pass
            while stream.read(CHUNK_BYTES):  # a tar reader stops at the end blocks: drain to check the trailer
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        return f"not a readable archive ({exc})"
    return None


def content_problem(path: Path, etag: str) -> str | None:
    """The hub's ETag is the sha256 of a large (LFS) file, or the git blob sha1 of a small one."""
    if _SHA256.match(etag):
        got = _file_digest(path, "sha256")
        return None if got == etag else f"sha256 {got}, expected {etag}"
    if _COMMIT.match(etag):
        got = _file_digest(path, "sha1", b"blob %d\0" % path.stat().st_size)
        return None if got == etag else f"git sha1 {got}, expected {etag}"
    return _archive_problem(path)  # a mirror's ETag that is no content hash


# --------------------------------------------------------------------------------------------------
# Downloading


def _bar_class(enabled: bool) -> type:
    """huggingface_hub's own bars, drawn on a terminal only (tqdm's `disable=None`): a bar redrawn into a log
    file or a pipe writes every update."""
    from huggingface_hub.utils import tqdm

    class Bar(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": None if enabled else True})

    return Bar


def remove_abandoned_transfers(home: Path, path: str) -> int:
    """Delete the partial files of `path` that stopped processes left in the data home; returns how many.

    Kept by hand: huggingface_hub has no call that does it. It writes each transfer to a file of its own
    (`<name hash>.<etag>.<random>.incomplete` beside the file's record) and deletes it when the transfer
    fails, but a process that is killed (SIGKILL, the out-of-memory killer, a scheduler's SIGTERM) leaves it
    there and no later download reuses it: each kill would leave up to a shard's size behind (measured with
    scripts/fault_injection.py). Done under the client's lock of the file, so a transfer under way in
    another process is never touched; skipped while the lock is held, or if the client's layout changed.
    huggingface_hub 0.x names its partial file `<name hash>.<etag>.incomplete` and resumes it: kept.
    """
    try:
        from filelock import FileLock, Timeout
        from huggingface_hub._local_folder import get_local_download_paths

        paths = get_local_download_paths(home, path)
        prefix = paths.incomplete_path("ETAG").name.removesuffix("ETAG.incomplete")
    except (ImportError, AttributeError, TypeError, ValueError):
        return 0
    removed = 0
    try:
        with FileLock(paths.lock_path, timeout=0, mode=0o664):  # the client's lock of this file, not waited for
            for partial in paths.metadata_path.parent.glob(f"{glob.escape(prefix)}*.*.incomplete"):
                partial.unlink(missing_ok=True)  # <etag>.<random>: one transfer's own file, never resumed
                removed += 1
    except (Timeout, OSError):
        return removed
    if removed:
        log.info("%s: removed %d partial download(s) left by a stopped process", path, removed)
    return removed




def _dropped_connection(exc: BaseException) -> bool:
    """A body cut short by the network (requests' or httpx's words for it), anywhere in the cause chain."""
    while exc is not None:
        if type(exc).__name__ in ("ChunkedEncodingError", "IncompleteRead", "RemoteProtocolError", "ReadError",
                                  "ProtocolError"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _failed_path(exc: BaseException, paths: dict[str, RemoteFile]) -> str | None:
    """The file an HTTP error is about: its URL (on the hub or a CDN that keeps the path) ends with the path."""
    url = urllib.parse.unquote(str(getattr(_response_of(exc), "url", "")))
    return next((path for path in paths if url.endswith("/" + path)), None)


def _fetch_commit(repo_id: str, commit: str, files: list[RemoteFile], home: Path, workers: int,
                  bar: type) -> tuple[int, list[str]]:
    """Fetch `files` of `repo_id` at `commit` (absent from `home`) and check each against its ETag; returns
    the bytes fetched and an error per file given up on.

    Rounds of snapshot_download over the files still to fetch. A file that arrives is checked; one that
    fails the check is deleted and fetched again, MAX_TRIES times in all. A round cut by a dropped
    connection is tried again, MAX_NETWORK_TRIES rounds in a row with nothing arriving at most.
    """
    # Kept by hand around snapshot_download: it skips files its listing lacks and raises the first failure
    # of a batch only; a run needs each file checked, each kind of failure counted, and each file's error.
    from huggingface_hub import hf_hub_download, snapshot_download

    pending = {remote.path: remote for remote in files}
    checks_failed = dict.fromkeys(pending, 0)
    fetched, stalled, errors = 0, 0, []
    while pending:
        cut = None
        try:
            snapshot_download(repo_id, repo_type="dataset", revision=commit, local_dir=home, endpoint=hub_endpoint(),
                              allow_patterns=[glob.escape(path) for path in pending], max_workers=workers,
                              tqdm_class=bar)
            failure = None
        except Exception as exc:  # one failure of the batch; the files in flight ran on, the rest were left
            failure = exc
        failed = _failed_path(failure, pending) if failure is not None else None
        if failure is not None and _dropped_connection(failure):
            cut = failure
        elif failed is not None:  # an HTTP error about one file: that file's answer; the others go on
            remote = pending.pop(failed)
            errors.append(_hub_advice(failure, f"GET {remote.url(commit)}", repo_id,
                                      remote.revision or DEFAULT_REVISION))
        else:  # no file named: each file not here is asked for alone, for the hub's own answer about it
            for path, remote in list(pending.items()):
                if not (home / path).is_file():
                    try:
                        hf_hub_download(repo_id, path, repo_type="dataset", revision=commit, local_dir=home,
                                        endpoint=hub_endpoint())
                    except Exception as exc:  # the hub client's errors, translated into advice
                        if _dropped_connection(exc):
                            cut = exc
                            continue
                        del pending[path]
                        errors.append(_hub_advice(exc, f"GET {remote.url(commit)}", repo_id,
                                                  remote.revision or DEFAULT_REVISION))
        arrived = [path for path in pending if (home / path).is_file()]
        for path in arrived:
            remote = pending.pop(path)
            record = read_record(home, path)
            problem = content_problem(home / path, record.etag if record is not None else "")
            if problem is None:
                fetched += (home / path).stat().st_size
                continue
            (home / path).unlink(missing_ok=True)  # also drops the record: it is stale without its file
            checks_failed[path] += 1
            if checks_failed[path] >= MAX_TRIES:
                errors.append(f"{remote.url(commit)}: downloaded file failed its content check ({problem}) "
                              f"{MAX_TRIES} times; nothing was kept. Try again later, or report the file to the "
                              "dataset's owners")
            else:
                log.warning("%s failed its content check (%s); fetching it again", remote.url(commit), problem)
                pending[path] = remote
        if arrived:
            stalled = 0
        if cut is None:
            continue
        if not arrived:
            stalled += 1
        left = [remote for path, remote in pending.items() if not (home / path).is_file()]
        if stalled >= MAX_NETWORK_TRIES:
            errors += [_dropped_advice(pending.pop(remote.path), commit, stalled, cut) for remote in left]
        else:  # clients before 1.x give up on a cut body at once; their partial file is resumed next round
            log.warning("%s: the connection dropped (%s); fetching %d file(s) again", repo_id, type(cut).__name__,
                        len(left))
    return fetched, errors


def _dropped_advice(remote: RemoteFile, commit: str, times: int, exc: BaseException) -> str:
    """A connection that kept dropping -> the file, the network cause, and what to do."""
    cause = exc
    while cause.__cause__ or cause.__context__:  # the transport's own words, deepest first
        cause = cause.__cause__ or cause.__context__
    detail = f"{type(cause).__name__}: {cause}"
    if type(cause) is not type(exc):
        detail = f"{type(exc).__name__}, from {detail}"
    if len(detail) > 300:
        detail = detail[:300] + " [...]"
    return (f"{remote.url(commit)} ({remote.path} of {remote.repo_id}): the connection kept dropping, {times} "
            f"attempts cut short before the file was complete (last: {detail}). This is the network, not the "
            "file: try again later "
            f"or with fewer --workers; check the network or proxy, or HF_ENDPOINT (now {hub_endpoint()}) if you "
            "use a mirror; to run on the shards already in the data home, set HF_HUB_OFFLINE=1")


def download_files(files: list[RemoteFile], home: str | os.PathLike | None = None, workers: int = 4,
                   progress: bool = True, commits: dict[str, str] | None = None,
                   refetch: frozenset[str] = frozenset()) -> DownloadStats:
    """Fetch `files`, `workers` at a time (huggingface_hub's snapshot_download). `commits` (repo_id@revision
    -> commit) is looked up for the revisions it lacks; paths in `refetch` are deleted and fetched whole even
    if the client's record calls them current."""
    root = data_home(home)
    stats = DownloadStats(files_requested=len(files))
    if not files:
        return stats
    started = time.monotonic()
    commits = dict(commits or {})
    commits.update(resolve_revisions([f for f in files if _revision_key(f) not in commits]))
    stats.commits = {_revision_key(f): commits[_revision_key(f)] for f in files}
    groups: dict[tuple[str, str], list[RemoteFile]] = {}
    for remote in files:
        if remote.path in refetch:
            remote.local_path(root).unlink(missing_ok=True)  # damaged: the client would take it as current
        remove_abandoned_transfers(root, remote.path)
        groups.setdefault((remote.repo_id, commits[_revision_key(remote)]), []).append(remote)
    errors: list[str] = []
    for (repo_id, commit), members in groups.items():
        log.info("fetching %d file(s) of %s at commit %s", len(members), repo_id, commit[:12])
        fetched, failed = _fetch_commit(repo_id, commit, members, root, max(1, workers), _bar_class(progress))
        stats.bytes_downloaded += fetched
        stats.files_downloaded += len(members) - len(failed)
        errors += failed
    stats.seconds = time.monotonic() - started
    if errors:
        shown = "\n  - ".join(dict.fromkeys(errors[:10]))
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(f"{len(errors)} of {len(files)} downloads failed:\n  - {shown}{more}")
    return stats


# --------------------------------------------------------------------------------------------------
# Entry points


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


MISSING_SHOWN = 20
"""Missing files an error lists by name; the rest are counted."""


def _missing_error(missing: list[tuple[RemoteFile, str]], root: Path, why: str, explicit_home: bool,
                   fetch: str = "Fetch them (online) with") -> DataError:
    shown = "\n    ".join(f"{root / r.path} ({problem})" for r, problem in missing[:MISSING_SHOWN])
    more = f"\n    ... and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    return DataError(f"{len(missing)} shard file(s) are not in the data home {root} and {why}:\n    "
                     f"{shown}{more}\n{fetch}: {_download_hint([r for r, _ in missing])}"
                     + (f" --data-home {root}" if explicit_home else ""))


def _offline_missing_error(missing: list[tuple[RemoteFile, str]], root: Path, reason: str,
                           explicit_home: bool) -> DataError:
    """Missing files while this process cannot download: one piece of advice, matching the reason."""
    variable = offline_by_environment()
    if variable:
        return _missing_error(missing, root, f"{reason}, so they cannot be fetched", explicit_home,
                              f"Unset {variable} and fetch them with")
    return _missing_error(missing, root, f"cannot be fetched: {reason}", explicit_home,
                          "Check the network or proxy, or HF_ENDPOINT; once the hub answers, fetch them with")


def _plan(files: list[RemoteFile], root: Path,
          explicit_home: bool = False) -> tuple[list[tuple[RemoteFile, str]], dict[str, str]]:
    """What must be fetched, and the commits of the revisions looked up (online, only when needed).

    Missing files and pinned branches or tags need the hub; a pinned commit or the unpinned default does
    not once its files are here.
    """
    missing = _find_problems(files, root, {})
    named = [f for f in files if f.revision and not is_commit(f.revision)]
    if offline_reason() or not (named or missing):
        return missing, {}
    try:
        commits = resolve_revisions(named + [r for r, _ in missing])
    except DataError as exc:
        if missing:
            raise _missing_error(missing, root, f"cannot be fetched: {exc}", explicit_home,
                                 "Once the hub answers, fetch them with") from exc
        log.warning("%s. Using the files in the data home as they are (their commits are recorded); "
                    "HF_HUB_OFFLINE=1 skips this lookup.", exc)
        return missing, {}
    return _find_problems(files, root, commits), commits


def ensure_downloaded(specs: list[DatasetSpec], home: str | os.PathLike | None = None,
                      allow_download: bool = True, workers: int = 4) -> list[dict]:
    """Make sure every hub shard of `specs` is in the data home; fetch what is missing unless offline.

    Returns `data_revisions(specs, home)`: the commits the files came from. Specs without repo_id are
    local files and are left to `resolve_shards`.
    """
    root = data_home(home)
    files = remote_files(specs, root)
    offline = offline_reason()  # HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, or the hub found unreachable
    if offline or not allow_download:
        missing = _find_problems(files, root, {})
        if missing and offline:
            raise _offline_missing_error(missing, root, offline, home is not None)
        if missing:
            raise _missing_error(missing, root, "downloads are disabled (--no-download)", home is not None)
        return data_revisions(specs, root)
    missing, commits = _plan(files, root, home is not None)
    if missing:
        download_files([r for r, _ in missing], root, workers=workers, commits=commits, refetch=_damaged(missing))
    return data_revisions(specs, root)


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


def download_command(targets: list[str], workers: int = 4, split: str = "both", home: str | None = None) -> int:
    """`lalmbench download SUITE|TASK|YAML...`: fetch every shard they name that is not here yet, into
    `home` (`--data-home`, as `run --data-home`; else the environment's data home)."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    specs = specs_for_targets(targets, split)
    root = data_home(home)
    files = remote_files(specs, root)
    offline = offline_reason()
    if offline:
        missing = _find_problems(files, root, {})
        if missing:
            raise _offline_missing_error(missing, root, offline, home is not None)
        print(f"data home: {root}\n{len(files)} file(s) named, all here")
        return 0
    missing, commits = _plan(files, root, home is not None)
    print(f"data home: {root}")
    print(f"{len(files)} file(s) named, {len(files) - len(missing)} already here, {len(missing)} to fetch")
    if not missing:
        return 0
    stats = download_files([r for r, _ in missing], root, workers=workers, commits=commits,
                           refetch=_damaged(missing))
    rate = stats.bytes_downloaded / stats.seconds / 1e6 if stats.seconds > 0 else 0.0
    print(f"fetched {stats.files_downloaded} file(s), {stats.bytes_downloaded / 1e6:.1f} MB in "
          f"{stats.seconds:.1f} s ({rate:.1f} MB/s)")
    for key, commit in sorted(set(stats.commits.items())):
        print(f"  {key} = commit {commit}")
    return 0
