"""One object per metric: everything any consumer needs, in one registered `MetricSpec`.

Consumers read only the spec: `compute` scores a test set (metrics.compute), `statistics` and
`item_scores` let the bootstrap resample it (report/confidence.py), `higher_is_better` orders entries
on the leaderboard and in `compare`, `track` places a task outside the public suites in Track A or B,
`example_score` orders single predictions in the HTML report, and `chance` says whether the report
draws a chance level (the best constant answer, metrics.chance_level).

The additive form the bootstrap needs: `statistics(predictions, references, metric_args, protocol)`
returns `(rows, reduce)`: rows is a (rows, k) array (or scipy.sparse matrix) of per-example statistics,
and `reduce` maps a (resamples, k) array of their sums to the (resamples,) scores, such that
`reduce(rows.sum(axis=0)[None])[0] == compute(predictions, references)`. A metric without one is
recomputed on every resample (slower, fewer resamples).

`per_example` builds the whole spec of a metric that is the mean of a per-example score from that one
function (docs/metrics.md has a worked example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

TRACKS = ("A", "B")
EXACT_TOLERANCE = 1e-6  # |additive full-set score - compute's score| allowed by default

MetricFn = Callable[..., float]  # (predictions, references, **metric_args[, protocol]) -> score
Reduce = Callable[[np.ndarray], np.ndarray]  # (resamples, k) sums -> (resamples,) scores
StatisticsFn = Callable[[Sequence[str], Sequence[str], dict, str], tuple[object, Reduce]]
ExampleFn = Callable[[str, str], float]  # (prediction, reference) -> score of one example


@dataclass(frozen=True)
class MetricSpec:
    """A metric and what every consumer needs of it (module docstring)."""

    name: str
    compute: MetricFn
    """(predictions, references, **metric_args) -> score; raw texts in. It receives the protocol when it
    declares a `protocol` parameter."""
    higher_is_better: bool = True
    """False for an error or a distance: the leaderboard then maps the lowest score to 1."""
    track: str | None = None
    """'A' (classification) or 'B' (open-ended): the track a task outside the public suites joins by its
    metric; None leaves such a task unranked."""
    statistics: StatisticsFn | None = None
    """(predictions, references, metric_args, protocol) -> (per-example rows, reduce): the additive form
    the bootstrap resamples (module docstring); None: the metric is recomputed on every resample."""
    item_scores: Callable[..., list[float]] | None = None
    """(predictions, references, **metric_args) -> per-example scores whose mean is the score, for a
    metric too expensive to recompute (FENSE, DATE: mecat); kept beside the run by the bootstrap."""
    tolerance: float = EXACT_TOLERANCE
    """How far the additive form's full-set score may lie from `compute`'s."""
    example_score: ExampleFn | None = None
    """(prediction, reference) -> score of one example, ordered as the metric is (`higher_is_better`);
    the report picks its best and worst samples by it. None: word F1."""
    example_score_name: str = ""
    """What the report calls `example_score` (e.g. "1 - WER")."""
    chance: bool = False
    """Whether the report computes a chance level: the best score one constant answer reaches (cheap,
    model-free metrics only)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a metric needs a non-empty name, not {self.name!r}")
        if not callable(self.compute):
            raise TypeError(f"metric {self.name!r}: compute must be a function (predictions, references) -> float, "
                            f"not {type(self.compute).__name__}")
        if self.track not in (None, *TRACKS):
            raise ValueError(f"metric {self.name!r}: track must be one of {', '.join(TRACKS)} or None, "
                             f"not {self.track!r}")
        for field_name in ("statistics", "item_scores", "example_score"):
            value = getattr(self, field_name)
            if value is not None and not callable(value):
                raise TypeError(f"metric {self.name!r}: {field_name} must be a function or None, "
                                f"not {type(value).__name__}")
        if self.statistics is not None and self.item_scores is not None:
            raise ValueError(f"metric {self.name!r}: give statistics or item_scores, not both")

    def better(self, a, b):
        """Whether score `a` is better than score `b` (elementwise for arrays)."""
        return a > b if self.higher_is_better else a < b

    def best(self, scores):
        """The best of `scores`."""
        return max(scores) if self.higher_is_better else min(scores)


def ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    """numerator / denominator, `empty` where the denominator is 0."""
    out = np.full(np.shape(numerator), empty, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def mean_rows(values: Sequence[float]) -> tuple[np.ndarray, Reduce]:
    """The additive form of a mean of per-example values: rows [value, 1], score = sum / count."""
    values = np.asarray(values, dtype=np.float64)
    rows = np.stack([values, np.ones_like(values)], axis=1)
    return rows, lambda totals: ratio(totals[:, 0], totals[:, 1], np.nan)


def per_example(name: str, score: ExampleFn, *, higher_is_better: bool = True, track: str | None = None,
                example_score_name: str = "", chance: bool = False) -> MetricSpec:
    """The spec of a metric that is the mean of `score(prediction, reference)` over the examples: its
    compute, its additive form for the bootstrap and its example score all come from `score`."""
    if not callable(score):
        raise TypeError(f"metric {name!r}: score must be a function (prediction, reference) -> float, "
                        f"not {type(score).__name__}")

    def compute(predictions: Sequence[str], references: Sequence[str], **_: object) -> float:
        return float(np.mean([score(p, r) for p, r in zip(predictions, references)]))

    def statistics(predictions: Sequence[str], references: Sequence[str], metric_args: dict, protocol: str):
        return mean_rows([score(p, r) for p, r in zip(predictions, references)])

    compute.__name__ = getattr(score, "__name__", name)
    return MetricSpec(name, compute, higher_is_better=higher_is_better, track=track, statistics=statistics,
                      example_score=score, example_score_name=example_score_name or name, chance=chance)


def word_f1(prediction: str, reference: str) -> float:
    """F1 of the normalized words two texts share: the report's example score for a metric without one."""
    # hand-written: a bag-of-words overlap in four lines; sklearn's f1_score scores label arrays, not word bags
    from collections import Counter

    from lalmbench.metrics.normalize import normalize_text

    pred_words, ref_words = Counter(normalize_text(prediction).split()), Counter(normalize_text(reference).split())
    common = sum((pred_words & ref_words).values())
    if not common:
        return 0.0
    precision, recall = common / sum(pred_words.values()), common / sum(ref_words.values())
    return 2 * precision * recall / (precision + recall)

