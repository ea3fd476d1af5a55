"""Process-group facts for torchrun / accelerate launches; a plain run is rank 0 of 1.

torchrun and `accelerate launch` both export RANK, WORLD_SIZE and LOCAL_RANK; when WORLD_SIZE > 1
the default process group is created (NCCL on GPUs, gloo on CPUs). Rank 0 alone writes files and logs;
the other ranks also silence Python warnings and the transformers logger, which would repeat rank 0's.

One failing process stops them all (`FailureWatch`). An exception on one process would otherwise leave
the others waiting in their next collective until its timeout: NCCL never notices that a peer has
gone, and on several nodes no launcher kills the other nodes' processes. So every process of a run
watches the launcher's rendezvous store, which needs no collective: a process whose run raises writes
its rank and message there first, and the others print that message and exit (status 3) within a few
seconds, wherever they are waiting.
Collectives still time out after LALMBENCH_DIST_TIMEOUT_MINUTES (default 30), the last resort for a
process that hangs without raising. The wait for rank 0's downloads (`wait_for_main`) has no time limit
while rank 0 lives: rank 0's watch thread counts a heartbeat in the store, and the others stop once it has
been silent for LALMBENCH_MAIN_SILENCE_SECONDS (default 60), or the store is gone, as when rank 0 is
killed (a killed process reports nothing).
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from lalmbench.errors import AnotherProcessFailed

log = logging.getLogger("lalmbench")
T = TypeVar("T")


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_hint: str | None = None) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_hint != "cpu"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=_timeout())
    if rank != 0:
        _quiet_third_party()
    info = DistInfo(rank=rank, world=world, local_rank=local_rank)
    FailureWatch.start(info)
    return info


def _timeout() -> timedelta:
    minutes = os.environ.get("LALMBENCH_DIST_TIMEOUT_MINUTES", "30")
    try:
        return timedelta(minutes=float(minutes))
    except ValueError:
        from lalmbench.errors import ConfigError

        raise ConfigError(f"LALMBENCH_DIST_TIMEOUT_MINUTES must be a number of minutes, got {minutes!r}") from None


def _main_silence_seconds() -> float:
    value = os.environ.get("LALMBENCH_MAIN_SILENCE_SECONDS", str(MAIN_SILENCE_SECONDS))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        from lalmbench.errors import ConfigError

        raise ConfigError(f"LALMBENCH_MAIN_SILENCE_SECONDS must be a positive number of seconds, got {value!r}")
    return seconds


def _quiet_third_party() -> None:
    warnings.simplefilter("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# The four collectives below stay: each is torch's own call, made a no-op for a plain run (world 1, no process
# group, where torch's calls raise); calling torch directly would repeat that guard at 14 call sites, and
# accelerate's versions need its PartialState (which makes the process group its own way) and the optional extra.
def barrier(info: DistInfo) -> None:
    # kept: dist.barrier() with the plain-run no-op (above)
    if info.enabled:
        dist.barrier()


def all_sum(info: DistInfo, value: float, device) -> float:
    # kept: dist.all_reduce takes a tensor on the backend's device (CUDA for NCCL); callers pass a float
    if not info.enabled:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def gather_objects(info: DistInfo, obj) -> list:
    # kept: dist.all_gather_object with the plain-run no-op and the output list it fills
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj):
    # kept: dist.broadcast_object_list with the plain-run no-op and the one-item list it goes through
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_main(info: DistInfo) -> None:
    """Wait, without a time limit while rank 0 lives, for work that rank 0 alone does and that may take hours
    (downloads).

    A collective would time out after LALMBENCH_DIST_TIMEOUT_MINUTES; this wait ends when rank 0 is done,
    when any process fails (`FailureWatch`), and with AnotherProcessFailed when rank 0 has given no sign of
    life for LALMBENCH_MAIN_SILENCE_SECONDS or the rendezvous store has gone (rank 0 killed)."""
    if not info.enabled:
        return
    watch = FailureWatch.active
    if watch is None:  # no store to wait through: the collective, with its timeout
        barrier(info)
        return
    watch.wait_for_main()


# -- one failing process stops them all --------------------------------------------------------------------
PEER_FAILED_EXIT_STATUS = 3  # this process stopped because another one failed (2: lalmbench's own errors)
POLL_SECONDS = 0.5  # how often each process looks for another's failure
ACK_SECONDS = 5.0  # how long a failing process waits for the others to have read its report
LINGER_SECONDS = 2.0  # a stopping process lets the failing one leave first: the launcher names the right culprit
EXIT_GRACE_SECONDS = 10.0  # a failing process still alive this long after its report ends itself
CLOSE_SECONDS = 10.0  # at the end of a good run, how long rank 0 waits for the others to stop watching
STORE_TIMEOUT = timedelta(seconds=30)
MAIN_SILENCE_SECONDS = 60.0  # default of LALMBENCH_MAIN_SILENCE_SECONDS: rank 0 silent this long is taken for gone
REPORT_CHARS = 4000


def _failure_summary(rank: int, error: BaseException) -> dict:
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    text = f"{type(error).__name__}: {error}"
    if len(text) > REPORT_CHARS:
        text = text[:REPORT_CHARS] + " [...]"
    return {"rank": rank, "host": socket.gethostname(), "error": text, "where": where}


def _tell_launcher(error: BaseException) -> None:
    """torchrun's error file (TORCHELASTIC_ERROR_FILE): its summary then shows the message, and names as
    the root cause the process whose file has the earliest time; without torchrun, nothing."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        get_error_handler().record_exception(error)


class FailureWatch:
    """Stops every process of a run when one of them fails (module docstring).

    Started by `init_distributed`, ended by `stops_every_process_on_failure` around the run. A thread
    polls the launcher's rendezvous store (MASTER_ADDR:MASTER_PORT, a connection of its own) for a
    failure report. A process whose run raises writes its report there (the first report wins), waits
    until the others have read it, and goes on raising; a process that reads another's report says which
    process failed and why, ends its worker processes and exits with status 3. Keys are new for each run
    (a torchrun restart, or each run of `--seeds` in one process).
    """

    active: "FailureWatch | None" = None
    _runs = 0  # runs started by this process; every process counts alike, so their keys agree

    def __init__(self, info: DistInfo, stores: tuple, prefix: str):
        self.rank, self.world = info.rank, info.world
        self._store, self._poll_store = stores  # main thread's, watch thread's
        self._failure_key, self._ack_key = f"{prefix}/failure", f"{prefix}/read"
        self._closed_key, self._main_key = f"{prefix}/closed", f"{prefix}/main-done"
        self._alive_key = f"{prefix}/main-alive"  # rank 0's heartbeat: a counter its watch thread raises
        self._main_waits = 0
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._handled = False  # a failure (own or another's) is being dealt with
        self._reported = False  # this process's own failure is in the store
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._watch, name="lalmbench-failure-watch", daemon=True)

    @classmethod
    def start(cls, info: DistInfo) -> None:
        if not info.enabled or cls.active is not None:
            return
        address, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not address or not port:
            log.warning("MASTER_ADDR/MASTER_PORT are not set (the process group was made another way): a failure on "
                        "one process leaves the others waiting until the collective timeout")
            return
        try:
            stores = tuple(dist.TCPStore(address, int(port), is_master=False, timeout=STORE_TIMEOUT,
                                         wait_for_workers=False) for _ in range(2))
        except Exception as error:  # noqa: BLE001 - a run without the watch is still a run
            log.warning("cannot reach the rendezvous store at %s:%s (%s): a failure on one process leaves the others "
                        "waiting until the collective timeout", address, port, error)
            return
        cls._runs += 1
        prefix = "/".join(["lalmbench", os.environ.get("TORCHELASTIC_RUN_ID", "job"),
                           os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"), str(cls._runs)])
        cls.active = cls(info, stores, prefix)
        cls.active._thread.start()

    # -- the watch thread --------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._closing.wait(POLL_SECONDS):
            if self._reported:
                if time.monotonic() > self._deadline:
                    self._say(f"process {self.rank} is still running {EXIT_GRACE_SECONDS:g} s after its failure; "
                              "ending it")
                    self._exit(1)
                continue
            try:
                if self.rank == 0:
                    self._poll_store.add(self._alive_key, 1)
                failed = self._poll_store.check([self._failure_key])
            except Exception as error:  # noqa: BLE001 - the store's host has gone: nothing more to watch
                if not self._closing.is_set():
                    log.warning("process %d lost the rendezvous store (%s); a failure of another process can no longer "
                                "stop this one", self.rank, error)
                return
            if failed and self._claim():
                message = self._read_report(self._poll_store)
                self._exit(PEER_FAILED_EXIT_STATUS, linger=True, reason=message)

    def _claim(self) -> bool:
        """True for the one thread that deals with the (first) failure."""
        with self._lock:
            if self._handled:
                return False
            self._handled = True
            return True

    def _read_report(self, store) -> str:
        report = json.loads(store.get(self._failure_key))
        store.add(self._ack_key, 1)
        host = "" if report["host"] == socket.gethostname() else f" on {report['host']}"
        where = f" (at {report['where']})" if report["where"] else ""
        message = f"process {report['rank']}{host} failed: {report['error']}{where}"
        self._say(f"{message}; stopping process {self.rank} of {self.world}")
        return message

    def _say(self, text: str) -> None:
        if self.rank == 0:  # rank 0's log reaches the console and log.txt
            log.error(text)
            for handler in log.handlers:
                handler.flush()
        else:
            print(f"lalmbench: {text}", file=sys.stderr, flush=True)

    def _exit(self, status: int, linger: bool = False, reason: str = "") -> None:
        if linger:
            time.sleep(LINGER_SECONDS)
        if reason:
            try:
                raise AnotherProcessFailed(reason)
            except AnotherProcessFailed as stopped:
                _tell_launcher(stopped)  # written after the failed process's own file
            except Exception:  # noqa: BLE001 - exiting matters more
                pass
        for child in multiprocessing.active_children():  # loader workers would outlive os._exit
            child.terminate()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # the main thread may be inside a collective that nothing can interrupt

    # -- the main thread ---------------------------------------------------------------------------------
    def fail(self, error: BaseException) -> None:
        """Report this process's failure to the others and wait until they have read it."""
        if not self._claim():  # another process failed first; the watch thread is stopping this one
            self._thread.join()
            self._exit(PEER_FAILED_EXIT_STATUS)
        report = json.dumps(_failure_summary(self.rank, error))
        try:
            _tell_launcher(error)
            first = self._store.compare_set(self._failure_key, "", report).decode()
            if first != report:  # another process failed at the same time and reported first
                self._read_report(self._store)
            else:
                waited = time.monotonic() + ACK_SECONDS
                while self._store.add(self._ack_key, 0) < self.world - 1 and time.monotonic() < waited:
                    time.sleep(0.05)
        except Exception as store_error:  # noqa: BLE001 - the error itself must still reach the user
            log.warning("process %d could not report its failure to the others (%s)", self.rank, store_error)
        self._deadline = time.monotonic() + EXIT_GRACE_SECONDS
        self._reported = True

    def wait_for_main(self) -> None:
        self._main_waits += 1
        key = f"{self._main_key}/{self._main_waits}"
        if self.rank == 0:
            self._store.set(key, "done")
            return
        silence = _main_silence_seconds()
        beats, heard = -1, time.monotonic()
        while True:
            try:
                if self._store.check([key]):
                    return
                now_beats = self._store.add(self._alive_key, 0)
            except Exception as error:  # noqa: BLE001 - any store failure means the same here
                raise AnotherProcessFailed(
                    f"process {self.rank} lost the rendezvous store while waiting for process 0 to finish what it "
                    f"alone does (downloads): {type(error).__name__}: {error}. Process 0, or the launcher that "
                    "holds the store, has probably been stopped; see its output") from None
            if now_beats != beats:
                beats, heard = now_beats, time.monotonic()
            elif time.monotonic() - heard > silence:
                raise AnotherProcessFailed(
                    f"process 0 has given no sign of life for {silence:g} s while process {self.rank} waits for it "
                    "to finish what it alone does (downloads): it has probably been killed (out of memory, a job "
                    "scheduler, a signal); see its output. LALMBENCH_MAIN_SILENCE_SECONDS sets how long a silent "
                    f"process 0 is waited for (now {silence:g})")
            time.sleep(0.2)

    def close(self) -> None:
        """The run ended well on this process: stop watching. Rank 0 waits (briefly) until every process has
        stopped watching, because when rank 0 hosts the store (launches without torchrun) its exit would
        look like a lost store to a process still polling."""
        self._closing.set()
        self._thread.join()
        try:
            self._store.add(self._closed_key, 1)
            waited = time.monotonic() + CLOSE_SECONDS
            while self.rank == 0 and self._store.add(self._closed_key, 0) < self.world and time.monotonic() < waited:
                time.sleep(0.02)
        except Exception:  # noqa: BLE001 - the run is over; nothing depends on this
            pass
        FailureWatch.active = None


def stops_every_process_on_failure(function: Callable[..., T]) -> Callable[..., T]:
    """For the function each launched process runs (the runner's run): when it raises on one process,
    every process stops within seconds, naming that process and its error (`FailureWatch`, started by
    `init_distributed` inside it); when it returns, nothing is left watching."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except BaseException as error:
            watch = FailureWatch.active
            if watch is not None and not (isinstance(error, SystemExit) and not error.code):
                watch.fail(error)
            raise
        if FailureWatch.active is not None:
            FailureWatch.active.close()
        return result

    return wrapper
