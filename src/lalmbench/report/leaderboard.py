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
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from lalmbench.errors import LalmbenchError
from lalmbench.io_utils import atomic_write_text
from lalmbench.report.baselines import PUBLISHED_BASELINES, task_key, track_of

TRACKS = ("A", "B")
TRACK_TITLES = {"A": "Track A (classification, task1)", "B": "Track B (open-ended, task2)"}
TIE_SCORE = 1.0  # normalized score of every entry on a task where all raw scores are equal


@dataclass
class Entry:
    """One ranked row: a run directory or a published baseline."""

    name: str
    source: str  # the run directory, or "published baseline"
    scores: dict[str, float]  # task key (no `eval_` prefix) -> raw score
    metrics: dict[str, str] = field(default_factory=dict)  # task key -> metric name, when known
    notes: list[str] = field(default_factory=list)  # e.g. "run not completed"


@dataclass
class TrackResult:
    rank: int | None  # None: the entry has none of this track's tasks
    score: float | None  # mean normalized score over the tasks the entry has
    tasks_present: int
    tasks_total: int
    missing: list[str]


@dataclass
class Leaderboard:
    entries: list[Entry]
    tracks: dict[str, list[str]]  # track -> its task keys (union over entries), sorted
    other_tasks: list[str]  # tasks in no track (shown, not ranked)
    normalized: list[dict[str, float]]  # per entry: task key -> normalized score
    results: list[dict[str, TrackResult]]  # per entry: track -> result

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
    name, metrics, notes = run_dir.name, {}, []
    summary_path = run_dir / "run_summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
            notes.append("unreadable run_summary.json")
        name = str(summary.get("encoder_name") or name)
        for task, info in (summary.get("tasks") or {}).items():
            if isinstance(info, dict) and info.get("metric"):
                metrics[task_key(task)] = str(info["metric"])
        if summary.get("train_config"):
            notes.append(f"train config {summary['train_config']}")
    if not (run_dir / "COMPLETED").exists():
        notes.append("run not marked COMPLETED")
    return Entry(name=name, source=str(run_dir), scores=scores, metrics=metrics, notes=notes)


def baseline_entries() -> list[Entry]:
    return [Entry(name=f"{name} (published)", source="published baseline", scores=dict(scores))
            for name, scores in PUBLISHED_BASELINES.items()]


def _expand_run_dirs(paths: list[str]) -> list[Path]:
    """Run directories as given; a directory without scores.tsv stands for every run below it."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / "scores.tsv").is_file():
            found.append(path)
        elif path.is_dir() and (below := sorted(p.parent for p in path.rglob("scores.tsv"))):
            found.extend(below)
        else:
            raise LalmbenchError(f"{path} is not a run directory (no scores.tsv in it or below it)")
    return found


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


def leaderboard_table(run_dirs: list[str], baselines: bool = False) -> Leaderboard:
    """The library entry point: read the runs (plus published baselines) and rank them."""
    entries = [read_run(path) for path in _expand_run_dirs(run_dirs)]
    if baselines:
        entries += baseline_entries()
    return build_leaderboard(entries)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def to_csv(board: Leaderboard) -> str:
    tasks = [t for track in TRACKS for t in board.tracks[track]] + board.other_tasks
    header = ["encoder", "source"]
    for track in TRACKS:
        header += [f"track_{track}_rank", f"track_{track}_score", f"track_{track}_tasks", f"track_{track}_missing"]
    header += [f"{task}_raw" for task in tasks] + [f"{task}_normalized" for task in tasks] + ["notes"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for i in board.ranked("A") if board.tracks["A"] else board.ranked("B"):
        entry, row = board.entries[i], [board.entries[i].name, board.entries[i].source]
        for track in TRACKS:
            result = board.results[i][track]
            row += ["" if result.rank is None else result.rank, "" if result.score is None else f"{result.score:.6f}",
                    f"{result.tasks_present}/{result.tasks_total}", ";".join(result.missing)]
        row += ["" if t not in entry.scores else repr(entry.scores[t]) for t in tasks]
        row += ["" if t not in board.normalized[i] else f"{board.normalized[i][t]:.6f}" for t in tasks]
        row.append("; ".join(entry.notes))
        writer.writerow(row)
    return out.getvalue()


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def to_markdown(board: Leaderboard) -> str:
    lines = ["# Leaderboard", "",
             "Each task's raw score is mapped linearly to [0, 1] across the entries below (worst 0, best 1; "
             f"a task where all entries tie gives {TIE_SCORE:g}); a track score is the plain mean of its "
             "normalized task scores. `*` marks an entry that misses some of the track's tasks: its mean "
             "covers only the tasks it has.", ""]
    for track in TRACKS:
        tasks = board.tracks[track]
        lines += [f"## {TRACK_TITLES[track]}", ""]
        if not tasks:
            lines += ["No entry has a task of this track.", ""]
            continue
        lines.append(_md_row(["rank", "encoder", "score", "tasks"] + tasks))
        lines.append(_md_row(["---"] * (4 + len(tasks))))
        for i in board.ranked(track):
            entry, result = board.entries[i], board.results[i][track]
            flag = " *" if result.missing and result.rank is not None else ""
            cells = ["-" if result.rank is None else str(result.rank), entry.name + flag, _fmt(result.score),
                     f"{result.tasks_present}/{result.tasks_total}"]
            cells += [f"{board.normalized[i][t]:.3f} ({entry.scores[t]:.3f})" if t in entry.scores else "missing"
                      for t in tasks]
            lines.append(_md_row(cells))
        lines += ["", "Task cells: normalized (raw).", ""]
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


def leaderboard_command(run_dirs: list[str], baselines: bool = False, output_dir: str = ".") -> int:
    board = leaderboard_table(run_dirs, baselines=baselines)
    markdown = to_markdown(board)
    print(markdown)
    out = Path(output_dir)
    atomic_write_text(out / "leaderboard.csv", to_csv(board))
    atomic_write_text(out / "leaderboard.md", markdown)
    print(f"wrote {out / 'leaderboard.csv'} and {out / 'leaderboard.md'}")
    return 0
