"""What lalmbench changes in the process while a library call runs, put back when the call ends.

Importing lalmbench changes nothing. A run does need some process-wide settings for its own duration:
the `lalmbench` logger's console and log.txt handlers (phases/run_directory.setup_logging), silence on
the ranks other than 0 (warnings filters, the `transformers` logger, TRANSFORMERS_VERBOSITY), the bench's
quieter `lalmbench` logger, HF_HUB_OFFLINE for the demo, huggingface_hub's offline switch when the hub
does not answer (hub.offline_if_unreachable), and torch's determinism, TF32 and thread settings
(train.configure_determinism, with CUBLAS_WORKSPACE_CONFIG). Each public entry point that sets any of
these (runner.run, bench.run_bench, demo.demo_command, encoders.check.run_checks) runs under
`restores_process_state`, so a program that calls lalmbench as a library finds them as they were; the
handlers the call added are closed. The random generators a run seeds stay seeded.
Only the CLI entry point (cli.main) configures the process for good.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
ENVIRONMENT = ("HF_HUB_OFFLINE", "TRANSFORMERS_VERBOSITY", "CUBLAS_WORKSPACE_CONFIG")


@contextmanager
def restored_process_state() -> Iterator[None]:
    """Put back, on exit, the warnings filters, the `lalmbench` logger's level, handlers and propagation,
    the `transformers` logger's level (its handler is transformers' own, made at first use), the ENVIRONMENT
    variables, huggingface_hub.constants.HF_HUB_OFFLINE and torch's settings (`_torch_settings`) as they were
    on entry."""
    from huggingface_hub import constants  # imported now: its offline flag is read from the environment as it is

    filters, show = list(warnings.filters), warnings.showwarning
    ours, transformers = logging.getLogger("lalmbench"), logging.getLogger("transformers")
    level, handlers, propagate = ours.level, list(ours.handlers), ours.propagate
    transformers_level = transformers.level
    environment = {name: os.environ.get(name) for name in ENVIRONMENT}
    hub_offline = constants.HF_HUB_OFFLINE
    torch_settings = _torch_settings()
    try:
        yield
    finally:
        warnings.filters[:] = filters
        warnings.showwarning = show
        getattr(warnings, "_filters_mutated", lambda: None)()  # as catch_warnings does: shown-once registries reset
        for handler in list(ours.handlers):
            if handler not in handlers:  # the run's console and log.txt handlers
                ours.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in ours.handlers:
                ours.addHandler(handler)
        ours.setLevel(level)
        ours.propagate = propagate
        transformers.setLevel(transformers_level)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        constants.HF_HUB_OFFLINE = hub_offline
        _set_torch_settings(torch_settings)


def _torch_settings() -> dict:
    """What train.configure_determinism sets: deterministic algorithms (and warn-only), cuDNN determinism and
    autotuning, TF32 matmuls, intra-op threads."""
    import torch

    return {"deterministic": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "threads": torch.get_num_threads()}


def _set_torch_settings(settings: dict) -> None:
    import torch

    if _torch_settings() == settings:
        return
    torch.use_deterministic_algorithms(settings["deterministic"], warn_only=settings["warn_only"])
    torch.backends.cudnn.deterministic = settings["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = settings["cudnn_benchmark"]
    torch.backends.cuda.matmul.allow_tf32 = settings["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = settings["cudnn_tf32"]
    if torch.get_num_threads() != settings["threads"]:
        torch.set_num_threads(settings["threads"])


def restores_process_state(function: Callable[..., T]) -> Callable[..., T]:
    """Run `function` under `restored_process_state`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with restored_process_state():
            return function(*args, **kwargs)

    return wrapper
