"""Metric registry: one dict from metric name to a scoring function.

`compute(name, predictions, references, **kwargs) -> float` is the one entry point. Each metric
normalizes the texts itself (see `normalize.py`) exactly as the published system does, so raw decoded
predictions and raw reference texts go in. Adding a metric is one entry in `_REGISTRY`.
"""

from __future__ import annotations

from typing import Callable, Sequence

from lalmbench.metrics.asr import icer, iwer
from lalmbench.metrics.classification import accuracy, mean_average_precision
from lalmbench.metrics.normalize import normalize_text

MetricFn = Callable[..., float]

_REGISTRY: dict[str, MetricFn] = {
    "Accuracy": accuracy,
    "mAP": mean_average_precision,
    "iWER": iwer,
    "iCER": icer,
}


def _lazy(module: str, function: str) -> MetricFn:
    def call(predictions, references, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), function)(predictions, references, **kwargs)

    call.__name__ = function
    return call


# Caption metrics import heavy packages (mecat, sentence-transformers) only when used.
_REGISTRY["FENSE"] = _lazy("lalmbench.metrics.captions", "fense")
_REGISTRY["DATE"] = _lazy("lalmbench.metrics.captions", "date")


def available() -> list[str]:
    return sorted(_REGISTRY)


def register(name: str, fn: MetricFn) -> None:
    _REGISTRY[name] = fn


def compute(name: str, predictions: Sequence[str], references: Sequence[str], **kwargs) -> float:
    """Score `predictions` against `references` with metric `name` (raw texts, normalized inside)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown metric {name!r}; available: {available()}")
    if len(predictions) != len(references):
        raise ValueError(f"{name}: {len(predictions)} predictions but {len(references)} references; "
                         "every reference needs exactly one prediction")
    if len(references) == 0:
        raise ValueError(f"{name}: no examples to score")
    return float(_REGISTRY[name](list(predictions), list(references), **kwargs))


__all__ = ["available", "compute", "normalize_text", "register"]
