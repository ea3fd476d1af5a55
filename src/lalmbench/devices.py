"""Devices: which this process can use, where a module lives, and how much memory a block takes on one.

torch reports a missing device only when the first tensor moves there (for a CPU-only build an
AssertionError deep in `torch.cuda`), after the encoder, the data and the decoder have loaded. Here the
name is checked against the torch build and the machine once, at the start, with an error that says
what to do. `module_device` and `PeakMemory` are shared by the encoder check, the feature cache and the
speed benchmark.
"""

from __future__ import annotations

import itertools
import sys
import threading

import psutil
import torch

from lalmbench.errors import ConfigError


def device_problem(name: str) -> str | None:
    """Why `name` (cpu, cuda, cuda:N, mps) cannot be used here, or None when it can."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        return f"{name!r} is not a device name torch knows ({exc})"
    if device.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            return (f"this torch build ({torch.__version__}) has no CUDA support; to use a GPU install a CUDA "
                    "build of torch (`make demo TORCH=torch`, or `pip install torch` from the index of your CUDA "
                    "version)")
        count = torch.cuda.device_count()
        if count == 0:
            return "torch has CUDA support but finds no GPU (check the driver and CUDA_VISIBLE_DEVICES)"
        if device.index is not None and device.index >= count:
            return f"this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1})"
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return "MPS (Apple GPU) is not available in this torch build or on this machine"
    return None


def require_device(name: str, option: str = "--device") -> torch.device:
    """`name` as a torch.device; a ConfigError naming the option, the value and what to do when it is unusable."""
    problem = device_problem(name)
    if problem is not None:
        raise ConfigError(f"device {name!r} is not available: {problem}. Run with {option} cpu (or leave "
                          f"{option} unset: a GPU is used when there is one)")
    return torch.device(name)


def module_device(module: torch.nn.Module, default: torch.device | None = torch.device("cpu")) -> torch.device | None:
    """The device of `module`'s first parameter or buffer (where the official checker puts its input);
    `default` for a module that holds no tensor."""
    return next((t.device for t in itertools.chain(module.parameters(), module.buffers())), default)


def _lifetime_peak_rss() -> int:
    """The process's largest RSS so far, in bytes (0 where getrusage does not exist)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """Memory in use during a block on `device`: `start`, `peak` and `increase` (peak - start), in bytes.

    CUDA: the allocator's count and peak. CPU: torch's allocations bypass tracemalloc, so the measure is
    the process RSS, sampled every `interval` seconds, plus getrusage's lifetime peak when it rose during
    the block (a spike the sampler missed).
    """

    # hand-written sampler: psutil reads the RSS but keeps no peak on Linux; getrusage keeps the lifetime's only
    def __init__(self, device: torch.device | str, interval: float = 0.01):
        self.device, self.interval = torch.device(device), interval
        self.start = self.peak = self.increase = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = self.peak = torch.cuda.memory_allocated(self.device)
            return self
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._lifetime_start = _lifetime_peak_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._process.memory_info().rss)
            lifetime = _lifetime_peak_rss()
            if lifetime > self._lifetime_start:  # the process set a new peak inside the block
                self.peak = max(self.peak, lifetime)
        self.increase = self.peak - self.start
        return False
