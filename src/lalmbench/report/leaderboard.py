"""The challenge ranking over several runs (PROTOCOL.md, "Ranking in the challenge").

Flow: each run directory's scores.tsv (+ run_summary.json for the encoder name and metrics) becomes an
`Entry`; `--baselines` adds the published Dasheng-base and Whisper-base rows. `build_leaderboard`
maps every task's raw score linearly onto [0, 1] across the entries that have it (worst 0, best 1)
and averages the normalized scores per track: Track A = the task1 classification tasks, Track B = the
task2 open-ended tasks (tasks outside both suites join a track by their metric). Each track is ranked
on its own; the tables are printed and written as leaderboard.csv and leaderboard.md.

Rules the protocol leaves open, fixed here:
- A task where every entry has the same raw score (or only one entry has it) normalizes to 1.0 for
  all of them: nobody did worse than anybody else.
- An entry that misses some of a track's tasks (tasks another entry has) keeps the mean over the
  tasks it has, is flagged, and lists what it misses; it is still ranked, since dropping it would
  hide it. An entry with none of a track's tasks is not ranked in that track.
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
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lalmbench.errors import LalmbenchError
from lalmbench.io_utils import atomic_write_text
from lalmbench.report.baselines import PUBLISHED_BASELINES, task_key, track_of
from lalmbench.report.confidence import (DEFAULT_RESAMPLES, DEFAULT_SEED, LEVEL, clip_index, predictions_path,
                                         read_answers, resample_scores, resamples_for, run_task_statistic,
                                         task_rng)
from lalmbench.report.run_groups import (UNRECORDED, RunRecord, check_same_identity, read_record,
                                         seed_groups_below)

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
    if not (run_dir / "COMPLETED").exists():
        notes.append("run not marked COMPLETED")
    return Entry(name=name, source=str(run_dir), scores=scores, metrics=metrics, notes=notes, protocol=protocol,
                 members=members, task_names=task_names)


def read_seed_group(run_dirs: list[Path]) -> Entry:
    """One Entry for several seeds of one identity: mean raw score per task, spread over the seeds."""
    import statistics

    if len(run_dirs) == 1:
        return read_run(run_dirs[0])
    runs = [read_run(run_dir) for run_dir in run_dirs]
    records = [record for run in runs for record in run.members]
    if len(records) != len(runs):
        raise LalmbenchError(f"a seed group needs run_summary.json in every run; {', '.join(map(str, run_dirs))} "
                             "are not all finished runs")
    check_same_identity(records, f"seed group of {records[0].name}")
    common = [task for task in runs[0].scores if all(task in run.scores for run in runs)]
    parents = {Path(run_dir).parent for run_dir in run_dirs}
    source = str(parents.pop()) if len(parents) == 1 else ", ".join(map(str, run_dirs))
    notes = sorted({note for run in runs for note in run.notes})
    dropped = sorted({task for run in runs for task in run.scores} - set(common))
    if dropped:
        notes.append(f"tasks not in every seed left out: {', '.join(dropped)}")
    return Entry(name=f"{runs[0].name} ({len(runs)} seeds)", source=source,
                 scores={t: statistics.fmean(run.scores[t] for run in runs) for t in common},
                 metrics=runs[0].metrics, notes=notes, protocol=runs[0].protocol, members=records,
                 task_names=runs[0].task_names,
                 spread={t: statistics.stdev(run.scores[t] for run in runs) for t in common})


def baseline_entries() -> list[Entry]:
    return [Entry(name=f"{name} (published)", source="published baseline", scores=dict(scores),
                  protocol=BASELINE_PROTOCOL) for name, scores in PUBLISHED_BASELINES.items()]


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


def _normalize(entries: list[Entry], task: str) -> dict[int, float]:
    values = {i: e.scores[task] for i, e in enumerate(entries) if task in e.scores}
    low, high = min(values.values()), max(values.values())
    if high == low:
        return {i: TIE_SCORE for i in values}
    return {i: (v - low) / (high - low) for i, v in values.items()}


def _competition_ranks(scores: dict[int, float]) -> dict[int, int]:
    ordered = sorted(scores.values(), reverse=True)
    return {i: 1 + sum(other > s for other in ordered) for i, s in scores.items()}


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

    normalized: list[dict[str, float]] = [{} for _ in entries]
    for task in all_tasks:
        for i, value in _normalize(entries, task).items():
            normalized[i][task] = value

    results: list[dict[str, TrackResult]] = [{} for _ in entries]
    for track, tasks in tracks.items():
        means: dict[int, float] = {}
        for i in range(len(entries)):
            present = [t for t in tasks if t in normalized[i]]
            if present:
                means[i] = sum(normalized[i][t] for t in present) / len(present)
        ranks = _competition_ranks(means)
        for i in range(len(entries)):
            results[i][track] = TrackResult(
                rank=ranks.get(i), score=means.get(i), tasks_present=sum(t in normalized[i] for t in tasks),
                tasks_total=len(tasks), missing=[t for t in tasks if t not in normalized[i]])
    return Leaderboard(entries=entries, tracks=tracks, other_tasks=other, normalized=normalized, results=results)


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
    stability: list[dict[str, RankStability]] = [{} for _ in entries]
    tail = (1.0 - level) / 2.0
    for track in TRACKS:
        if not board.tracks[track]:
            continue
        normalized = []
        for task in board.tracks[track]:
            values = raw[task][:, :count]
            with np.errstate(invalid="ignore"):
                low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
            span = high - low
            scaled = np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), TIE_SCORE)
            normalized.append(np.where(np.isnan(values), np.nan, scaled))
        stack = np.stack(normalized)  # (tasks, entries, resamples)
        present = (~np.isnan(stack)).sum(axis=0)
        means = np.where(present > 0, np.nansum(stack, axis=0) / np.maximum(present, 1), np.nan)
        # Rank = 1 + the number of entries with a higher mean (ties share a rank), in every resample.
        ranks = 1 + (means[None, :, :] > means[:, None, :]).sum(axis=1)
        for i in range(len(entries)):
            rank = board.results[i][track].rank
            if rank is None:
                continue
            low_rank, high_rank = np.quantile(ranks[i], [tail, 1.0 - tail], method="inverted_cdf")
            stability[i][track] = RankStability(float(np.mean(ranks[i] == rank)), int(low_rank), int(high_rank))
    return stability, held


def leaderboard_table(run_dirs: list[str], baselines: bool = False, mixed_protocols: bool = False,
                      resamples: int = 0, seed: int = DEFAULT_SEED) -> Leaderboard:
    """The library entry point: read the runs (plus published baselines), rank them, and, with
    `resamples`, measure how stable each rank is."""
    entries = [read_seed_group(members) for members in seed_groups_below(run_dirs)]
    if baselines:
        entries += baseline_entries()
    notes = check_protocols(entries, mixed_protocols)
    board = build_leaderboard(entries)
    board.notes += notes
    answered = any(predictions_path(record.run_dir, name).is_file() for entry in entries
                   for record in entry.members for name in entry.task_names.values())
    if resamples > 0 and answered:
        board.stability, held = rank_stability(board, resamples, seed)
        board.resamples = resamples
        if held:
            board.notes.append("Held at their raw scores in the rank resampling: " + "; ".join(held) + ".")
    return board


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def to_csv(board: Leaderboard) -> str:
    tasks = [t for track in TRACKS for t in board.tracks[track]] + board.other_tasks
    spread = any(entry.spread for entry in board.entries)
    header = ["encoder", "source", "protocol", "seeds"]
    for track in TRACKS:
        header += [f"track_{track}_rank", f"track_{track}_rank_kept", f"track_{track}_rank_low",
                   f"track_{track}_rank_high", f"track_{track}_score", f"track_{track}_tasks", f"track_{track}_missing"]
    header += [f"{task}_raw" for task in tasks] + [f"{task}_normalized" for task in tasks]
    header += [f"{task}_seed_sd" for task in tasks] if spread else []
    header += ["notes"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for i in board.ranked("A") if board.tracks["A"] else board.ranked("B"):
        entry = board.entries[i]
        row = [entry.name, entry.source, entry.protocol, max(1, len(entry.members))]
        for track in TRACKS:
            result = board.results[i][track]
            stable = board.stability[i].get(track) if board.stability else None
            row += ["" if result.rank is None else result.rank]
            row += ["", "", ""] if stable is None else [f"{stable.kept:.4f}", stable.low, stable.high]
            row += ["" if result.score is None else f"{result.score:.6f}",
                    f"{result.tasks_present}/{result.tasks_total}", ";".join(result.missing)]
        row += ["" if t not in entry.scores else repr(entry.scores[t]) for t in tasks]
        row += ["" if t not in board.normalized[i] else f"{board.normalized[i][t]:.6f}" for t in tasks]
        row += ["" if t not in entry.spread else f"{entry.spread[t]:.6f}" for t in tasks] if spread else []
        row.append("; ".join(entry.notes))
        writer.writerow(row)
    return out.getvalue()


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _stability_text(stable: RankStability | None) -> str:
    if stable is None:
        return "-"
    spread = "" if stable.low == stable.high else f" ({stable.low}–{stable.high})"
    return f"{stable.kept:.0%}{spread}"


def _task_cell(normalized: float, raw: float, spread: float | None) -> str:
    return f"{normalized:.3f} ({raw:.3f}" + ("" if spread is None else f" ±{spread:.3f}") + ")"


def to_markdown(board: Leaderboard) -> str:
    lines = ["# Leaderboard", "",
             "Each task's raw score is mapped linearly to [0, 1] across the entries below (worst 0, best 1; "
             f"a task where all entries tie gives {TIE_SCORE:g}); a track score is the plain mean of its "
             "normalized task scores. `*` marks an entry that misses some of the track's tasks: its mean "
             "covers only the tasks it has.", ""]
    if board.stability:
        lines += [f"Rank kept: the share of {board.resamples} resamples (every task's test clips drawn again, "
                  "the normalization and the means recomputed) in which the entry keeps its rank, and in "
                  "brackets the central 95% of its ranks.", ""]
    lines += [f"> {note}" for note in board.notes] + ([""] if board.notes else [])
    for track in TRACKS:
        tasks = board.tracks[track]
        lines += [f"## {TRACK_TITLES[track]}", ""]
        if not tasks:
            lines += ["No entry has a task of this track.", ""]
            continue
        head = ["rank"] + (["rank kept"] if board.stability else []) + ["encoder", "score", "tasks"]
        lines.append(_md_row(head + tasks))
        lines.append(_md_row(["---"] * (len(head) + len(tasks))))
        for i in board.ranked(track):
            entry, result = board.entries[i], board.results[i][track]
            flag = " *" if result.missing and result.rank is not None else ""
            cells = ["-" if result.rank is None else str(result.rank)]
            if board.stability:
                cells.append(_stability_text(board.stability[i].get(track)))
            cells += [entry.name + flag, _fmt(result.score), f"{result.tasks_present}/{result.tasks_total}"]
            cells += [_task_cell(board.normalized[i][t], entry.scores[t], entry.spread.get(t))
                      if t in entry.scores else "missing" for t in tasks]
            lines.append(_md_row(cells))
        seeds_note = " A seed group's raw score is the mean over its seeds ± their standard deviation." \
            if any(entry.spread for entry in board.entries) else ""
        lines += ["", "Task cells: normalized (raw)." + seeds_note, ""]
    if board.other_tasks:
        lines += ["## Tasks in no track (not ranked)", "", _md_row(["encoder"] + board.other_tasks),
                  _md_row(["---"] * (1 + len(board.other_tasks)))]
        for i, entry in enumerate(board.entries):
            lines.append(_md_row([entry.name] + [_fmt(entry.scores.get(t)) for t in board.other_tasks]))
        lines.append("")
    flagged = [(e, r) for e, r in zip(board.entries, board.results)
               if e.notes or any(r[t].missing and r[t].rank is not None for t in TRACKS)]
    if flagged:
        lines += ["## Flags", ""]
        for entry, result in flagged:
            parts = [f"Track {t} misses {', '.join(result[t].missing)}" for t in TRACKS
                     if result[t].missing and result[t].rank is not None] + entry.notes
            lines.append(f"- {entry.name} ({entry.source}): {'; '.join(parts)}")
        lines.append("")
    return "\n".join(lines)


def leaderboard_command(run_dirs: list[str], baselines: bool = False, output_dir: str = ".",
                        mixed_protocols: bool = False, resamples: int = DEFAULT_RESAMPLES) -> int:
    board = leaderboard_table(run_dirs, baselines=baselines, mixed_protocols=mixed_protocols, resamples=resamples)
    markdown = to_markdown(board)
    print(markdown)
    out = Path(output_dir)
    atomic_write_text(out / "leaderboard.csv", to_csv(board))
    atomic_write_text(out / "leaderboard.md", markdown)
    print(f"wrote {out / 'leaderboard.csv'} and {out / 'leaderboard.md'}")
    return 0
