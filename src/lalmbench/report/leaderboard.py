"""The challenge ranking over several runs (docs/protocol.md, "Ranking in the challenge").

Flow: the paths given -> the finished run directories and seed groups in or below them (`collect_runs`;
an unfinished one, without scores.tsv or COMPLETED, is skipped with a note) -> each becomes an `Entry`
(scores.tsv + run_summary.json for the encoder name, metrics and whether the evaluation was partial)
-> entries are split into boards by what they were scored on: the same set of tasks, and the same
`--limit` (a partial evaluation is never ranked beside a full one) -> `--baselines` adds the published
Dasheng-base and Whisper-base rows to a board whose task set is a published suite's (task1, task2 or
all), with their scores on that suite's tasks only -> per board, `build_leaderboard` maps every task's
raw score linearly onto [0, 1] across the entries that have it (worst 0, best 1; which is best is the
metric spec's `higher_is_better`, metrics/spec.py) and averages the
normalized scores per track: Track A = the task1 classification tasks, Track B = the task2 open-ended
tasks (tasks outside both suites join a track by their metric). Each track is ranked on its own; the
tables are printed, and written as leaderboard.csv and leaderboard.md only into `--output-dir`.

Why boards: the normalization puts every entry on the scale of the others, so entries scored on other
tasks (a 3-task synthetic run beside baselines scored on 15 other tasks) would be ranked by numbers that
measure different things. Runs of another task set are listed in a board of their own, with a note.

Rules the protocol leaves open, fixed here:
- A task where every entry has the same raw score (or only one entry has it) normalizes to 1.0 for
  all of them: nobody did worse than anybody else.
- `build_leaderboard` itself accepts entries with different tasks (a library caller's choice): an entry
  that misses some of a track's tasks keeps the mean over the tasks it has, is flagged, and lists what
  it misses. An entry with none of a track's tasks is not ranked in that track. The command never
  builds such a board (boards hold one task set).
- Equal track means share a rank (1, 1, 3).

Seed groups: a seed-group directory (`lalmbench run --seeds N`) is one entry; its raw score on a task is
the mean over its seeds, shown with their standard deviation (report/run_groups.py).

Protocols: runs scored under different protocols (`official`, `corrected`, or none recorded by an older
lalmbench; the published baselines are `official`) are not ranked together unless asked
(`mixed_protocols`): the protocol changes the scores themselves, so one ranking would mix two scales.

Rank stability (`rank_stability`): every task's test set is resampled (its clips, drawn as in
report/confidence.py, the same draws for every entry that answered them; a seed group's seeds as well),
the min-max normalization and the track means are recomputed, and each entry's rank is counted: the
share of resamples in which it keeps its rank, and the central 95% of its ranks. Entries without kept
answers (the published baselines) keep their raw scores fixed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from lalmbench.errors import LalmbenchError
from lalmbench.io_utils import atomic_write_text
from lalmbench.report.baselines import PUBLISHED_BASELINES, task_key, track_of
from lalmbench.report.confidence import (DEFAULT_RESAMPLES, DEFAULT_SEED, LEVEL, clip_index, predictions_path,
                                         read_answers, resample_scores, resamples_for, run_task_statistic,
                                         task_rng)
from lalmbench.report.run_groups import (SEED_GROUP_FILE, UNRECORDED, RunRecord, check_same_identity, check_settings,
                                         read_record, set_aside_reason, setting_differences)

TRACKS = ("A", "B")
TRACK_TITLES = {"A": "Track A (classification, task1)", "B": "Track B (open-ended, task2)"}
TIE_SCORE = 1.0  # normalized score of every entry on a task where all raw scores are equal
BASELINE_PROTOCOL = "official"  # the published numbers come from the published system
SEED_DRAW_STREAM = 0x5EED  # the seed draws' own random stream (as in report/compare.py)


@dataclass
class Entry:
    """One ranked row: a run directory or a published baseline."""

    name: str
    source: str  # the run directory, or "published baseline"
    scores: dict[str, float]  # task key (no `eval_` prefix) -> raw score
    metrics: dict[str, str] = field(default_factory=dict)  # task key -> metric name, when known
    notes: list[str] = field(default_factory=list)  # e.g. "run not completed"
    protocol: str = UNRECORDED
    members: list[RunRecord] = field(default_factory=list)  # the runs behind it (several for a seed group)
    task_names: dict[str, str] = field(default_factory=dict)  # task key -> eval task name (its predictions file)
    spread: dict[str, float] = field(default_factory=dict)  # task key -> standard deviation over the seeds
    partial: dict | None = None  # run_summary.json "partial" ({"limit": N}) of a `run --limit` evaluation

    def scored_on(self) -> tuple[frozenset[str], int | None]:
        """What the entry's scores measure: its tasks and the --limit of its evaluation (None: full)."""
        return frozenset(self.scores), (self.partial or {}).get("limit")


@dataclass
class TrackResult:
    rank: int | None  # None: the entry has none of this track's tasks
    score: float | None  # mean normalized score over the tasks the entry has
    tasks_present: int
    tasks_total: int
    missing: list[str]


@dataclass
class RankStability:
    kept: float  # share of resamples in which the entry has its full-data rank
    low: int  # the central 95% of its resampled ranks
    high: int


@dataclass
class Leaderboard:
    entries: list[Entry]
    tracks: dict[str, list[str]]  # track -> its task keys (union over entries), sorted
    other_tasks: list[str]  # tasks in no track (shown, not ranked)
    normalized: list[dict[str, float]]  # per entry: task key -> normalized score
    results: list[dict[str, TrackResult]]  # per entry: track -> result
    stability: list[dict[str, RankStability]] | None = None  # per entry: track -> rank stability
    resamples: int = 0
    notes: list[str] = field(default_factory=list)  # about the whole board (mixed protocols, fixed scores)
    title: str = ""  # what its entries were scored on (several boards: each has its own)
    higher_is_better: dict[str, bool] = field(default_factory=dict)  # task key -> its metric's direction

    def ranked(self, track: str) -> list[int]:
        """Entry indices of `track`, best first; entries without the track's tasks last."""
        order = range(len(self.entries))
        return sorted(order, key=lambda i: (self.results[i][track].rank is None,
                                            self.results[i][track].rank or 0, self.entries[i].name))


def _read_scores_tsv(path: Path) -> dict[str, float]:
    scores: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if reader.fieldnames is None or "Task" not in reader.fieldnames or "score" not in reader.fieldnames:
            raise LalmbenchError(f"{path} is not a lalmbench scores file: expected a header 'Task<TAB>score"
                                 f"<TAB>weight', got {reader.fieldnames}")
        for row in reader:
            task = (row.get("Task") or "").strip()
            if not task or task.lower() == "overall":
                continue
            try:
                value = float(row["score"])
            except (TypeError, ValueError):
                continue  # an unparsable score counts as missing
            if math.isfinite(value):
                scores[task_key(task)] = value
    return scores


def read_run(run_dir: str | Path) -> Entry:
    """An Entry from a run directory (see the run directory layout in docs/HELPERS.md)."""
    run_dir = Path(run_dir)
    scores_path = run_dir / "scores.tsv"
    if not scores_path.is_file():
        raise LalmbenchError(f"{run_dir} has no scores.tsv; pass run directories written by `lalmbench run` "
                             "(<output_dir>/<train config>/<encoder>/)")
    scores = _read_scores_tsv(scores_path)
    name, metrics, notes, task_names, protocol, members = run_dir.name, {}, [], {}, UNRECORDED, []
    partial = None
    summary_path = run_dir / "run_summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
            notes.append("unreadable run_summary.json")
        name = str(summary.get("encoder_name") or name)
        protocol = str(summary.get("protocol") or UNRECORDED)
        for task, info in (summary.get("tasks") or {}).items():
            task_names[task_key(task)] = task
            if isinstance(info, dict) and info.get("metric"):
                metrics[task_key(task)] = str(info["metric"])
        if summary.get("train_config"):
            notes.append(f"train config {summary['train_config']}")
        if summary.get("tasks"):
            members = [read_record(run_dir)]
        partial = summary.get("partial") if isinstance(summary.get("partial"), dict) else None
        if partial:
            notes.append(f"partial evaluation: {partial_text(partial)}")
    if not (run_dir / "COMPLETED").exists():
        notes.append("run not marked COMPLETED")
    return Entry(name=name, source=str(run_dir), scores=scores, metrics=metrics, notes=notes, protocol=protocol,
                 members=members, task_names=task_names, partial=partial)


def partial_text(partial: dict) -> str:
    return f"first {partial.get('limit')} test examples per task (--limit {partial.get('limit')})"


def read_seed_group(run_dirs: list[Path], group_dir: Path | None = None) -> Entry:
    """One Entry for several seeds of one identity: mean raw score per task, spread over the seeds.
    `group_dir`: the seed-group directory listing them (its runs may sit in another group's directory)."""
    import statistics

    if len(run_dirs) == 1:
        return read_run(run_dirs[0])
    runs = [read_run(run_dir) for run_dir in run_dirs]
    records = [record for run in runs for record in run.members]
    if len(records) != len(runs):
        raise LalmbenchError(f"a seed group needs run_summary.json in every run; {', '.join(map(str, run_dirs))} "
                             "are not all finished runs")
    check_same_identity(records, f"seed group of {records[0].name}")
    if len({json.dumps(run.partial, sort_keys=True) for run in runs}) > 1:
        raise LalmbenchError(f"the runs of the seed group in {Path(run_dirs[0]).parent} were evaluated on different "
                             f"test examples ({', '.join(str(run.partial or 'full') for run in runs)}); a group's "
                             "seeds must be scored alike")
    common = [task for task in runs[0].scores if all(task in run.scores for run in runs)]
    parents = {Path(run_dir).parent for run_dir in run_dirs}
    source = (str(group_dir) if group_dir is not None else str(parents.pop()) if len(parents) == 1
              else ", ".join(map(str, run_dirs)))
    notes = sorted({note for run in runs for note in run.notes})
    dropped = sorted({task for run in runs for task in run.scores} - set(common))
    if dropped:
        notes.append(f"tasks not in every seed left out: {', '.join(dropped)}")
    return Entry(name=f"{runs[0].name} ({len(runs)} seeds)", source=source,
                 scores={t: statistics.fmean(run.scores[t] for run in runs) for t in common},
                 metrics=runs[0].metrics, notes=notes, protocol=runs[0].protocol, members=records,
                 task_names=runs[0].task_names,
                 spread={t: statistics.stdev(run.scores[t] for run in runs) for t in common}, partial=runs[0].partial)


def baseline_entries(tasks: frozenset[str] | None = None) -> list[Entry]:
    """The published rows, with their scores on `tasks` only (None: all 20)."""
    return [Entry(name=f"{name} (published)", source="published baseline",
                  scores={t: v for t, v in scores.items() if tasks is None or t in tasks},
                  protocol=BASELINE_PROTOCOL) for name, scores in PUBLISHED_BASELINES.items()]


# -- which directories are ranked ---------------------------------------------------------------------------------
RUN_MARKERS = ("scores.tsv", "run_identity.json", "training_complete.json")  # files only a run directory holds
PARTIAL = re.compile(r"^limit-\d+$")  # a `run --limit N` evaluation inside its run directory


def _is_partial_evaluation(path: Path) -> bool:
    return bool(PARTIAL.match(path.name)) and any((path.parent / marker).is_file() for marker in RUN_MARKERS)


def unfinished_reason(run_dir: Path) -> str | None:
    """Why a run directory cannot be ranked yet; None when it can."""
    if not (run_dir / "scores.tsv").is_file():
        partial = sorted(p.parent.name for p in run_dir.glob("limit-*/scores.tsv"))
        hint = (f"; it holds the partial evaluation(s) {', '.join(partial)}: pass that directory to rank it"
                if partial else "")
        return f"no scores.tsv (training or evaluation not finished){hint}"
    if not (run_dir / "COMPLETED").is_file():
        return "no COMPLETED marker (the run stopped before it finished)"
    return None


def _seed_group_members(group_dir: Path) -> list[Path]:
    try:
        runs = json.loads((group_dir / SEED_GROUP_FILE).read_text(encoding="utf-8")).get("runs") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise LalmbenchError(f"{group_dir / SEED_GROUP_FILE} is not readable ({exc}); the seed group is damaged") from exc
    return [Path(os.path.normpath(group_dir / run)) for run in runs]  # a run of another group's directory: ../


def collect_runs(paths: list[str | Path]) -> tuple[list[tuple[list[Path], Path | None]], list[str], list[str]]:
    """The entries to rank (each a list of run directories, one run or a seed group's runs, with the
    seed-group directory or None), a note for every run or seed group skipped (unfinished, or moved aside
    by `run --force`: never ranked), and notes on what a directory scan leaves out. A path is a run directory, a seed-group directory (`run --seeds`),
    or any directory: then every run and seed group below it, except partial evaluations (`run --limit`,
    `<run>/limit-N/`), which are ranked only when named (each then in a board of its own). A seed group's
    runs are not entries of their own."""
    entries: list[list[Path]] = []
    skipped: list[str] = []
    partial_left: list[Path] = []
    group_of: dict[int, Path] = {}  # entry index -> its seed-group directory
    seen: set[Path] = set()

    def add(members: list[Path], group: Path | None = None) -> None:
        key = {member.resolve() for member in members}
        if not key & seen:
            if group is not None:
                group_of[len(entries)] = group
            entries.append(members)
            seen.update(key)

    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise LalmbenchError(f"{path} does not exist; pass run directories written by `lalmbench run` "
                                 "(<output_dir>/<train config>/<encoder>/) or a directory above them")
        if (path / SEED_GROUP_FILE).is_file():
            groups, singles = [path], []
        elif any((path / marker).is_file() for marker in RUN_MARKERS):
            groups, singles = [], [path]
        elif path.is_dir():
            groups = sorted(p.parent for p in path.rglob(SEED_GROUP_FILE))
            below = sorted({p.parent for marker in RUN_MARKERS for p in path.rglob(marker)})
            singles = [d for d in below if not any(g.resolve() in d.resolve().parents for g in groups)]
            partial_left += [d for d in singles if _is_partial_evaluation(d) and not set_aside_reason(d)]
            singles = [d for d in singles if not _is_partial_evaluation(d)]
            if not groups and not singles:
                raise LalmbenchError(f"{path} is not a run directory (no scores.tsv in it or below it)")
        else:
            raise LalmbenchError(f"{path} is not a run directory (no scores.tsv in it or below it)")
        for group in groups:
            members = _seed_group_members(group)
            reasons = [f"{member.name}: {why}" for member in members
                       if (why := set_aside_reason(member) or unfinished_reason(member))]
            if reasons:
                skipped.append(f"seed group {group}: {'; '.join(reasons)}")
            elif members:
                add(members, group)
        for run_dir in singles:
            why = set_aside_reason(run_dir) or unfinished_reason(run_dir)
            if why:
                skipped.append(f"{run_dir}: {why}")
            else:
                add([run_dir])
    notes = []
    if partial_left:
        notes.append("Partial evaluations (`run --limit`) are not ranked from a directory scan: "
                     + ", ".join(map(str, partial_left)) + ". Pass one by its path to rank it in a board of its own "
                     "(a partial evaluation is never ranked beside a full one).")
    return [(members, group_of.get(i)) for i, members in enumerate(entries)], skipped, notes


# -- boards: entries scored on the same tasks ---------------------------------------------------------------------
def suite_tasks() -> dict[str, frozenset[str]]:
    """Task keys of every built-in suite (task1, task2, all, extended)."""
    from lalmbench.tasks.catalog import load_catalog

    catalog = load_catalog()
    return {suite: frozenset(task_key(d.eval_name) for d in catalog.suite_datasets(suite)) for suite in catalog.suites}


def describe_scored_on(tasks: frozenset[str], limit: int | None) -> str:
    suite = next((name for name, members in suite_tasks().items() if members == tasks), None)
    text = (f"suite {suite} ({len(tasks)} tasks)" if suite else
            f"{len(tasks)} task{'s' if len(tasks) != 1 else ''}: {', '.join(sorted(tasks))}")
    return text + (f"; partial, {partial_text({'limit': limit})}" if limit is not None else "")


def _baseline_suite(tasks: frozenset[str], limit: int | None) -> str | None:
    """The published suite a board's task set is, when the published baselines can stand beside it."""
    if limit is not None:
        return None
    return next((suite for suite, members in suite_tasks().items()
                 if members == tasks and all(members <= set(scores) for scores in PUBLISHED_BASELINES.values())),
                None)


@dataclass
class LeaderboardSet:
    """What `lalmbench leaderboard` shows: one board per task set, and what was left out and why."""

    boards: list[Leaderboard]
    notes: list[str] = field(default_factory=list)  # boards split, baselines not shown beside some board
    skipped: list[str] = field(default_factory=list)  # unfinished runs and seed groups


def leaderboard_tables(run_dirs: list[str], baselines: bool = False, mixed_protocols: bool = False,
                       resamples: int = 0, seed: int = DEFAULT_SEED,
                       allow_different_settings: bool = False) -> LeaderboardSet:
    """Read the finished runs below `run_dirs`, split them into boards of one task set and one --limit,
    add the published baselines beside runs of their suite, rank each board and, with `resamples`,
    measure how stable each rank is. Every setting that differs between a board's runs is stated;
    another max_steps, decoder or data revision is refused unless `allow_different_settings`."""
    groups, skipped, scan_notes = collect_runs(run_dirs)
    if not groups:
        raise LalmbenchError("no finished run to rank; skipped:\n  " + "\n  ".join(skipped + scan_notes))
    by_scored_on: dict[tuple[frozenset[str], int | None], list[Entry]] = {}
    for members, group_dir in groups:
        entry = read_seed_group(members, group_dir)
        by_scored_on.setdefault(entry.scored_on(), []).append(entry)
    notes = list(scan_notes)
    if len(by_scored_on) > 1:
        notes.append(f"These runs were scored on {len(by_scored_on)} different sets of tasks or test examples; each "
                     "set is ranked in a board of its own (normalized scores compare only runs scored on the same "
                     "tasks).")
    boards, without_baselines = [], []
    # Full evaluations first, a published suite's board first among them, then the larger task sets.
    order = sorted(by_scored_on, key=lambda key: (key[1] is not None, _baseline_suite(*key) is None, -len(key[0])))
    for tasks, limit in order:
        entries = by_scored_on[(tasks, limit)]
        suite = _baseline_suite(tasks, limit)
        if baselines and suite:
            entries = entries + baseline_entries(tasks)
        elif baselines:
            without_baselines.append(describe_scored_on(tasks, limit))
        boards.append(_ranked_board(entries, mixed_protocols, resamples, seed,
                                    title=describe_scored_on(tasks, limit),
                                    allow_different_settings=allow_different_settings))
    if without_baselines:
        notes.append("The published baselines are scored on the full test sets of task1, task2 (all: both), so they "
                     "stand only beside runs scored on exactly one of those suites; not beside runs scored on "
                     + "; ".join(without_baselines) + ".")
    return LeaderboardSet(boards=boards, notes=notes, skipped=skipped)


def _ranked_board(entries: list[Entry], mixed_protocols: bool, resamples: int, seed: int, title: str,
                  allow_different_settings: bool = False) -> Leaderboard:
    notes = check_protocols(entries, mixed_protocols)
    board = build_leaderboard(entries)  # names made unique: they label the settings below
    # Each run's training and evaluation settings (a seed group's first run stands for it: they share them).
    labelled = [(entry.name, entry.members[0]) for entry in board.entries if entry.members]
    notes += check_settings(labelled, allow_different_settings, "ranked")
    by_name = {entry.name: entry for entry in board.entries}
    for difference in setting_differences(labelled):  # each entry's own value, in its flags and CSV notes
        for name, value in difference.values.items():
            by_name[name].notes.append(f"{difference.name} {value}")
    board.notes += notes
    board.title = title
    answered = any(predictions_path(record.run_dir, name).is_file() for entry in entries
                   for record in entry.members for name in entry.task_names.values())
    if resamples > 0 and answered:
        board.stability, held = rank_stability(board, resamples, seed)
        board.resamples = resamples
        if held:
            board.notes.append("Held at their raw scores in the rank resampling: " + "; ".join(held) + ".")
    return board


def check_protocols(entries: list[Entry], mixed_protocols: bool) -> list[str]:
    """Refuse entries of different protocols unless `mixed_protocols`; then a note says they are mixed."""
    by_protocol: dict[str, list[str]] = {}
    for entry in entries:
        by_protocol.setdefault(entry.protocol, []).append(entry.name)
    if len(by_protocol) <= 1:
        return []
    listing = "; ".join(f"{protocol}: {', '.join(names)}" for protocol, names in sorted(by_protocol.items()))
    if not mixed_protocols:
        raise LalmbenchError(
            f"these runs were scored under different protocols ({listing}). The protocol changes the scores "
            "themselves (data, encoder mode, metric parsing; README, \"Protocols\"), so one ranking would mix two "
            "scales. Rank the runs of one protocol at a time (the published baselines are official), or pass "
            "--mixed-protocols to rank them together anyway.")
    return [f"Protocols are mixed ({listing}): differences between them are partly the protocol's."]


def _unique_names(entries: list[Entry]) -> None:
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.name] = counts.get(entry.name, 0) + 1
    for entry in entries:
        if counts[entry.name] > 1:
            entry.name = f"{entry.name} [{entry.source}]"


def _directions(entries: list[Entry], tasks: list[str], ranked: set[str]) -> tuple[dict[str, bool], list[str]]:
    """Task -> whether its metric's higher scores are better (the metric's spec), and notes on the ranked
    tasks whose metric ranks lower scores higher or is not registered in this process (taken as
    higher-is-better)."""
    from lalmbench import metrics

    directions, unknown, lower = {}, [], []
    for task in tasks:
        metric = next((e.metrics[task] for e in entries if task in e.metrics), None)
        try:
            directions[task] = metrics.get(metric).higher_is_better if metric else True
        except KeyError:
            directions[task] = True
            unknown += [f"{task} ({metric})"] if task in ranked else []
        if not directions[task] and task in ranked:
            lower.append(f"{task} ({metric})")
    notes = [f"Metrics not registered here, ranked as higher-is-better: {', '.join(unknown)}; register them "
             "(lalmbench.metrics.register, docs/metrics.md) before ranking."] if unknown else []
    if lower:
        notes.append(f"Lower raw scores are better on {', '.join(lower)}: there the lowest normalizes to 1.")
    return directions, notes


def _track_ranks(raw: pd.DataFrame, tracks: dict[str, list[str]],
                 higher_is_better: dict[str, bool]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Normalized scores, track means and track ranks of `raw`: a row per (draw, entry), a column per task,
    NaN where the entry has no score. A draw (the full data, or one resample) is normalized and ranked on
    its own: the best raw score -> 1, the worst -> 0 (the lowest is best for a lower-is-better metric)."""
    signs = pd.Series({task: 1.0 if higher_is_better.get(task, True) else -1.0 for task in raw.columns}, dtype=float)
    oriented = raw.mul(signs, axis="columns")  # the best score is now the highest on every task
    by_draw = oriented.groupby(level="draw")
    low = by_draw.transform("min")
    span = by_draw.transform("max") - low
    # A task where all entries have the same score (0 / NaN here) normalizes to TIE_SCORE for all of them.
    normalized = ((oriented - low) / span.where(span > 0)).fillna(TIE_SCORE).where(raw.notna())
    means = pd.DataFrame({track: normalized[tasks].mean(axis=1) for track, tasks in tracks.items()})
    ranks = means.groupby(level="draw").rank(method="min", ascending=False)  # ties share a rank: 1, 1, 3
    return normalized, means, ranks


def build_leaderboard(entries: list[Entry]) -> Leaderboard:
    """Normalize every task across `entries`, average per track, rank each track."""
    if not entries:
        raise LalmbenchError("no runs to rank; pass at least one run directory (or --baselines)")
    _unique_names(entries)
    all_tasks = sorted({task for entry in entries for task in entry.scores})
    tracks: dict[str, list[str]] = {track: [] for track in TRACKS}
    other: list[str] = []
    for task in all_tasks:
        metric = next((e.metrics[task] for e in entries if task in e.metrics), None)
        track = track_of(task, metric)
        (tracks[track] if track in tracks else other).append(task)

    directions, notes = _directions(entries, all_tasks, {t for track in TRACKS for t in tracks[track]})
    one_draw = pd.MultiIndex.from_product([[0], range(len(entries))], names=["draw", "entry"])
    raw = pd.DataFrame([entry.scores for entry in entries], columns=all_tasks, index=one_draw, dtype=float)
    table, means, ranks = (frame.droplevel("draw") for frame in _track_ranks(raw, tracks, directions))
    normalized = [{task: float(value) for task, value in row.dropna().items()} for _, row in table.iterrows()]
    results = [{track: TrackResult(rank=None if pd.isna(ranks.at[i, track]) else int(ranks.at[i, track]),
                                   score=None if pd.isna(means.at[i, track]) else float(means.at[i, track]),
                                   tasks_present=sum(t in normalized[i] for t in tasks), tasks_total=len(tasks),
                                   missing=[t for t in tasks if t not in normalized[i]])
                for track, tasks in tracks.items()} for i in range(len(entries))]
    return Leaderboard(entries=entries, tracks=tracks, other_tasks=other, normalized=normalized, results=results,
                       notes=notes, higher_is_better=directions)


def _seed_picks(count: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(count, resamples): which of an entry's seeds stands in each place of each resample."""
    if count <= 1:
        return np.zeros((1, resamples), dtype=np.int64)
    return rng.integers(0, count, size=(count, resamples))


def _resampled_task(board: Leaderboard, task: str, picks: list[np.ndarray], resamples: int, seed: int,
                    held: list[str]) -> dict[int, np.ndarray]:
    """Entry index -> its resampled raw scores on `task`, for the entries with kept answers."""
    runs: list[tuple[int, RunRecord, str]] = []
    for i, entry in enumerate(board.entries):
        name = entry.task_names.get(task)
        if task not in entry.scores or not entry.members or name is None:
            continue
        if not all(name in record.tasks and predictions_path(record.run_dir, name).is_file()
                   for record in entry.members):
            held.append(f"{entry.name}: {task} (no kept answers)")
            continue
        runs += [(i, record, name) for record in entry.members]
    universe: dict[str, int] = {}
    answers = [read_answers(record.run_dir, name) for _, record, name in runs]
    row_clips = [clip_index(run_answers.keys, universe)[0] for run_answers in answers]
    statistics, owners, failed = [], [], set()
    for (i, record, name), run_answers, clips in zip(runs, answers, row_clips):
        spec = record.tasks[name]
        # A run older than the protocol setting was scored by lalmbench's own rules, now `corrected`.
        protocol = "corrected" if record.protocol == UNRECORDED else record.protocol
        try:
            statistics.append(run_task_statistic(record.run_dir, name, spec.metric, spec.metric_args, protocol,
                                                 spec.score, answers=run_answers, row_clips=clips,
                                                 n_clips=len(universe)))
            owners.append(i)
        except Exception as exc:  # e.g. caption scores with no per-item scores kept and no models here
            if i not in failed:
                held.append(f"{board.entries[i].name}: {task} ({type(exc).__name__}: {exc})")
            failed.add(i)
    if not statistics:
        return {}
    values = resample_scores(statistics, len(universe), resamples_for(statistics, resamples), task_rng(seed, task))
    out = {}
    for i in sorted(set(owners) - failed):
        own = values[[k for k, owner in enumerate(owners) if owner == i]]
        out[i] = np.take_along_axis(own, picks[i][:, :values.shape[1]], axis=0).mean(axis=0)
    return out


def rank_stability(board: Leaderboard, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                   level: float = LEVEL) -> tuple[list[dict[str, RankStability]], list[str]]:
    """How often each entry keeps its track ranks when every task's test set is resampled (module
    docstring); also the entries and tasks held at their raw scores, and why."""
    entries = board.entries
    seed_rng = np.random.default_rng([int(seed), SEED_DRAW_STREAM])
    picks = [_seed_picks(len(entry.members), resamples, seed_rng) for entry in entries]
    held: list[str] = []
    raw: dict[str, np.ndarray] = {}
    count = resamples
    for task in [t for track in TRACKS for t in board.tracks[track]]:
        values = np.full((len(entries), resamples), np.nan)
        for i, entry in enumerate(entries):
            if task in entry.scores:
                values[i] = entry.scores[task]
        for i, resampled in _resampled_task(board, task, picks, resamples, seed, held).items():
            values[i, :len(resampled)] = resampled
            count = min(count, len(resampled))
        raw[task] = values
    draws = pd.MultiIndex.from_product([range(count), range(len(entries))], names=["draw", "entry"])
    resampled = pd.DataFrame({task: values[:, :count].T.ravel() for task, values in raw.items()}, index=draws)
    _, _, ranks = _track_ranks(resampled, board.tracks, board.higher_is_better)
    stability: list[dict[str, RankStability]] = [{} for _ in entries]
    tail = (1.0 - level) / 2.0
    for track in TRACKS:
        by_entry = ranks[track].unstack("entry").to_numpy()  # (resamples, entries)
        for i in range(len(entries)):
            rank = board.results[i][track].rank
            if rank is None:
                continue
            low_rank, high_rank = np.quantile(by_entry[:, i], [tail, 1.0 - tail], method="inverted_cdf")
            stability[i][track] = RankStability(float(np.mean(by_entry[:, i] == rank)), int(low_rank), int(high_rank))
    return stability, held


def leaderboard_table(run_dirs: list[str], baselines: bool = False, mixed_protocols: bool = False,
                      resamples: int = 0, seed: int = DEFAULT_SEED, allow_different_settings: bool = False) -> Leaderboard:
    """The one board of runs scored on the same tasks (`leaderboard_tables`); an error when the runs need
    several. Notes about skipped runs and baselines left out go into the board's notes."""
    found = leaderboard_tables(run_dirs, baselines=baselines, mixed_protocols=mixed_protocols,
                               resamples=resamples, seed=seed, allow_different_settings=allow_different_settings)
    if len(found.boards) > 1:
        raise LalmbenchError("these runs need separate boards: " + " | ".join(board.title for board in found.boards)
                             + "; use leaderboard_tables")
    board = found.boards[0]
    board.notes = found.notes + [f"Skipped: {note}" for note in found.skipped] + board.notes
    return board


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _csv_frame(board: Leaderboard) -> pd.DataFrame:
    """A row per entry in Track A's order (Track B's without Track A), its cells formatted; None: empty."""
    tasks = [t for track in TRACKS for t in board.tracks[track]] + board.other_tasks
    spread = any(entry.spread for entry in board.entries)
    fixed = lambda value, digits=6: None if value is None else f"{value:.{digits}f}"
    rows = []
    for i in board.ranked("A") if board.tracks["A"] else board.ranked("B"):
        entry = board.entries[i]
        row = {"encoder": entry.name, "source": entry.source, "protocol": entry.protocol,
               "seeds": max(1, len(entry.members))}
        for track in TRACKS:
            result = board.results[i][track]
            stable = board.stability[i].get(track) if board.stability else None
            kept, low, high = (None,) * 3 if stable is None else (fixed(stable.kept, 4), stable.low, stable.high)
            row |= {f"track_{track}_rank": result.rank, f"track_{track}_rank_kept": kept,
                    f"track_{track}_rank_low": low, f"track_{track}_rank_high": high,
                    f"track_{track}_score": fixed(result.score),
                    f"track_{track}_tasks": f"{result.tasks_present}/{result.tasks_total}",
                    f"track_{track}_missing": ";".join(result.missing)}
        row |= {f"{t}_raw": entry.scores.get(t) for t in tasks}  # written in full (repr)
        row |= {f"{t}_normalized": fixed(board.normalized[i].get(t)) for t in tasks}
        row |= {f"{t}_seed_sd": fixed(entry.spread.get(t)) for t in tasks} if spread else {}
        rows.append(row | {"notes": "; ".join(entry.notes)})
    return pd.DataFrame(rows, dtype=object)  # object: a rank stays 1, not 1.0 beside an empty one


def to_csv(board: Leaderboard) -> str:
    return _csv_frame(board).to_csv(index=False, lineterminator="\n")


def set_to_csv(found: LeaderboardSet) -> str:
    """Every board's rows in one table: `board` says what the row's ranks and normalized scores are
    relative to (they compare only rows of the same board); task columns are the union of the boards'."""
    table = pd.concat([_csv_frame(board) for board in found.boards], keys=[board.title for board in found.boards],
                      names=["board"], sort=False)
    return table.reset_index(level="board").to_csv(index=False, lineterminator="\n")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table (tabulate's pipe format, columns aligned); a "|" in a cell is escaped."""
    escape = lambda cells: [cell.replace("|", "\\|") for cell in cells]
    # disable_numparse: a cell such as "0.750" stays as written (tabulate would print 0.75)
    return tabulate([escape(row) for row in rows], escape(header), tablefmt="pipe", disable_numparse=True).splitlines()


def _stability_text(stable: RankStability | None) -> str:
    if stable is None:
        return "-"
    spread = "" if stable.low == stable.high else f" ({stable.low}–{stable.high})"
    return f"{stable.kept:.0%}{spread}"


def _task_cell(normalized: float, raw: float, spread: float | None) -> str:
    return f"{normalized:.3f} ({raw:.3f}" + ("" if spread is None else f" ±{spread:.3f}") + ")"


def _intro(resamples: int) -> list[str]:
    lines = ["# Leaderboard", "",
             "Each task's raw score is mapped linearly to [0, 1] across the entries below (worst 0, best 1; "
             f"a task where all entries tie gives {TIE_SCORE:g}); a track score is the plain mean of its "
             "normalized task scores. `*` marks an entry that misses some of the track's tasks: its mean "
             "covers only the tasks it has.", ""]
    if resamples:
        lines += [f"Rank kept: the share of {resamples} resamples (every task's test clips drawn again, "
                  "the normalization and the means recomputed) in which the entry keeps its rank, and in "
                  "brackets the central 95% of its ranks.", ""]
    return lines


def _board_lines(board: Leaderboard, level: int) -> list[str]:
    """A board's notes and tables, its sections headed at markdown `level` (2: ##)."""
    heading = "#" * level
    lines = [f"> {note}" for note in board.notes] + ([""] if board.notes else [])
    for track in TRACKS:
        tasks = board.tracks[track]
        lines += [f"{heading} {TRACK_TITLES[track]}", ""]
        if not tasks:
            lines += ["No entry has a task of this track.", ""]
            continue
        head = ["rank"] + (["rank kept"] if board.stability else []) + ["encoder", "score", "tasks"]
        rows = []
        for i in board.ranked(track):
            entry, result = board.entries[i], board.results[i][track]
            flag = " *" if result.missing and result.rank is not None else ""
            cells = ["-" if result.rank is None else str(result.rank)]
            if board.stability:
                cells.append(_stability_text(board.stability[i].get(track)))
            cells += [entry.name + flag, _fmt(result.score), f"{result.tasks_present}/{result.tasks_total}"]
            cells += [_task_cell(board.normalized[i][t], entry.scores[t], entry.spread.get(t))
                      if t in entry.scores else "missing" for t in tasks]
            rows.append(cells)
        lines += _md_table(head + tasks, rows)
        seeds_note = " A seed group's raw score is the mean over its seeds ± their standard deviation." \
            if any(entry.spread for entry in board.entries) else ""
        lines += ["", "Task cells: normalized (raw)." + seeds_note, ""]
    if board.other_tasks:
        lines += [f"{heading} Tasks in no track (not ranked)", ""]
        lines += _md_table(["encoder"] + board.other_tasks,
                           [[entry.name] + [_fmt(entry.scores.get(t)) for t in board.other_tasks]
                            for entry in board.entries]) + [""]
    flagged = [(e, r) for e, r in zip(board.entries, board.results)
               if e.notes or any(r[t].missing and r[t].rank is not None for t in TRACKS)]
    if flagged:
        lines += [f"{heading} Flags", ""]
        for entry, result in flagged:
            parts = [f"Track {t} misses {', '.join(result[t].missing)}" for t in TRACKS
                     if result[t].missing and result[t].rank is not None] + entry.notes
            lines.append(f"- {entry.name} ({entry.source}): {'; '.join(parts)}")
        lines.append("")
    return lines


def to_markdown(board: Leaderboard) -> str:
    return "\n".join(_intro(board.resamples if board.stability else 0) + _board_lines(board, 2))


def set_to_markdown(found: LeaderboardSet) -> str:
    """Every board of `found`, each under its own heading when there are several."""
    lines = _intro(max((b.resamples for b in found.boards if b.stability), default=0))
    lines += [f"> {note}" for note in found.notes] + ([""] if found.notes else [])
    if found.skipped:
        lines += ["Skipped, not finished:", ""] + [f"- {note}" for note in found.skipped] + [""]
    if len(found.boards) == 1:
        board = found.boards[0]
        return "\n".join(lines + [f"Scored on {board.title}.", ""] + _board_lines(board, 2))
    for number, board in enumerate(found.boards, start=1):
        lines += [f"## Board {number}: scored on {board.title}", ""] + _board_lines(board, 3)
    return "\n".join(lines)


def leaderboard_command(run_dirs: list[str], baselines: bool = False, output_dir: str | None = None,
                        mixed_protocols: bool = False, resamples: int = DEFAULT_RESAMPLES,
                        allow_different_settings: bool = False) -> int:
    """Print the boards; write leaderboard.csv and leaderboard.md only into `output_dir` when given."""
    found = leaderboard_tables(run_dirs, baselines=baselines, mixed_protocols=mixed_protocols, resamples=resamples,
                               allow_different_settings=allow_different_settings)
    markdown = set_to_markdown(found)
    print(markdown)
    if output_dir is None:
        print("(pass --output-dir DIR to write leaderboard.csv and leaderboard.md)", file=sys.stderr)
        return 0
    out = Path(output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path, text in ((out / "leaderboard.csv", set_to_csv(found)), (out / "leaderboard.md", markdown)):
        # An earlier board written here (other runs, other scores) is moved aside, never overwritten.
        if path.is_file() and path.read_text(encoding="utf-8") != text:
            kept, number = path.with_name(f"{path.stem}.replaced-{stamp}{path.suffix}"), 1
            while kept.exists():  # two boards replaced within a second
                number += 1
                kept = path.with_name(f"{path.stem}.replaced-{stamp}-{number}{path.suffix}")
            path.rename(kept)
            print(f"kept the earlier {path} as {kept} (it ranked other runs or scores)")
        atomic_write_text(path, text)
    print(f"wrote {out / 'leaderboard.csv'} and {out / 'leaderboard.md'}")
    return 0
