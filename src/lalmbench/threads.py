"""CPU threads that follow the cores this process may actually use.

torch sizes its thread pool by the machine's logical cores. In a container with a CPU quota, under
`taskset`, or beside another CPU-bound job that is more threads than there are cores to run them, and
OpenMP's spinning barriers then wait for threads that are not scheduled: on a 2-core machine shared with
one busy process the demo fell from 21 to 0.3-2 steps/s. Two measures keep a run near its fair share:

- the thread count is the smaller of the CPU affinity mask and the cgroup CPU quota (v2 `cpu.max`,
  v1 `cpu.cfs_quota_us`), unless `torch_num_threads` says otherwise;
- OpenMP threads sleep instead of spinning when they wait (`OMP_WAIT_POLICY=PASSIVE`, set before torch
  is imported by the command line; a value the user set is kept);
- loader worker processes use one thread each: they decode and resample, and the main process owns
  the matrix work.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _quota(quota: str, period: str) -> float | None:
    try:
        quota_value, period_value = float(quota), float(period)
    except ValueError:
        return None
    if quota_value <= 0 or period_value <= 0:
        return None
    return quota_value / period_value


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup quota allows this process (e.g. 1.5), or None when there is no quota."""
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            fields = v2.read_text().split()
            if len(fields) >= 2 and fields[0] != "max":
                return _quota(fields[0], fields[1])
            return None
        v1_quota, v1_period = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if v1_quota.is_file() and v1_period.is_file():
            return _quota(v1_quota.read_text().strip(), v1_period.read_text().strip())
    except OSError:
        return None
    return None


def usable_cpus(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may run on: affinity mask, capped by the cgroup quota (rounded up), at least 1."""
    cpus = _affinity_cpus()
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def prefer_sleeping_waits() -> None:
    """Make OpenMP threads sleep while waiting; effective only before torch (libgomp) is loaded."""
    os.environ.setdefault(WAIT_POLICY_VARIABLE, "PASSIVE")


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to `requested`, else to the usable cores; return the count."""
    import torch

    threads = requested if requested else usable_cpus()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def single_thread_worker() -> None:
    """Initializer for loader worker processes: one thread each for torch, OpenMP and BLAS."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # a worker that never needs torch
        pass
