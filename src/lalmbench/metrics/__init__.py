"""Metric registry: one dict from metric name to a scoring function.

`compute(name, predictions, references, protocol="official", **kwargs) -> float` is the one entry point.
Each metric normalizes the texts itself (see `normalize.py`), so raw decoded predictions and raw reference
texts go in. Adding a metric is one entry in `_REGISTRY`.

`protocol` (config.PROTOCOLS) reaches the metrics whose scoring differs between the two: mAP (how a label
string is split, classification.py) and iWER/iCER (empty references, asr.py). Under `official` every
metric scores as the published system does; a metric function takes the protocol by declaring a
`protocol` parameter, and the others ignore it.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

from lalmbench.config import DEFAULT_PROTOCOL, PROTOCOLS
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


def compute(name: str, predictions: Sequence[str], references: Sequence[str], protocol: str = DEFAULT_PROTOCOL,
            **kwargs) -> float:
    """Score `predictions` against `references` with metric `name` (raw texts, normalized inside)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown metric {name!r}; available: {available()}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"{name}: unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if len(predictions) != len(references):
        raise ValueError(f"{name}: {len(predictions)} predictions but {len(references)} references; "
                         "every reference needs exactly one prediction")
    if len(references) == 0:
        raise ValueError(f"{name}: no examples to score")
    metric = _REGISTRY[name]
    if "protocol" in inspect.signature(metric).parameters:
        kwargs["protocol"] = protocol
    return float(metric(list(predictions), list(references), **kwargs))


__all__ = ["available", "compute", "normalize_text", "register"]
