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


CHANCE_METRICS = ("Accuracy", "mAP", "iWER", "iCER")
"""Metrics whose chance level is computed (cheap, model-free); caption metrics need models and have none."""
CHANCE_CANDIDATES = 10


def chance_level(name: str, references: Sequence[str], protocol: str = DEFAULT_PROTOCOL, **kwargs) -> float | None:
    """The score of the best constant answer: every example answered with one of the most common
    references (the first CHANCE_CANDIDATES), the best of them. None for metrics without one, or no references."""
    from collections import Counter

    if name not in CHANCE_METRICS or not references:
        return None
    candidates = [text for text, _ in Counter(references).most_common(CHANCE_CANDIDATES)]
    return max(compute(name, [answer] * len(references), references, protocol=protocol, **kwargs)
               for answer in candidates)


__all__ = ["available", "chance_level", "compute", "normalize_text", "register"]
