"""Is encoder A really better than B: a paired bootstrap over the test clips both runs answered.

Flow: RUN_A and RUN_B (each a run directory, a seed-group directory or several runs of one identity;
report/run_groups.py) -> checks: one protocol, the same tasks, the same test-set definition per task, and
nearly the same answered examples -> per task, the rows every run of both sides answered (matched by key,
reference and occurrence; clips are their keys) -> each run's score as a resamplable statistic on those
clips (report/confidence.py) -> every resample draws the clips once for both sides (paired) and, for a
group of seeds, draws its seeds with replacement (one draw per resample, shared by all tasks, since a
seed's run answers every task) -> a side's score per resample = mean over its drawn seeds -> A - B per
resample -> the difference's percentile interval and the share of resamples in which A beats B. The same
resamples give the track means (plain mean of the raw task scores of a track) and the Overall (weighted
mean, as scores.tsv computes it).

With one run per side the seed level is fixed, so the interval covers test-set noise only; with a few
seeds per side it also covers seed noise, coarsely (two or three seeds are few draws).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tabulate import tabulate

from lalmbench import metrics
from lalmbench.errors import LalmbenchError
from lalmbench.io_utils import atomic_write_json
from lalmbench.report.baselines import task_key, track_of
from lalmbench.report.confidence import (DEFAULT_RESAMPLES, DEFAULT_SEED, LEVEL, Interval, percentile_interval,
                                         read_answers, resample_scores, resamples_for, run_task_statistic, task_rng)
from lalmbench.report.run_groups import RunGroup, check_settings, read_group

MIN_MATCHED_SHARE = 0.9  # below this share of a run's answers in common, the test sets differ
TEST_SET_FIELDS = ("data", "metric", "metric_args", "weight")  # what defines a test set in eval_config.yaml
SEED_DRAW_STREAM = 0x5EED  # the seed draws' own random stream, apart from the clip draws of every task
TRACKS = ("A", "B")  # Track A: task1 classification, Track B: task2 open-ended (report/baselines.py)


@dataclass
class ComparedRow:
    name: str  # a task, "Track A", "Track B" or "Overall"
    metric: str
    score_a: float
    score_b: float
    interval: Interval  # of score_a - score_b
    a_better: float  # share of resamples with A's score better than B's (above, or below for a lower-is-better metric)
    clips: int | None = None
    rows: int | None = None
    resamples: int = 0
    spread_a: float | None = None  # standard deviation over A's seeds (recorded scores)
    spread_b: float | None = None

    @property
    def difference(self) -> float:
        return self.score_a - self.score_b

    def as_dict(self) -> dict:
        return {"name": self.name, "metric": self.metric, "score_a": self.score_a, "score_b": self.score_b,
                "difference": self.difference, "ci_low": self.interval.low, "ci_high": self.interval.high,
                "a_better_share": self.a_better, "clips": self.clips, "rows": self.rows,
                "resamples": self.resamples, "seed_spread_a": self.spread_a, "seed_spread_b": self.spread_b}


@dataclass
class Comparison:
    a: RunGroup
    b: RunGroup
    rows: list[ComparedRow]
    level: float
    resamples: int
    seed: int
    notes: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)  # the settings that differ, and whether that was allowed

    def as_dict(self) -> dict:
        return {"a": {"name": self.a.name, "runs": [str(r.run_dir) for r in self.a.runs], "seeds": self.a.seeds},
                "b": {"name": self.b.name, "runs": [str(r.run_dir) for r in self.b.runs], "seeds": self.b.seeds},
                "protocol": self.a.protocol, "level": self.level, "resamples": self.resamples, "seed": self.seed,
                "rows": [row.as_dict() for row in self.rows], "settings": self.settings, "notes": self.notes}


def _test_set(run, task: str) -> dict:
    spec = run.tasks[task]
    defined = run.eval_config.get(task)
    if isinstance(defined, dict):
        return {name: defined.get(name) for name in TEST_SET_FIELDS}
    return {"metric": spec.metric, "metric_args": spec.metric_args, "weight": spec.weight}


def comparable_tasks(a: RunGroup, b: RunGroup, common_only: bool = False) -> list[str]:
    """The tasks to compare, or an error naming what differs (protocol, tasks, test-set definitions)."""
    if a.protocol != b.protocol:
        raise LalmbenchError(f"the runs used different protocols: A ({a.name}) {a.protocol}, B ({b.name}) "
                             f"{b.protocol}; scores of different protocols are not comparable (run both "
                             "with the same --args '{\"protocol\": ...}')")
    if a.runs[0].partial != b.runs[0].partial:
        raise LalmbenchError(f"the runs were evaluated on different test examples: A ({a.name}) on "
                             f"{a.runs[0].evaluated_on()}, B ({b.name}) on {b.runs[0].evaluated_on()} (`run --limit`); "
                             "a partial evaluation is compared only with one of the same --limit")
    tasks_a, tasks_b = a.task_names, b.task_names
    only_a = [t for t in tasks_a if t not in tasks_b]
    only_b = [t for t in tasks_b if t not in tasks_a]
    common = [t for t in tasks_a if t in tasks_b]
    if not common:
        raise LalmbenchError(f"the runs share no test set: A has {', '.join(tasks_a) or 'none'}, B has "
                             f"{', '.join(tasks_b) or 'none'}")
    if (only_a or only_b) and not common_only:
        parts = ([f"only A ({a.name}) has {', '.join(only_a)}"] if only_a else []) + (
            [f"only B ({b.name}) has {', '.join(only_b)}"] if only_b else [])
        raise LalmbenchError(f"the runs have different test sets: {'; '.join(parts)}. Pass --common-only to "
                             f"compare the {len(common)} they share (the Overall then covers those only)")
    problems = []
    for task in common:
        reference = _test_set(a.runs[0], task)
        for run in a.runs + b.runs:
            defined = _test_set(run, task)
            differ = [name for name in TEST_SET_FIELDS if name in reference and name in defined
                      and reference[name] != defined[name]]
            if differ:
                problems.append(f"{task}: {run.run_dir} and {a.runs[0].run_dir} differ in {', '.join(differ)}")
    if problems:
        raise LalmbenchError("the test sets are defined differently:\n  " + "\n  ".join(problems))
    return common


def _matched_rows(groups: Sequence[RunGroup], task: str):
    """Each run's answers on the rows all runs answered, and the shared clip index of those rows."""
    answers = {id(run): read_answers(run.run_dir, task) for group in groups for run in group.runs}
    ids = {key: value.row_ids() for key, value in answers.items()}
    common = set.intersection(*(set(row_ids) for row_ids in ids.values()))
    for group in groups:
        for run in group.runs:
            total = len(ids[id(run)])
            if total == 0 or len(common) < MIN_MATCHED_SHARE * total:
                raise LalmbenchError(f"{task}: only {len(common)} of the {total} answers of {run.run_dir} are "
                                     "answered by every compared run (matched by key and reference); the test "
                                     "sets differ")
    order = sorted(common)
    position = {row: i for i, row in enumerate(order)}
    clips: dict[str, int] = {}
    for key, _, _ in order:
        clips.setdefault(key, len(clips))
    row_clips = np.array([clips[key] for key, _, _ in order], dtype=np.int64)
    matched = {}
    for run_id, run_answers in answers.items():
        take = sorted((position[row], i) for i, row in enumerate(ids[run_id]) if row in position)
        matched[run_id] = run_answers.take([i for _, i in take])
    left_out = sum(len(row_ids) for row_ids in ids.values()) - len(order) * len(ids)
    return matched, row_clips, len(clips), len(order), left_out


def _seed_picks(count: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(count, resamples): which of a group's runs stands in each place of each resample."""
    if count == 1:
        return np.zeros((1, resamples), dtype=np.int64)
    return rng.integers(0, count, size=(count, resamples))


def compare_groups(a: RunGroup, b: RunGroup, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                   level: float = LEVEL, common_only: bool = False,
                   allow_different_settings: bool = False) -> Comparison:
    tasks = comparable_tasks(a, b, common_only)
    # Every training and evaluation setting that differs is stated; another training budget, decoder or
    # data revision is refused unless allowed (run_groups.check_settings).
    settings = (check_settings([("A", a.runs[0]), ("B", b.runs[0])], allow_different_settings, "compared")
                or ["settings: the same training and evaluation settings (seed aside)"])
    seed_rng = np.random.default_rng([int(seed), SEED_DRAW_STREAM])
    picks_a, picks_b = _seed_picks(len(a.runs), resamples, seed_rng), _seed_picks(len(b.runs), resamples, seed_rng)
    rows: list[ComparedRow] = []
    per_task: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    directions: dict[str, bool] = {}  # task -> whether its metric's higher scores are better (its spec)
    notes = list(a.notes) + list(b.notes)
    for task in tasks:
        spec = a.spec(task)
        matched, row_clips, n_clips, n_rows, left_out = _matched_rows([a, b], task)
        statistics = [run_task_statistic(run.run_dir, task, spec.metric, spec.metric_args, a.protocol, None,
                                         answers=matched[id(run)], row_clips=row_clips, n_clips=n_clips)
                      for run in a.runs + b.runs]
        count = resamples_for(statistics, resamples)
        values = resample_scores(statistics, n_clips, count, task_rng(seed, task))
        full = np.array([statistic.full() for statistic in statistics])
        side_a = np.take_along_axis(values[:len(a.runs)], picks_a[:, :count], axis=0).mean(axis=0)
        side_b = np.take_along_axis(values[len(a.runs):], picks_b[:, :count], axis=0).mean(axis=0)
        per_task[task] = (side_a, side_b)
        directions[task] = metrics.get(spec.metric).higher_is_better
        rows.append(ComparedRow(task, spec.metric, float(full[:len(a.runs)].mean()), float(full[len(a.runs):].mean()),
                                percentile_interval(side_a - side_b, level),
                                _better_share(side_a, side_b, directions[task]),
                                n_clips, n_rows, count, a.spread(task), b.spread(task)))
        if left_out:
            notes.append(f"{task}: the {n_rows} rows answered by every run are compared; {left_out} answer(s) "
                         "outside them are left out")
    shortest = min(len(side_a) for side_a, _ in per_task.values())
    scores = {row.name: row for row in rows}

    def combined(name: str, metric: str, members: list[str], weights: list[float]) -> ComparedRow:
        total = sum(weights)
        mean = lambda values: sum(w * v for w, v in zip(weights, values)) / total
        side_a = mean([per_task[t][0][:shortest] for t in members])
        side_b = mean([per_task[t][1][:shortest] for t in members])
        higher = {directions[t] for t in members}
        if len(higher) > 1:
            notes.append(f"{name}: its tasks' metrics mix higher- and lower-is-better; its mean of raw scores counts "
                         "a higher mean as better")
        return ComparedRow(name, metric, mean([scores[t].score_a for t in members]),
                           mean([scores[t].score_b for t in members]), percentile_interval(side_a - side_b, level),
                           _better_share(side_a, side_b, higher != {False}), resamples=shortest)

    for track in TRACKS:
        members = [t for t in tasks if track_of(t, a.spec(t).metric) == track]
        if members:
            rows.append(combined(f"Track {track}", f"mean of {len(members)}", members, [1.0] * len(members)))
    rows.append(combined("Overall", "weighted mean", tasks, [a.spec(t).weight for t in tasks]))
    return Comparison(a, b, rows, level, resamples, seed, notes, settings)


def _better_share(side_a: np.ndarray, side_b: np.ndarray, higher_is_better: bool) -> float:
    """The share of resamples in which A scores better than B."""
    return float(np.mean(side_a > side_b if higher_is_better else side_a < side_b))


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def format_comparison(comparison: Comparison) -> str:
    a, b = comparison.a, comparison.b
    seeds = len(a.runs) > 1 or len(b.runs) > 1
    lines = [f"A: {a.describe()}", f"B: {b.describe()}",
             f"protocol {a.protocol}; paired bootstrap, {comparison.resamples} resamples of the clips every run "
             f"answered{' and of the seeds of each side' if seeds else ''}, {comparison.level:.0%} intervals, "
             f"seed {comparison.seed}", *comparison.settings, ""]
    level = f"{comparison.level:.0%} CI of A-B"
    header = ["task", "metric", "A", "B", "A-B", level, "A better in", "clips"]
    body = []
    for row in comparison.rows:
        score_a = f"{row.score_a:.4f}" + (f" ±{row.spread_a:.4f}" if row.spread_a is not None else "")
        score_b = f"{row.score_b:.4f}" + (f" ±{row.spread_b:.4f}" if row.spread_b is not None else "")
        body.append([task_key(row.name) if row.clips is not None else row.name, row.metric, score_a, score_b,
                     _signed(row.difference), f"[{_signed(row.interval.low)}, {_signed(row.interval.high)}]",
                     f"{row.a_better:.1%}", "" if row.clips is None else str(row.clips)])
    # disable_numparse: the cells stay as written above (tabulate would reformat "+0.2500" as 0.25)
    lines += tabulate(body, header, tablefmt="simple", disable_numparse=True).splitlines()
    noise = " or seed noise." if seeds else " (training-seed noise is not in it: compare seed groups for that)."
    lines += ["", "A better in: the share of resamples in which A scores better than B (above it; below it for a "
              "lower-is-better metric). An interval that excludes 0 says the difference is unlikely to be test-set "
              "noise" + noise]
    if seeds:
        lines.append("±: standard deviation of the recorded scores over a side's seeds.")
    lines += [f"note: {note}" for note in comparison.notes]
    return "\n".join(lines)


def compare_command(runs_a: Sequence[str], runs_b: Sequence[str], resamples: int = DEFAULT_RESAMPLES,
                    seed: int = DEFAULT_SEED, common_only: bool = False, json_path: str | None = None,
                    allow_different_settings: bool = False) -> int:
    if resamples < 1:
        raise LalmbenchError(f"--resamples must be at least 1, got {resamples}")
    a, b = read_group(runs_a, "A"), read_group(runs_b, "B")
    comparison = compare_groups(a, b, resamples=resamples, seed=seed, common_only=common_only,
                                allow_different_settings=allow_different_settings)
    print(format_comparison(comparison))
    if json_path:
        atomic_write_json(Path(json_path), comparison.as_dict())
        print(f"\nwrote {json_path}")
    return 0


def split_sides(runs: Sequence[str], versus: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """`compare A B` or `compare A1 A2 ... --vs B1 B2 ...` -> (A paths, B paths)."""
    if versus:
        return list(runs), list(versus)
    if len(runs) != 2:
        raise LalmbenchError(f"compare takes two runs (RUN_A RUN_B), got {len(runs)}: {' '.join(runs)}; to compare "
                             "groups of runs, list A's runs and then --vs and B's runs")
    return [runs[0]], [runs[1]]
