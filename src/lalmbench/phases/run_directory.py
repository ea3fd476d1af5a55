"""The run directory: claimed and locked for the length of a run, its log, and what it offers a new run.

    <output>/<train config>/<encoder>   (or <encoder>-<hash8> when that holds another identity's run)
        .<encoder>.lock beside it        held by RunClaim while the run lasts (io_utils.DirectoryLock)
        .<encoder>.holder.json           who holds it (process, host, since, identity), while held
        run_identity.json                the training identity and its hash (digest)
        training_complete.json           written when training ends: identity, steps, batch, bad data
        final_weights.pt                 the trained LoRA and projector weights
        COMPLETED                        written last, once the scores are

`plan_training` reads these to decide, on rank 0, whether a new run reuses the finished training of its
identity, resumes it from its newest checkpoint, or trains from the start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import shutil
import sys
import time
from pathlib import Path

from lalmbench.errors import ConfigError, RunInUseError
from lalmbench.io_utils import DirectoryLock, check_writable_dir, remove_stale_temporaries
from lalmbench.train import find_resume_checkpoint

log = logging.getLogger("lalmbench")
COMPLETED = "COMPLETED"
TRAINING_COMPLETE = "training_complete.json"
FINAL_WEIGHTS = "final_weights.pt"


def digest(identity) -> str:
    """The hash that names an identity (training or evaluation): sha256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


FILE_ONLY = "lalmbench_file_only"  # a log record's flag: for log.txt, not the console


def log_stop(exc: BaseException) -> None:
    """Why the run stopped, as the last entry of log.txt (the console, stderr, hears it from whoever
    handles the exception: the CLI prints it, a caller of runner.run gets it raised). An error lalmbench
    names is logged as its message; Ctrl-C as an interruption; anything else with its traceback."""
    from lalmbench.errors import LalmbenchError

    if not log.handlers:  # logging not set up yet (stopped that early): nothing to write, and logging's
        return            # last-resort handler would print it to stderr beside the CLI's own error
    only_file = {FILE_ONLY: True}
    if isinstance(exc, KeyboardInterrupt):
        log.error("run stopped: interrupted (KeyboardInterrupt: Ctrl-C or a stop signal)", extra=only_file)
    elif isinstance(exc, LalmbenchError):
        log.error("run stopped: %s", exc, extra=only_file)
    elif isinstance(exc, SystemExit):
        log.error("run stopped: exit with status %s", exc.code, extra=only_file)
    else:
        log.error("run stopped: %s: %s", type(exc).__name__, exc, extra=only_file,
                  exc_info=(type(exc), exc, exc.__traceback__))


def setup_logging(run_dir: Path | None, is_main: bool) -> None:
    """Rank 0 logs to the console and, once the run directory exists, to its log.txt; what was logged
    before that is kept and written there first. Other ranks stay silent. Records flagged FILE_ONLY
    (log_stop) go to log.txt only."""
    logger = logging.getLogger("lalmbench")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    early: list[logging.LogRecord] = []  # logged before the run directory existed: they go into its log.txt
    for handler in list(logger.handlers):
        if getattr(handler, "_lalmbench", False):
            if isinstance(handler, logging.handlers.BufferingHandler):
                early += handler.buffer
                handler.buffer = []
            logger.removeHandler(handler)
            handler.close()
    if not is_main:
        quiet = logging.NullHandler()  # other ranks stay silent (no lastResort printing of warnings)
        quiet._lalmbench = True
        logger.addHandler(quiet)
        return
    formatter = logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    console.addFilter(lambda record: not getattr(record, FILE_ONLY, False))  # said on stderr by its handler
    console._lalmbench = True
    logger.addHandler(console)
    if run_dir is not None:
        file_handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
        file_handler.setFormatter(formatter)
        file_handler._lalmbench = True
        for record in early:
            file_handler.handle(record)
        logger.addHandler(file_handler)
    else:
        waiting = logging.handlers.BufferingHandler(capacity=100_000)
        waiting._lalmbench = True
        logger.addHandler(waiting)


class RunClaim:
    """The run directory this process works in, locked (io_utils.DirectoryLock) until the run ends.

    The directory is made here, once everything a run needs has loaded; until then a failing run leaves
    nothing behind.

    `take` chooses `<output>/<config>/<encoder>`, or `<encoder>-<hash8>` when that holds another
    identity's run (or another identity's run is working in it). A run of the same identity holding the
    lock stops this one at once (RunInUseError naming the holder). Only rank 0 takes a claim.
    """

    def __init__(self):
        self.run_dir: Path | None = None
        self.lock: DirectoryLock | None = None
        self.created = False  # this run made the directory
        self.training_started = False

    def take(self, base: Path, identity_hash: str, force: bool) -> Path:
        candidates = [base, base.with_name(f"{base.name}-{identity_hash[:8]}")]
        for candidate in candidates:
            existed = candidate.exists()
            lock = DirectoryLock(candidate)
            holder = lock.acquire({"identity": identity_hash})
            if holder is not None:
                who = (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (since "
                       f"{holder.get('since', '?')})")
                if holder.get("identity") == identity_hash:
                    raise RunInUseError(
                        f"{candidate} is in use by a run of the same identity: {who}. Two runs would write the "
                        f"same files; wait for it to finish (this command then reuses its results) or stop it.")
                log.info("%s is in use by a run of another identity (%s); looking further", candidate, who)
                continue
            try:
                claimed = self._claim_locked(candidate, lock, existed, identity_hash, force)
            except BaseException:
                if self.lock is not lock:  # every error path lets go of the lock it took
                    lock.release()
                raise
            if claimed is not None:
                return claimed
            lock.release()
            if candidate == base:
                log.info("%s holds a run with another identity; this run goes to %s", base, candidates[1])
        raise ConfigError(f"{candidates[1]} exists and belongs to another run; move it away or pass --output-dir")

    def _claim_locked(self, candidate: Path, lock: DirectoryLock, existed: bool, identity_hash: str,
                      force: bool) -> Path | None:
        """With `candidate` locked: hold it when it is new, empty or a run of this identity (set aside first
        with `force`); None when it holds another identity's run."""
        if not existed or not any(candidate.iterdir()):
            return self._hold(candidate, lock, created=not existed)
        marker = candidate / "run_identity.json"
        problem = _identity_file_problem(marker)
        if problem is not None and not force:
            from lalmbench.errors import OutputDirError

            raise OutputDirError(
                f"{marker} is corrupt ({problem}): it should record the identity of the run in {candidate}, so it "
                f"cannot be told whether that run is this one. Nothing was changed. Pass --force to set {candidate} "
                f"aside as {candidate.name}.replaced-<time> (nothing is deleted) and start afresh, or move it away.")
        if problem is not None or (marker.is_file() and json.loads(marker.read_text())["hash"] == identity_hash):
            if not force:
                return self._hold(candidate, lock, created=False)
            kept = candidate.with_name(f"{candidate.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            candidate.rename(kept)  # the lock is beside the directory: still held
            log.info("--force: the previous run was moved to %s (nothing deleted)", kept)
            return self._hold(candidate, lock, created=True)
        return None

    def _hold(self, run_dir: Path, lock: DirectoryLock, created: bool) -> Path:
        self.run_dir, self.lock, self.created = run_dir, lock, created
        check_writable_dir(run_dir)
        if not created:  # half-written checkpoints and files of a killed earlier run: never read, now ours
            stale = remove_stale_temporaries(run_dir)
            if stale:
                log.info("removed %d temporary file(s) of a stopped earlier run in %s: %s", len(stale), run_dir,
                         ", ".join(str(path.relative_to(run_dir)) for path in stale[:5]))
        return run_dir

    def discard_if_untrained(self) -> None:
        """After a failure: remove the directory this run made if no training step ran in it (it holds
        nothing to resume, and must not look like a run)."""
        if self.run_dir is not None and self.created and not self.training_started:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            log.info("removed %s: the run stopped before training", self.run_dir)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _identity_file_problem(marker: Path) -> str | None:
    """What is wrong with a run directory's run_identity.json (None when it is absent or sound)."""
    try:
        text = marker.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable: {exc}"
    try:
        recorded = json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}" if text.strip() else "empty"
    if not isinstance(recorded, dict) or not isinstance(recorded.get("hash"), str):
        return "no identity hash in it"
    return None


def plan_training(run_dir: Path, identity_hash: str) -> dict:
    """Rank 0's decision, broadcast to every process: reuse the finished training of this identity,
    resume it from its newest checkpoint, or train from the start."""
    marker = run_dir / TRAINING_COMPLETE
    completed = json.loads(marker.read_text()) if marker.is_file() else {}
    if completed.get("identity") == identity_hash and (run_dir / FINAL_WEIGHTS).is_file():
        return {"action": "reuse", "completed": completed}
    checkpoint = find_resume_checkpoint(run_dir, identity_hash)
    if checkpoint is not None:
        return {"action": "resume", "checkpoint": str(checkpoint)}
    return {"action": "train"}
