"""Metric registry: one `MetricSpec` (spec.py) per metric name, holding everything any consumer needs.

`compute(name, predictions, references, protocol="official", **kwargs) -> float` is the one entry point.
Each metric normalizes the texts itself (see `normalize.py`), so raw decoded predictions and raw reference
texts go in. Adding a metric is one function and one `register` call (docs/metrics.md); `register`
refuses a name already taken unless asked to replace it.

`protocol` (protocols.PROTOCOLS) reaches the metrics whose scoring differs between the two: mAP (how a
label string is split, classification.py) and iWER/iCER (empty references, asr.py). Under `official`
every metric scores as the published system does; a metric function takes the protocol by declaring a
`protocol` parameter, and the others ignore it.
"""

from __future__ import annotations

import inspect
from typing import Sequence

from lalmbench.metrics.asr import char_accuracy, error_rate_statistics, icer, iwer, word_accuracy
from lalmbench.metrics.classification import (accuracy, accuracy_statistics, exact_match, label_jaccard,
                                              map_statistics, mean_average_precision)
from lalmbench.metrics.normalize import normalize_text
from lalmbench.metrics.spec import MetricFn, MetricSpec, per_example
from lalmbench.protocols import DEFAULT_PROTOCOL, PROTOCOLS

CAPTION_TOLERANCE = 6e-5  # mecat rounds FENSE/DATE to 4 places
CAPTION_MODEL_ARGS = ("sbert_model", "echecker_model", "device")


def _lazy(module: str, function: str) -> MetricFn:
    def call(predictions, references, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), function)(predictions, references, **kwargs)

    call.__name__ = function
    return call


def _caption_items(metric: str):
    """mecat's per-item scores of a caption metric (the caption models are named in metric_args)."""
    def item_scores(predictions, references, **metric_args) -> list[float]:
        from lalmbench.metrics.captions import caption_item_scores

        models = {k: v for k, v in metric_args.items() if k in CAPTION_MODEL_ARGS}
        return caption_item_scores(metric, list(predictions), list(references), **models)

    return item_scores


# Caption metrics import heavy packages (mecat, sentence-transformers) only when used.
_REGISTRY: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("Accuracy", accuracy, track="A", statistics=accuracy_statistics, example_score=exact_match,
               example_score_name="exact match", chance=True),
    MetricSpec("mAP", mean_average_precision, track="A", statistics=map_statistics, example_score=label_jaccard,
               example_score_name="label Jaccard", chance=True),
    MetricSpec("iWER", iwer, track="B", statistics=error_rate_statistics("word"), example_score=word_accuracy,
               example_score_name="1 - WER", chance=True),
    MetricSpec("iCER", icer, track="B", statistics=error_rate_statistics("char"), example_score=char_accuracy,
               example_score_name="1 - CER", chance=True),
    MetricSpec("FENSE", _lazy("lalmbench.metrics.captions", "fense"), track="B", item_scores=_caption_items("FENSE"),
               tolerance=CAPTION_TOLERANCE),
    MetricSpec("DATE", _lazy("lalmbench.metrics.captions", "date"), track="B", item_scores=_caption_items("DATE"),
               tolerance=CAPTION_TOLERANCE),
)}


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> MetricSpec:
    """The spec of metric `name` (KeyError naming the registered ones when there is none)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown metric {name!r}; available: {available()}; register it first "
                       "(lalmbench.metrics.register, docs/metrics.md)")
    return _REGISTRY[name]


def register(spec: MetricSpec | str, compute: MetricFn | None = None, *, replace: bool = False,
             **fields) -> MetricSpec:
    """Add a metric: `register(MetricSpec(...))`, or `register(name, compute, higher_is_better=..., track=...)`
    (the other MetricSpec fields as keywords). A name already registered is refused unless `replace`."""
    if isinstance(spec, str):
        if compute is None:
            raise TypeError(f"register({spec!r}, ...) needs the metric's compute function")
        spec = MetricSpec(spec, compute, **fields)
    elif not isinstance(spec, MetricSpec):
        raise TypeError(f"register takes a MetricSpec or a name and a function, not {type(spec).__name__}")
    elif compute is not None or fields:
        raise TypeError(f"register({spec.name!r}): give a MetricSpec alone, or a name with a function and fields")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"a metric named {spec.name!r} is already registered; choose another name, or pass "
                         "replace=True to replace it (every run, interval and ranking then uses the new one)")
    _REGISTRY[spec.name] = spec
    return spec


def compute(name: str, predictions: Sequence[str], references: Sequence[str], protocol: str = DEFAULT_PROTOCOL,
            **kwargs) -> float:
    """Score `predictions` against `references` with metric `name` (raw texts, normalized inside)."""
    metric = get(name).compute
    if protocol not in PROTOCOLS:
        raise ValueError(f"{name}: unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if len(predictions) != len(references):
        raise ValueError(f"{name}: {len(predictions)} predictions but {len(references)} references; "
                         "every reference needs exactly one prediction")
    if len(references) == 0:
        raise ValueError(f"{name}: no examples to score")
    if "protocol" in inspect.signature(metric).parameters:
        kwargs["protocol"] = protocol
    return float(metric(list(predictions), list(references), **kwargs))


CHANCE_CANDIDATES = 10


def chance_level(name: str, references: Sequence[str], protocol: str = DEFAULT_PROTOCOL, **kwargs) -> float | None:
    """The score of the best constant answer: every example answered with one of the most common
    references (the first CHANCE_CANDIDATES), the best of them. None for metrics without one (their spec's
    `chance` is False: caption metrics need models), or no references."""
    from collections import Counter

    spec = get(name)
    if not spec.chance or not references:
        return None
    candidates = [text for text, _ in Counter(references).most_common(CHANCE_CANDIDATES)]
    return spec.best([compute(name, [answer] * len(references), references, protocol=protocol, **kwargs)
                      for answer in candidates])


__all__ = ["MetricSpec", "available", "chance_level", "compute", "get", "normalize_text", "per_example", "register"]
