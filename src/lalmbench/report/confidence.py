"""How sure is a score: seeded bootstrap intervals over the clips of a test set.

Flow: a run's `predictions_<task>.csv` (prediction, reference, key per row) -> `TaskAnswers` ->
`metric_statistic` writes the task's metric as additive per-row statistics plus one function of their
sums (the metric's spec says how: `statistics` or `item_scores`, metrics/spec.py), so that the full-set
sums give back exactly the score the protocol computes:

    Accuracy     [hit, 1]                      -> hits / rows
    iWER, iCER   [edits, reference units]      -> max(0, 1 - edits / units)   (jiwer's corpus rule)
    mAP          per class [TP, predicted, positives] and [1]
                                               -> mean over num_classes of scikit-learn's average
                                                  precision of binary scores, in closed form
    FENSE, DATE  [item score, 1]               -> mean of mecat's per-item scores

-> rows are summed per clip (the caption copies of one clip share its key and are drawn together) ->
`draw_clip_counts` draws, for each resample, how many times each clip is taken (as many draws as clips,
with replacement) -> every resample's score is the function of `counts @ clip sums`, one matrix product
for a whole chunk of resamples. A metric whose spec has no such form falls back to
`metrics.compute` on each resample, with fewer resamples (`GENERIC_RESAMPLES`).

What resampling keeps fixed: DATE's per-item discrimination is computed by mecat against the whole test
set and is not recomputed per resample; mAP's label vocabulary is the resample's own (a class whose
positives all fall out counts as AP 0, as the protocol would score such a test set), so a test set with
rare classes has a bootstrap distribution below the full-set score; the report says when the full-set
score lies outside its interval. Draws are seeded per (seed, task name), so every run resamples a task
with the same draws, and the same clip universe pairs runs in `compare`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lalmbench import metrics
from lalmbench.errors import LalmbenchError
from lalmbench.metrics.spec import Reduce

log = logging.getLogger("lalmbench")

LEVEL = 0.95  # two-sided confidence of every interval
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
GENERIC_RESAMPLES = 200  # resamples for a metric scored by metrics.compute on every resample
CHUNK_CELLS = 4_000_000  # resamples x clips drawn at once (bounds memory: ~32 MB of counts)
ITEM_SCORES_DIR = "scores"  # caption per-item scores are kept beside the score cache


@dataclass
class TaskAnswers:
    """One run's answers on one test set, row by row as in predictions_<task>.csv."""

    predictions: list[str]
    references: list[str]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.references)

    def row_ids(self) -> list[tuple[str, str, int]]:
        """(key, reference, occurrence) per row: how two runs' rows are matched."""
        seen: dict[tuple[str, str], int] = {}
        ids = []
        for key, reference in zip(self.keys, self.references):
            occurrence = seen.get((key, reference), 0)
            seen[(key, reference)] = occurrence + 1
            ids.append((key, reference, occurrence))
        return ids

    def take(self, rows: Sequence[int]) -> "TaskAnswers":
        return TaskAnswers([self.predictions[i] for i in rows], [self.references[i] for i in rows],
                           [self.keys[i] for i in rows])


def predictions_path(run_dir: Path, task: str) -> Path:
    return Path(run_dir) / f"predictions_{task}.csv"


def read_answers(run_dir: str | Path, task: str) -> TaskAnswers:
    path = predictions_path(Path(run_dir), task)
    if not path.is_file():
        raise LalmbenchError(f"{path} does not exist: the run has no kept answers for {task}; "
                             "rerun `lalmbench run` with the same arguments to evaluate it again")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"prediction", "reference", "key"} - set(reader.fieldnames or [])
        if missing:
            raise LalmbenchError(f"{path} lacks the column(s) {sorted(missing)}; expected the header "
                                 "prediction,reference,key written by `lalmbench run`")
        rows = list(reader)
    return TaskAnswers([r["prediction"] or "" for r in rows], [r["reference"] or "" for r in rows],
                       [r["key"] or "" for r in rows])


def clip_index(keys: Sequence[str], universe: dict[str, int] | None = None) -> tuple[np.ndarray, int]:
    """Row -> clip number (clips are keys; first appearance order), and the number of clips."""
    universe = {} if universe is None else universe
    index = np.fromiter((universe.setdefault(key, len(universe)) for key in keys), dtype=np.int64,
                        count=len(keys))
    return index, len(universe)


# ---------------------------------------------------------------- metrics as sums of per-row statistics
# Each metric's additive form is in its spec (metrics/spec.py: `statistics`, or `item_scores`).


@dataclass
class Statistic:
    """A task score as a function of per-clip sums: score(counts) = reduce(counts @ sums)."""

    metric: str
    sums: object  # (clips, k): numpy array, or a scipy.sparse matrix when k is large (mAP)
    reduce: Reduce
    rows: int = 0  # answer rows summed into the clips
    method: str = "bootstrap"

    @property
    def clips(self) -> int:
        return self.sums.shape[0]

    def scores(self, counts: np.ndarray) -> np.ndarray:
        """Scores of the resamples whose clip counts are the rows of `counts` (resamples, clips)."""
        weights = counts.astype(np.float64)
        if isinstance(self.sums, np.ndarray):
            totals = weights @ self.sums
        else:  # sparse (clips, k): (k, clips) @ (clips, resamples), transposed back
            totals = np.asarray((self.sums.T @ weights.T).T)
        return self.reduce(totals)

    def full(self) -> float:
        return float(self.scores(np.ones((1, self.clips)))[0])


@dataclass
class GenericStatistic:
    """A metric with no additive form: `metrics.compute` on every resample's rows (slow, kept small)."""

    metric: str
    answers: TaskAnswers
    row_clips: np.ndarray
    n_clips: int
    metric_args: dict
    protocol: str
    method: str = "bootstrap (metric recomputed per resample)"

    @property
    def clips(self) -> int:
        return self.n_clips

    def scores(self, counts: np.ndarray) -> np.ndarray:
        out = np.empty(len(counts))
        for b, row in enumerate(counts):
            taken = np.repeat(np.arange(len(self.answers)), row[self.row_clips])
            if len(taken) == 0:
                out[b] = np.nan
                continue
            try:
                out[b] = metrics.compute(self.metric, [self.answers.predictions[i] for i in taken],
                                         [self.answers.references[i] for i in taken], protocol=self.protocol,
                                         **self.metric_args)
            except ValueError:  # e.g. every reference of this resample is empty
                out[b] = np.nan
        return out

    def full(self) -> float:
        return float(self.scores(np.ones((1, self.n_clips), dtype=np.int64))[0])


def _item_mean_rows(answers: TaskAnswers, item_scores: Sequence[float]) -> tuple[np.ndarray, Reduce]:
    from lalmbench.metrics.spec import mean_rows

    if len(item_scores) != len(answers):
        raise LalmbenchError(f"{len(item_scores)} per-item scores for {len(answers)} answers; recompute them")
    return mean_rows(item_scores)


def _sum_per_clip(rows, row_clips: np.ndarray, n_clips: int):
    from scipy import sparse

    membership = sparse.csr_matrix((np.ones(len(row_clips)), (row_clips, np.arange(len(row_clips)))),
                                   shape=(n_clips, len(row_clips)))
    if isinstance(rows, np.ndarray):
        return np.asarray(membership @ rows)
    return (membership @ rows).tocsr()


def metric_statistic(metric: str, answers: TaskAnswers, metric_args: dict | None = None, protocol: str = "official",
                     item_scores: Sequence[float] | None = None, row_clips: np.ndarray | None = None,
                     n_clips: int | None = None) -> Statistic | GenericStatistic:
    """The task's metric over `answers` as a resamplable statistic over clips.

    `row_clips`/`n_clips` place the rows in a clip universe shared with other runs (paired resampling);
    by default the clips are this run's keys. A metric whose spec has `item_scores` (FENSE, DATE) needs
    them (`caption_item_scores`, per row); one with `statistics` is resampled through them; any other
    metric is recomputed on every resample.
    """
    metric_args = dict(metric_args or {})
    spec = metrics.get(metric)
    if row_clips is None:
        row_clips, n_clips = clip_index(answers.keys)
    if len(answers) == 0:
        raise LalmbenchError(f"{metric}: no answers to resample")
    if spec.item_scores is not None:
        if item_scores is None:
            raise LalmbenchError(f"{metric} intervals need its per-item scores (caption_item_scores)")
        rows, reduce = _item_mean_rows(answers, item_scores)
    elif spec.statistics is not None:
        rows, reduce = spec.statistics(answers.predictions, answers.references, metric_args, protocol)
    else:
        return GenericStatistic(metric, answers, row_clips, n_clips, metric_args, protocol)
    return Statistic(metric, _sum_per_clip(rows, row_clips, n_clips), reduce, rows=len(answers))


def checked_statistic(metric: str, answers: TaskAnswers, metric_args: dict, protocol: str, recorded: float | None,
                      item_scores: Sequence[float] | None = None, row_clips: np.ndarray | None = None,
                      n_clips: int | None = None) -> Statistic | GenericStatistic:
    """`metric_statistic`, checked to give back the protocol's own full-set score.

    When the additive form disagrees with `recorded` (the metric's parsing changed and the form did not
    follow), the metric itself is recomputed on every resample instead, and the log says so.
    """
    statistic = metric_statistic(metric, answers, metric_args, protocol, item_scores, row_clips, n_clips)
    if recorded is None or isinstance(statistic, GenericStatistic):
        return statistic
    spec = metrics.get(metric)
    full = statistic.full()
    if math.isfinite(recorded) and abs(full - recorded) <= spec.tolerance:
        return statistic
    if spec.item_scores is not None:
        raise LalmbenchError(f"{metric}: the per-item scores average to {full:.6f} but the recorded score is "
                             f"{recorded:.6f}; delete the stale per-item score file and recompute")
    log.warning("%s: the resampling form gives %.6f on the full test set but the metric gives %.6f; intervals "
                "for this task recompute the metric on %d resamples instead", metric, full, recorded,
                GENERIC_RESAMPLES)
    if row_clips is None:
        row_clips, n_clips = clip_index(answers.keys)
    return GenericStatistic(metric, answers, row_clips, n_clips, metric_args, protocol)


# ---------------------------------------------------------------- drawing resamples

def task_rng(seed: int, task: str) -> np.random.Generator:
    """One generator per (seed, task): every run resamples a task with the same draws."""
    from lalmbench.report.baselines import task_key

    return np.random.default_rng([int(seed), zlib.crc32(task_key(task).encode("utf-8"))])


def draw_clip_counts(rng: np.random.Generator, n_clips: int, resamples: int) -> np.ndarray:
    """(resamples, n_clips): how often each clip is drawn when n_clips clips are drawn with replacement."""
    drawn = rng.integers(0, n_clips, size=(resamples, n_clips))
    offsets = (np.arange(resamples) * n_clips)[:, None]
    return np.bincount((drawn + offsets).ravel(), minlength=resamples * n_clips).reshape(resamples, n_clips)


def resample_scores(statistics: Sequence[Statistic | GenericStatistic], n_clips: int, resamples: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(len(statistics), resamples) scores; all statistics see the same draws (paired resampling)."""
    out = np.empty((len(statistics), resamples))
    chunk = max(1, min(resamples, CHUNK_CELLS // max(1, n_clips)))
    for start in range(0, resamples, chunk):
        counts = draw_clip_counts(rng, n_clips, min(chunk, resamples - start))
        for s, statistic in enumerate(statistics):
            out[s, start:start + len(counts)] = statistic.scores(counts)
    return out


def resamples_for(statistics: Sequence[Statistic | GenericStatistic], resamples: int) -> int:
    return min(resamples, GENERIC_RESAMPLES) if any(isinstance(s, GenericStatistic) for s in statistics) else resamples


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"[{self.low:.4f}, {self.high:.4f}]"


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    """The central `level` share of the resampled values (resamples scored NaN are left out)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return Interval(math.nan, math.nan)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def score_interval(statistic: Statistic | GenericStatistic, task: str, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED, level: float = LEVEL) -> tuple[Interval, np.ndarray]:
    """The interval of one run's score on one task, and the resampled scores behind it."""
    values = resample_scores([statistic], statistic.clips, resamples_for([statistic], resamples),
                             task_rng(seed, task))[0]
    return percentile_interval(values, level), values


# ---------------------------------------------------------------- caption per-item scores, kept in the run

def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def item_scores_path(run_dir: Path, task: str) -> Path:
    return Path(run_dir) / ITEM_SCORES_DIR / f"{task}.items.json"


def caption_item_scores(run_dir: str | Path, task: str, metric: str, answers: TaskAnswers, metric_args: dict,
                        compute: bool = True) -> list[float] | None:
    """mecat's per-item FENSE/DATE scores of a run's answers, kept in `scores/<task>.items.json`.

    Computing them runs mecat once more (the caption models must be present); later calls (compare,
    leaderboard) read the kept file, valid while predictions_<task>.csv is unchanged. None when they
    are not kept and `compute` is False.
    """
    run_dir = Path(run_dir)
    digest = _file_digest(predictions_path(run_dir, task))
    kept = item_scores_path(run_dir, task)
    if kept.is_file():
        try:
            stored = json.loads(kept.read_text(encoding="utf-8"))
            if stored.get("predictions_sha256") == digest and stored.get("metric") == metric:
                return [float(v) for v in stored["scores"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: recompute below
    if not compute:
        return None
    scores = metrics.get(metric).item_scores(answers.predictions, answers.references, **metric_args)
    try:
        from lalmbench.io_utils import atomic_write_json

        atomic_write_json(kept, {"metric": metric, "predictions_sha256": digest, "scores": list(map(float, scores))})
    except OSError as exc:  # a read-only run directory still gets its interval
        log.info("per-item %s scores of %s not kept (%s)", metric, task, exc)
    return list(map(float, scores))


def run_task_statistic(run_dir: str | Path, task: str, metric: str, metric_args: dict, protocol: str,
                       recorded: float | None, answers: TaskAnswers | None = None,
                       row_clips: np.ndarray | None = None, n_clips: int | None = None,
                       compute_item_scores: bool = True) -> Statistic | GenericStatistic:
    """The resamplable statistic of one task of one run directory, on `answers` (default: all its rows).

    `recorded` is the protocol's score of these rows (checked against the additive form); pass None when
    `answers` is a subset of the run's rows.
    """
    kept_items = metrics.get(metric).item_scores is not None
    all_answers = read_answers(run_dir, task) if answers is None or kept_items else answers
    answers = all_answers if answers is None else answers
    item_scores = None
    if kept_items:
        item_scores = caption_item_scores(run_dir, task, metric, all_answers, metric_args, compute=compute_item_scores)
        if item_scores is None:
            raise LalmbenchError(f"{task}: no per-item {metric} scores are kept in "
                                 f"{item_scores_path(Path(run_dir), task)}; they are computed at the end of a run, "
                                 "on a machine with the caption models")
        if answers is not all_answers:
            by_row = dict(zip(all_answers.row_ids(), item_scores))
            item_scores = [by_row[row] for row in answers.row_ids()]
    return checked_statistic(metric, answers, metric_args, protocol, recorded, item_scores, row_clips, n_clips)


# ---------------------------------------------------------------- a run's intervals

@dataclass
class TaskSpec:
    """What the runner knows of one evaluated task."""

    name: str
    metric: str
    score: float
    weight: float = 1.0
    metric_args: dict = field(default_factory=dict)


@dataclass
class TaskConfidence:
    task: str
    interval: Interval | None  # None: no interval (see note)
    clips: int = 0
    rows: int = 0
    resamples: int = 0
    method: str = ""
    seconds: float = 0.0
    note: str = ""

    def as_dict(self) -> dict:
        out = {"clips": self.clips, "rows": self.rows, "resamples": self.resamples, "method": self.method,
               "seconds": round(self.seconds, 3)}
        if self.interval is not None:
            out.update(ci_low=self.interval.low, ci_high=self.interval.high)
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class RunConfidence:
    tasks: dict[str, TaskConfidence]
    overall: Interval | None
    level: float
    resamples: int
    seed: int
    seconds: float

    def summary(self) -> dict:
        """The `confidence` block of run_summary.json."""
        return {"level": self.level, "resamples": self.resamples, "seed": self.seed, "unit": "clip (key)",
                "method": "percentile bootstrap", "seconds": round(self.seconds, 3),
                "overall": None if self.overall is None else {"ci_low": self.overall.low, "ci_high": self.overall.high},
                "tasks": {name: conf.as_dict() for name, conf in self.tasks.items()}}

    def table_columns(self) -> dict[str, dict[str, str]]:
        """Extra cells for the terminal table: task name (and 'Overall') -> {'95% CI': '[low, high]'}."""
        column = f"{self.level:.0%} CI"
        cells = {name: {column: str(conf.interval) if conf.interval else "-"} for name, conf in self.tasks.items()}
        if self.overall is not None:
            cells["Overall"] = {column: str(self.overall)}
        return cells


def run_intervals(run_dir: str | Path, tasks: Sequence[TaskSpec], protocol: str = "official",
                  resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = LEVEL) -> RunConfidence:
    """Intervals for every task of a run and for its Overall (tasks resampled independently).

    A task whose interval cannot be computed (no kept answers, caption models missing) gets none and a
    note; the others and the Overall of the tasks that have one are still computed.
    """
    started = time.perf_counter()
    confidences: dict[str, TaskConfidence] = {}
    overall_parts: list[tuple[float, np.ndarray]] = []
    for spec in tasks:
        task_started = time.perf_counter()
        try:
            statistic = run_task_statistic(run_dir, spec.name, spec.metric, spec.metric_args, protocol, spec.score)
            interval, values = score_interval(statistic, spec.name, resamples, seed, level)
        except Exception as exc:  # one task's interval must not stop a run that has its scores
            log.warning("%s: no confidence interval (%s: %s)", spec.name, type(exc).__name__, exc)
            confidences[spec.name] = TaskConfidence(spec.name, None, note=f"{type(exc).__name__}: {exc}")
            continue
        note = "" if interval.covers(spec.score) else (
            "the full-set score lies outside its interval: the metric is biased under resampling "
            "(mAP with rare classes)")
        rows = len(statistic.answers) if isinstance(statistic, GenericStatistic) else statistic.rows
        confidences[spec.name] = TaskConfidence(spec.name, interval, statistic.clips, rows, len(values),
                                                statistic.method, time.perf_counter() - task_started, note)
        overall_parts.append((spec.weight, values))
    overall = None
    if overall_parts and len(overall_parts) == len(tasks):
        shortest = min(len(values) for _, values in overall_parts)
        total = sum(weight for weight, _ in overall_parts)
        combined = sum(weight * values[:shortest] for weight, values in overall_parts) / total
        overall = percentile_interval(combined, level)
    seconds = time.perf_counter() - started
    log.info("%.0f%% intervals of %d task(s) from %d clip resamples each: %.1f s", 100 * level, len(tasks), resamples,
             seconds)
    return RunConfidence(confidences, overall, level, resamples, seed, seconds)
