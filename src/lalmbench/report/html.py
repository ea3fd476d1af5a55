"""The per-run HTML report: one self-contained `report.html` in the run directory, plus its plots as
PNG files in `<run_dir>/report/`.

Flow: read what the run directory holds (scores.tsv, run_summary.json, train_log.csv,
predictions_<task>.csv; see docs/HELPERS.md) -> gather each section's data -> render it with its macro in
templates/report.html.j2 (Jinja2, autoescaped) -> embed every plot as base64 PNG.
Sections: run facts, scores beside the published baselines (chart + table), the training loss
curve, then per task a confusion matrix (Accuracy) or AP per class (mAP) and the best and worst
predictions. A missing file or a section that fails becomes a note in that section, never an
exception: the runner calls `write_report` at the end of every run. Plots need matplotlib (extra
`report`); without it the report keeps its tables and says how to get the plots.
"""

from __future__ import annotations

import base64
import csv
import functools
import importlib.util
import io
import json
import math
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jinja2

from lalmbench.errors import LalmbenchError
from lalmbench.io_utils import atomic_write_bytes, atomic_write_text
from lalmbench.metrics.normalize import normalize_text
from lalmbench.report.baselines import PUBLISHED_BASELINES, task_key

CONFUSION_TOP_LABELS = 15  # larger vocabularies keep their most frequent reference labels + "(other)"
AP_TOP_CLASSES = 40  # AP bars shown for at most this many classes (the best and worst halves)
SAMPLES_SHOWN = 5  # best and worst predictions per task
OTHER_LABEL = "(other)"

RUN_COLOR, DASHENG_COLOR, WHISPER_COLOR = "#2563eb", "#f59e0b", "#10b981"


@dataclass
class RunData:
    """Everything the report reads from a run directory; absent files stay None/empty."""

    run_dir: Path
    scores: list[tuple[str, float, float]] | None = None  # (eval name, score, weight), Overall excluded
    overall: float | None = None
    summary: dict = field(default_factory=dict)
    train_log: list[dict[str, float]] | None = None
    predictions: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # eval name -> rows
    notes: list[str] = field(default_factory=list)  # what could not be read

    def metric(self, task: str) -> str | None:
        return ((self.summary.get("tasks") or {}).get(task) or {}).get("metric")

    def metric_args(self, task: str) -> dict:
        return ((self.summary.get("tasks") or {}).get(task) or {}).get("metric_args") or {}

    def interval(self, task: str) -> tuple[float, float] | None:
        """The score's bootstrap interval (run_summary.json), when the run has one."""
        info = (self.summary.get("tasks") or {}).get(task) or {}
        low, high = _float(info.get("ci_low")), _float(info.get("ci_high"))
        return None if low is None or high is None else (low, high)


def _float(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_run_dir(run_dir: Path) -> RunData:
    data = RunData(run_dir=run_dir)
    scores_path = run_dir / "scores.tsv"
    if scores_path.is_file():
        data.scores = []
        with open(scores_path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                task, score = (row.get("Task") or "").strip(), _float(row.get("score"))
                if task.lower() == "overall":
                    data.overall = score
                elif task and score is not None:
                    data.scores.append((task, score, _float(row.get("weight")) or 1.0))
    summary_path = run_dir / "run_summary.json"
    if summary_path.is_file():
        try:
            data.summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            data.notes.append(f"run_summary.json is not valid JSON ({exc})")
    log_path = run_dir / "train_log.csv"
    if not log_path.is_file() and data.summary.get("partial"):
        log_path = run_dir.parent / "train_log.csv"  # a --limit evaluation sits inside the run it evaluates
    if log_path.is_file():
        with open(log_path, newline="", encoding="utf-8") as handle:
            data.train_log = [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    for path in sorted(run_dir.glob("predictions_*.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            data.predictions[path.stem[len("predictions_"):]] = list(csv.DictReader(handle))
    return data


# ---------------------------------------------------------------- plots

def _figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def chance_levels(data: RunData, tasks: list[str]) -> list[float | None]:
    """Per task, the score of the best constant answer on its references (metrics.chance_level), where
    the metric has one and the predictions file holds the references; None elsewhere."""
    from lalmbench import metrics

    protocol = data.summary.get("protocol") or "official"
    levels = []
    for task in tasks:
        info = (data.summary.get("tasks") or {}).get(task) or {}
        rows = data.predictions.get(task) or []
        level = None
        if info.get("metric") and rows:
            try:
                level = metrics.chance_level(info["metric"], [r.get("reference", "") for r in rows], protocol,
                                             **(info.get("metric_args") or {}))
            except (KeyError, TypeError, ValueError):  # unknown metric or arguments: the chart goes without it
                level = None
        levels.append(level)
    return levels


def scores_figure(data: RunData):
    """The scores chart of a run directory's data (a matplotlib Figure)."""
    tasks = [task for task, _, _ in data.scores or []]
    return _scores_figure(tasks, [score for _, score, _ in data.scores or []], [data.interval(t) for t in tasks],
                          chance_levels(data, tasks))


def plot_scores(tasks: list[str], run_scores: list[float],
                intervals: list[tuple[float, float] | None] | None = None,
                chance: list[float | None] | None = None) -> bytes:
    """Bars per task beside the baselines; `intervals` (low, high) per task draw the run's error bars,
    `chance` the chance level of each task (a mark across its bars)."""
    return _png(_scores_figure(tasks, run_scores, intervals, chance))


def _scores_figure(tasks: list[str], run_scores: list[float],
                   intervals: list[tuple[float, float] | None] | None = None,
                   chance: list[float | None] | None = None):
    baselines = {name: [PUBLISHED_BASELINES[name].get(task_key(t)) for t in tasks] for name in PUBLISHED_BASELINES}
    figure = _figure(8.0, 1.2 + 0.42 * len(tasks))
    axes = figure.add_subplot()
    bar = 0.27
    series = [("this run", run_scores, RUN_COLOR)] + [
        (f"{name} (published)", values, color)
        for (name, values), color in zip(baselines.items(), (DASHENG_COLOR, WHISPER_COLOR))]
    baselines_drawn = False
    for offset, (label, values, color) in enumerate(series):
        if all(value is None for value in values):
            continue  # a baseline with no score on these tasks draws nothing, so the legend leaves it out
        baselines_drawn = baselines_drawn or offset > 0
        positions = [i + (offset - 1) * bar for i in range(len(tasks))]
        shown = [v if v is not None else 0.0 for v in values]
        bars = axes.barh(positions, shown, height=bar, label=label, color=color)
        for rect, value in zip(bars, values):
            if value is None:
                rect.set_alpha(0)
    labelled = False
    for i, level in enumerate(chance or []):
        if level is None:
            continue
        # a dashed mark across the task's three bar slots; one legend entry for all of them
        axes.plot([level, level], [i - 1.6 * bar, i + 1.6 * bar], color="#111827", linestyle=(0, (2, 1.5)),
                  linewidth=1.2, gid=tasks[i], label="chance level (best constant answer)" if not labelled
                  else "_chance level")  # a leading underscore keeps a label out of the legend
        labelled = True
    for i, (value, interval) in enumerate(zip(run_scores, intervals or [])):
        if interval is not None:  # asymmetric bootstrap interval around the run's score
            low, high = interval
            axes.errorbar(value, i - bar, xerr=[[max(0.0, value - low)], [max(0.0, high - value)]], fmt="none",
                          ecolor="#111827", elinewidth=1, capsize=2.5)
    for i, value in enumerate(run_scores):
        interval = (intervals or [None] * len(run_scores))[i]
        end = max(value, interval[1]) if interval else value  # the label goes past the error bar
        axes.text(end + 0.01, i - bar, f"{value:.3f}", va="center", fontsize=7, color=RUN_COLOR)
    axes.set_yticks(range(len(tasks)), [task_key(t) for t in tasks])
    axes.invert_yaxis()
    axes.set_xlim(0, 1.08)
    axes.set_xlabel("score")
    axes.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    # Legend entries for what is drawn, bars first: a bar series by its colour (its first bar may be an
    # invisible placeholder), then the chance mark; below the chart, where it hides no bar.
    handles = [Patch(color=color, label=label) for label, values, color in series
               if any(value is not None for value in values)]
    handles += [line for line in axes.get_lines() if line.get_label() == "chance level (best constant answer)"]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8,
                  frameon=False)
    axes.set_title("Scores per task beside the published baselines" if baselines_drawn else "Scores per task")
    return figure


def plot_loss(rows: list[dict[str, float]]) -> bytes:
    steps = [r.get("step") for r in rows if r.get("step") is not None and r.get("loss") is not None]
    losses = [r["loss"] for r in rows if r.get("step") is not None and r.get("loss") is not None]
    figure = _figure(8.0, 3.6)
    axes = figure.add_subplot()
    axes.plot(steps, losses, color=RUN_COLOR, alpha=0.35, linewidth=0.8, label="loss")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
                  for i in range(len(losses))]
        axes.plot(steps, smooth, color=RUN_COLOR, linewidth=1.8, label=f"loss (mean of {window} steps)")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    rates = [(r["step"], r["learning_rate"]) for r in rows
             if r.get("step") is not None and r.get("learning_rate") is not None]
    if rates:
        twin = axes.twinx()
        twin.plot([s for s, _ in rates], [v for _, v in rates], color="#9ca3af", linewidth=1, linestyle="--",
                  label="learning rate")
        twin.set_ylabel("learning rate", color="#6b7280")
        twin.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        lines = axes.get_legend_handles_labels(), twin.get_legend_handles_labels()
        axes.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], loc="upper right", fontsize=8)
    else:
        axes.legend(loc="upper right", fontsize=8)
    axes.set_title("Training loss")
    return _png(figure)


def _natural_key(label: str) -> list:
    """Sort key that orders numbers by value inside labels: '2 speakers' before '10 speakers'."""
    # hand-written: one line, where natsort would be a new dependency
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", label) if part]


def confusion(rows: list[dict[str, str]], top: int = CONFUSION_TOP_LABELS) -> tuple[list[str], list[list[int]], int]:
    """(labels, counts[reference][prediction], vocabulary size) over normalized labels.

    Only the `top` most frequent reference labels get their own row/column; every other reference
    label and every prediction outside them is counted as "(other)".
    """
    # sklearn counts the matrix; choosing the shown labels and the "(other)" bucket is this report's own rule
    references = [normalize_text(r.get("reference", "")) for r in rows]
    predictions = [normalize_text(r.get("prediction", "")) for r in rows]
    frequency = Counter(references)
    kept = [label for label, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    labels = sorted(kept, key=_natural_key)  # rows in reading order (1, 2, 10; a, b), not by frequency
    if len(frequency) > top or any(p not in labels for p in predictions):  # the rest share one row/column
        labels.append(OTHER_LABEL)
    if not labels:  # no rows: sklearn refuses an empty label list
        return [], [], 0
    from sklearn.metrics import confusion_matrix

    shown = set(labels)
    counts = confusion_matrix([r if r in shown else OTHER_LABEL for r in references],
                              [p if p in shown else OTHER_LABEL for p in predictions], labels=labels)
    return labels, counts.tolist(), len(frequency)


def plot_confusion(task: str, labels: list[str], counts: list[list[int]]) -> bytes:
    size = len(labels)
    figure = _figure(min(2.5 + 0.45 * size, 9.5), min(2.2 + 0.42 * size, 9.0))
    axes = figure.add_subplot()
    share = [[c / max(1, sum(row)) for c in row] for row in counts]
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    short = [label if len(label) <= 22 else label[:21] + "…" for label in labels]
    axes.set_xticks(range(size), short, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(size), short, fontsize=8)
    axes.set_xlabel("prediction")
    axes.set_ylabel("reference")
    if size <= 20:
        for r in range(size):
            for c in range(size):
                if counts[r][c]:
                    axes.text(c, r, str(counts[r][c]), ha="center", va="center", fontsize=7,
                              color="white" if share[r][c] > 0.5 else "#111827")
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the reference row")
    axes.set_title(f"{task_key(task)}: confusion matrix (normalized labels)")
    return _png(figure)


def plot_average_precision(task: str, per_class: dict[str, float]) -> bytes:
    ordered = sorted(per_class.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ordered) > AP_TOP_CLASSES:
        half = AP_TOP_CLASSES // 2
        ordered = ordered[:half] + [("…", float("nan"))] + ordered[-half:]
    figure = _figure(8.0, 1.2 + 0.22 * len(ordered))
    axes = figure.add_subplot()
    values = [0.0 if math.isnan(v) else v for _, v in ordered]
    axes.barh(range(len(ordered)), values, color=RUN_COLOR)
    axes.set_yticks(range(len(ordered)), [name for name, _ in ordered], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.0)
    axes.set_xlabel("average precision")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(f"{task_key(task)}: AP per class ({len(per_class)} classes in the references)")
    return _png(figure)


# ---------------------------------------------------------------- per-example scores for samples

def _example_scorer(metric: str | None):
    """(score of one example, its name, whether higher is better): the metric spec's `example_score`, or
    word F1 (higher better) for a metric without one or not registered in this process."""
    from lalmbench import metrics
    from lalmbench.metrics.spec import word_f1

    try:
        spec = metrics.get(metric) if metric else None
    except KeyError:
        spec = None
    if spec is None or spec.example_score is None:
        return word_f1, "word F1", True
    return spec.example_score, spec.example_score_name or spec.name, spec.higher_is_better


def example_score(metric: str | None, prediction: str, reference: str) -> float:
    """A per-example score used only to pick the best and worst samples (not the task metric)."""
    return float(_example_scorer(metric)[0](prediction, reference))


# ---------------------------------------------------------------- HTML (templates/report.html.j2)

@functools.cache
def _sections():
    """The template's macros, one per section (autoescaped: every value comes from the run's files)."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader("lalmbench.report"), autoescape=True,
                                     trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return environment.get_template("report.html.j2").module


class _Report:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.image_dir = run_dir / "report"
        self.images_written: list[Path] = []
        self.plots_available = importlib.util.find_spec("matplotlib") is not None

    def image(self, name: str, make: Callable[[], bytes], alt: str) -> dict | None:
        """Write the plot to report/<name>.png and return what the page embeds (None without matplotlib)."""
        if not self.plots_available:
            return None
        png = make()
        path = self.image_dir / f"{name}.png"
        atomic_write_bytes(path, png)
        self.images_written.append(path)
        return {"base64": base64.b64encode(png).decode("ascii"), "alt": alt}


def _safe_section(builder: Callable[[], str], title: str) -> str:
    try:
        return builder()
    except Exception as exc:  # a broken input file must not take the whole report down
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return _sections().error_section(title, detail)


def _short(value):
    """A config given as a file path shows as its file name: a long path overflowed the next fact's cell."""
    if not isinstance(value, str) or ("/" not in value and "\\" not in value):
        return value
    return Path(value).name


def _duration(seconds) -> str | None:
    value = _float(seconds)
    if value is None:
        return None
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _training_history(summary: dict) -> str | None:
    """When the training behind these scores finished, and how often later runs reused it."""
    reuses = [r for r in summary.get("reuses") or [] if isinstance(r, dict)]
    parts = [summary["trained_at"]] if summary.get("trained_at") else []
    if reuses:
        count = "once" if len(reuses) == 1 else f"{len(reuses)} times"
        parts.append(f"reused {count}, last {reuses[-1].get('when', '?')} (times above are the training's own)")
    return "; ".join(parts) or None


def _facts_section(data: RunData) -> str:
    summary = data.summary
    facts = [("encoder", summary.get("encoder_name") or data.run_dir.name),
             ("train config", _short(summary.get("train_config"))), ("eval config", _short(summary.get("eval_config"))),
             ("protocol", summary.get("protocol")),
             ("decoder", summary.get("decoder")), ("steps", summary.get("steps_trained", summary.get("steps"))),
             ("train time", _duration(summary.get("train_seconds"))), ("trained", _training_history(summary)),
             ("eval time", _duration(summary.get("eval_seconds"))),
             ("overall score", f"{data.overall:.4f}" if data.overall is not None else None),
             ("lalmbench", summary.get("lalmbench_version")),
             ("status", "completed" if (data.run_dir / "COMPLETED").exists() else "not marked COMPLETED")]
    partial = summary.get("partial") if isinstance(summary.get("partial"), dict) else None
    notes = list(data.notes)
    if partial:
        facts.insert(0, ("evaluation", f"PARTIAL: first {partial.get('limit')} test examples per task"))
        notes.insert(0, f"Partial evaluation (--limit {partial.get('limit')}): only the first {partial.get('limit')} "
                        "examples of each test set were answered. These scores are a quick look, not comparable "
                        "with full evaluations or the published baselines.")
    if not summary:
        notes.append("run_summary.json is missing: encoder facts, metric names and metric arguments are unknown.")
    return _sections().facts(summary.get("encoder_name") or data.run_dir.name, data.run_dir, facts, notes)


def _scores_section(report: _Report, data: RunData) -> str:
    if not data.scores:
        return _sections().scores("scores.tsv is missing: the run has not been evaluated." if data.scores is None
                                  else "scores.tsv lists no task.")
    rows = []
    for task, score, weight in data.scores:
        info = (data.summary.get("tasks") or {}).get(task) or {}
        rows.append({"task": task, "key": task_key(task), "metric": info.get("metric", "-"), "score": score,
                     "interval": data.interval(task), "weight": weight, "examples": info.get("num_examples", "-"),
                     "baselines": [baseline.get(task_key(task)) for baseline in PUBLISHED_BASELINES.values()]})
    overall_interval = (data.summary.get("confidence") or {}).get("overall") or {}
    bounds = (_float(overall_interval.get("ci_low")), _float(overall_interval.get("ci_high")))
    overall = None if data.overall is None else {"score": data.overall, "interval": None if None in bounds else bounds}
    return _sections().scores(None, report.plots_available, report.image("scores", lambda: _png(scores_figure(data)),
                                                                         "scores per task"),
                              (data.summary.get("confidence") or {}).get("level", 0.95), list(PUBLISHED_BASELINES),
                              rows, overall)


def _loss_section(report: _Report, data: RunData) -> str:
    if data.train_log is None:
        return _sections().loss("train_log.csv is missing: no training curve to show.")
    points = [r for r in data.train_log if r.get("step") is not None and r.get("loss") is not None]
    if not points:
        return _sections().loss("train_log.csv has no step with a loss.")
    head = max(1, len(points) // 10)
    return _sections().loss(None, len(points), points[-1]["step"], head, sum(p["loss"] for p in points[:head]) / head,
                            sum(p["loss"] for p in points[-head:]) / head,
                            report.image("loss", lambda: plot_loss(data.train_log), "training loss"))


def _samples_table(metric: str | None, rows: list[dict[str, str]]) -> str:
    score, name, higher_is_better = _example_scorer(metric)
    scored = [(float(score(r.get("prediction", ""), r.get("reference", ""))), i, r) for i, r in enumerate(rows)]
    sign = 1.0 if higher_is_better else -1.0  # best first: the highest, or the lowest when lower is better
    best = sorted(scored, key=lambda t: (-sign * t[0], t[1]))[:SAMPLES_SHOWN]
    worst = sorted(scored, key=lambda t: (sign * t[0], t[1]))[:SAMPLES_SHOWN]
    return _sections().samples(name, [(s, r) for s, _, r in best], [(s, r) for s, _, r in worst])


def _task_section(report: _Report, data: RunData, task: str) -> str:
    rows = data.predictions.get(task)
    section = {"task": task, "metric": data.metric(task), "count": len(rows or []),
               "score": next((value for name, value, _ in data.scores or [] if name == task), None)}
    if not rows:
        return _sections().task(**section, missing=f"predictions_{task}.csv is missing: no per-example view for this "
                                "task." if rows is None else f"predictions_{task}.csv has no rows.")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)
    if section["metric"] == "Accuracy":
        labels, counts, vocabulary = confusion(rows)
        section.update(vocabulary=vocabulary, shown=len(labels) - (OTHER_LABEL in labels), other=OTHER_LABEL,
                       picture=report.image(f"confusion_{safe}", lambda: plot_confusion(task, labels, counts),
                                            f"{task} confusion matrix"))
    elif section["metric"] == "mAP":
        from lalmbench.metrics.classification import average_precision_per_class

        references = [r.get("reference", "") for r in rows]
        num_classes = data.metric_args(task).get("num_classes")
        if num_classes is None:
            num_classes = len({label.strip() for ref in references
                               for label in normalize_text(ref, keep_label_separator=True).split(";")})
            section["ap_note"] = True
        per_class = average_precision_per_class([r.get("prediction", "") for r in rows], references, int(num_classes))
        section["picture"] = report.image(f"ap_{safe}", lambda: plot_average_precision(task, per_class),
                                          f"{task} AP per class")
        if per_class:
            section["mean_ap"] = {"classes": len(per_class), "mean": sum(per_class.values()) / len(per_class),
                                  "num_classes": num_classes}
    return _sections().task(**section, samples=_samples_table(section["metric"], rows))


def write_report(run_dir: str | Path) -> Path:
    """Write `<run_dir>/report.html` (self-contained) and the plots as `<run_dir>/report/*.png`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LalmbenchError(f"run directory {run_dir} does not exist; pass a directory written by `lalmbench run`")
    data = read_run_dir(run_dir)
    report = _Report(run_dir)
    tasks = [task for task, _, _ in data.scores or []]
    tasks += [task for task in data.predictions if task not in tasks]
    sections = [_safe_section(lambda: _facts_section(data), "Run"),
                _safe_section(lambda: _scores_section(report, data), "Scores"),
                _safe_section(lambda: _loss_section(report, data), "Training loss")]
    for task in tasks:
        sections.append(_safe_section(lambda task=task: _task_section(report, data, task), task))
    title = f"lalmbench report: {data.summary.get('encoder_name') or run_dir.name}"
    path = run_dir / "report.html"
    atomic_write_text(path, _sections().page(title, [(task, task_key(task)) for task in tasks], sections))
    return path


RUN_RESULT_FILES = ("scores.tsv", "run_summary.json")
"""A directory holding one of these is a run directory that has scores (or a --limit evaluation's)."""


def check_run_dir(run_dir: Path) -> None:
    """Refuse a directory `lalmbench run` did not score, saying what a run directory holds and, when there
    are run directories below it (a suite or output directory, a seed group), which."""
    if not run_dir.is_dir():
        raise LalmbenchError(f"run directory {run_dir} does not exist; pass a directory written by `lalmbench run`")
    if any((run_dir / name).is_file() for name in RUN_RESULT_FILES):
        return
    if (run_dir / "run_identity.json").is_file():
        raise LalmbenchError(f"{run_dir} is a run directory that has no scores yet (no scores.tsv or "
                             "run_summary.json): its run stopped before evaluating. To finish it, run the same "
                             "`lalmbench run` command again (it resumes from the newest checkpoint)")
    below = sorted({path.parent for name in RUN_RESULT_FILES for depth in ("*", "*/*", "*/*/*")
                    for path in run_dir.glob(f"{depth}/{name}")})
    below = [path for path in below if not any(parent in below for parent in path.parents)]  # not limit-N/
    hint = ("pass a run directory: `lalmbench run` writes one per run in <output-dir>/<train config>/<encoder>/ "
            "(for example lalmbench_runs/task1/my_encoder)")
    if below:
        shown = ", ".join(str(path) for path in below[:5])
        hint = (f"run directories below it: {shown}" + (f" and {len(below) - 5} more" if len(below) > 5 else "")
                + "; pass one of them")
    raise LalmbenchError(f"{run_dir} is not a run directory: it has neither scores.tsv nor run_summary.json; "
                         f"{hint}")


def report_command(run_dir: str) -> int:
    check_run_dir(Path(run_dir))
    path = write_report(run_dir)
    print(f"wrote {path}")
    return 0
