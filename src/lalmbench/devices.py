"""Which devices this process can use: a device a command names is checked before anything is loaded.

torch reports a missing device only when the first tensor moves there (for a CPU-only build an
AssertionError deep in `torch.cuda`), after the encoder, the data and the decoder have loaded. Here the
name is checked against the torch build and the machine once, at the start, with an error that says
what to do.
"""

from __future__ import annotations

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
