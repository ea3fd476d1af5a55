"""Atomic file writes: a file is either absent, the old version, or the complete new version.

Everything lalmbench writes that a later step reads back (scores, predictions, checkpoints, configs,
downloads) goes through these helpers, so an interrupted write never looks complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lalmbench.errors import OutputDirError


_umask_lock = threading.Lock()
_umask_without_proc: int | None = None  # read once where /proc does not tell it


def current_umask() -> int:
    """The process's file-mode creation mask, for giving files made through mkstemp (0600) the usual
    permissions.

    Read without changing it from the `Umask:` line of /proc/self/status (Linux 4.7 and later). Elsewhere
    the only way is to set a mask and put the old one back, which for an instant applies to every thread's
    new files: done once, at first use (never at import), under a lock, and with the restrictive 077 so that
    a file made in that instant is private rather than world-writable."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    global _umask_without_proc
    with _umask_lock:
        if _umask_without_proc is None:
            _umask_without_proc = os.umask(0o077)
            os.umask(_umask_without_proc)
        return _umask_without_proc


def _explain_os_error(exc: OSError, path: Path) -> OutputDirError:
    if exc.errno == errno.ENOSPC:
        what = "the disk is full"
        todo = "free some space or pass --output-dir on another disk"
    elif exc.errno in (errno.EROFS,):
        what = "the file system is read-only"
        todo = "pass --output-dir pointing to a writable directory"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        what = "permission denied"
        todo = "fix the directory permissions or pass --output-dir pointing to a writable directory"
    else:
        what = exc.strerror or str(exc)
        todo = "check the path and try again"
    return OutputDirError(f"cannot write {path}: {what}. Nothing existing was overwritten; {todo}.")


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path` in one step."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _explain_os_error(exc, path) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            _fsync(tmp_path)  # written by the caller (torch.save, ...): on disk before the rename
            # mkstemp makes 0600 files; outputs get the usual umask permissions
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise _explain_os_error(exc, path) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name, then rename it into place.

    An existing directory of the same name is replaced only after the new one is complete.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise _explain_os_error(exc, path) from exc
    try:
        yield tmp
        for item in tmp.rglob("*"):  # contents on disk before the rename makes them look complete
            if item.is_file():
                _fsync(item)
        os.chmod(tmp, 0o777 & ~current_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)  # the previous version goes back in place
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _explain_os_error(exc, path) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove what atomic_path and atomic_directory were still building in `directory` (or below) when
    their process was killed: `.<name>.<random>.tmp` files and folders, which nothing reads and nothing
    else removes. Call it only while holding the directory's lock (DirectoryLock): a live writer's
    temporaries look the same. Returns what was removed."""
    removed = []
    for path in sorted(Path(directory).rglob(".*.tmp")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)
        else:
            continue  # inside a folder removed just before
        removed.append(path)
    return removed


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove it is writable, with a clear error otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".lalmbench-write-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise _explain_os_error(exc, path) from exc
    return path


class DirectoryLock:
    """An exclusive lock on a directory (a run directory): `.<name>.lock` beside it, locked with the
    `filelock` package (flock on Unix, LockFileEx on Windows), and `.<name>.holder.json`, which names the
    holder (process id, host, start time and a note such as the run identity) while it is held.

    Beside, not inside: the directory may not exist yet (it is made once a run can start), may be moved
    away (--force) while locked, and keeps only what the run wrote. The system releases the lock when the
    holder exits, however it exits, so a killed run never leaves a stale lock; the lock file stays, empty,
    and a killed holder's record stays until the next holder writes its own. The record is a file of its
    own: filelock opens the lock file for itself (its 3.x versions truncate it at every attempt to lock).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory.with_name(f".{self.directory.name}.lock")
        self.holder_path = self.directory.with_name(f".{self.directory.name}.holder.json")
        self._lock = None

    def acquire(self, note: dict | None = None) -> dict | None:
        """Take the lock without waiting. None when taken; when another process (or another DirectoryLock of
        this process) holds it, what the holder wrote ({} if it wrote nothing within a second)."""
        from filelock import FileLock, Timeout

        lock = FileLock(self.path, timeout=0, thread_local=False)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            return self._holder()
        except OSError as exc:
            raise _explain_os_error(exc, self.path) from exc
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  **(note or {})}
        try:
            atomic_write_json(self.holder_path, holder)
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        return None

    def _holder(self, wait_seconds: float = 1.0) -> dict:
        """The holder's record; a holder that has just taken the lock may not have written it yet."""
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                return json.loads(self.holder_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    return {}
                time.sleep(0.05)

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            self.holder_path.unlink(missing_ok=True)  # a reader never takes this holder for the next one
        except OSError:
            pass
        self._lock.release()
        self._lock = None
