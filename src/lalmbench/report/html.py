"""The per-run HTML report: one self-contained `report.html` in the run directory, plus its plots as
PNG files in `<run_dir>/report/`.

Flow: read what the run directory holds (scores.tsv, run_summary.json, train_log.csv,
predictions_<task>.csv; see docs/HELPERS.md) -> build each section -> embed every plot as base64 PNG.
Sections: run facts, scores beside the published baselines (chart + table), the training loss
curve, then per task a confusion matrix (Accuracy) or AP per class (mAP) and the best and worst
predictions. A missing file or a section that fails becomes a note in that section, never an
exception: the runner calls `write_report` at the end of every run. Plots need matplotlib (extra
`report`); without it the report keeps its tables and says how to get the plots.
"""

from __future__ import annotations

import base64
import csv
import html
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


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f3f4f6;color:#111827}
main{max-width:1060px;margin:0 auto;padding:24px}
h1{font-size:1.6rem;margin:0 0 4px}h2{font-size:1.25rem;margin:0 0 12px}h3{font-size:1.05rem;margin:18px 0 8px}
section{background:#fff;border-radius:10px;padding:18px 22px;margin:18px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.sub{color:#6b7280;margin:0 0 8px}.note{background:#fef3c7;border-left:4px solid #f59e0b;padding:8px 12px;margin:8px 0}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:8px 0}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e5e7eb;vertical-align:top}
th{background:#f9fafb;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fcfcfd}.better{color:#047857;font-weight:600}.worse{color:#b91c1c}
img{max-width:100%;height:auto;display:block;margin:8px auto}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:8px 18px;margin:0}
.facts div{font-size:.9rem;overflow-wrap:anywhere}.facts b{display:block;color:#6b7280;font-weight:500;font-size:.78rem}
nav a{margin-right:12px;font-size:.9rem;color:#2563eb;text-decoration:none}
.ok{color:#047857}.bad{color:#b91c1c}td.text{max-width:380px;word-wrap:break-word}
"""


class _Report:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.image_dir = run_dir / "report"
        self.images_written: list[Path] = []
        self.plots_available = importlib.util.find_spec("matplotlib") is not None

    def image(self, name: str, make: Callable[[], bytes], alt: str) -> str:
        if not self.plots_available:
            return ""
        png = make()
        path = self.image_dir / f"{name}.png"
        atomic_write_bytes(path, png)
        self.images_written.append(path)
        encoded = base64.b64encode(png).decode("ascii")
        return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _esc(value) -> str:
    return html.escape(str(value))


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _safe_section(builder: Callable[[], str], title: str) -> str:
    try:
        return builder()
    except Exception as exc:  # a broken input file must not take the whole report down
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return f"<section><h2>{_esc(title)}</h2>{_note(f'This section could not be built: {detail}')}</section>"


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
    if partial:
        facts.insert(0, ("evaluation", f"PARTIAL: first {partial.get('limit')} test examples per task"))
    cells = "".join(f"<div><b>{_esc(k)}</b>{_esc(v)}</div>" for k, v in facts if v not in (None, ""))
    notes = "".join(_note(n) for n in data.notes)
    if partial:
        notes = _note(f"Partial evaluation (--limit {partial.get('limit')}): only the first {partial.get('limit')} "
                      "examples of each test set were answered. These scores are a quick look, not comparable "
                      "with full evaluations or the published baselines.") + notes
    if not summary:
        notes += _note("run_summary.json is missing: encoder facts, metric names and metric arguments are unknown.")
    return (f'<section id="run"><h1>lalmbench report: {_esc(summary.get("encoder_name") or data.run_dir.name)}</h1>'
            f'<p class="sub">{_esc(data.run_dir)}</p><div class="facts">{cells}</div>{notes}</section>')


def _scores_section(report: _Report, data: RunData) -> str:
    title = "Scores beside the published baselines"
    if data.scores is None:
        return f'<section id="scores"><h2>{title}</h2>{_note("scores.tsv is missing: the run has not been evaluated.")}</section>'
    if not data.scores:
        return f'<section id="scores"><h2>{title}</h2>{_note("scores.tsv lists no task.")}</section>'
    tasks = [task for task, _, _ in data.scores]
    intervals = [data.interval(task) for task in tasks]
    image = report.image("scores", lambda: _png(scores_figure(data)), "scores per task")
    level = (data.summary.get("confidence") or {}).get("level", 0.95)
    head = ("<tr><th>task</th><th>metric</th><th class=num>score</th>"
            f"<th class=num>{level:.0%} interval</th><th class=num>Dasheng-base</th>"
            "<th class=num>Whisper-base</th><th class=num>weight</th><th class=num>examples</th></tr>")
    rows = []
    for task, score, weight in data.scores:
        baseline_cells = []
        for name in PUBLISHED_BASELINES:
            published = PUBLISHED_BASELINES[name].get(task_key(task))
            css = "" if published is None else (" better" if score > published else " worse" if score < published else "")
            baseline_cells.append(f'<td class="num{css}">{"-" if published is None else f"{published:.3f}"}</td>')
        info = (data.summary.get("tasks") or {}).get(task) or {}
        rows.append(f"<tr><td title=\"{_esc(task)}\">{_esc(task_key(task))}</td><td>{_esc(info.get('metric', '-'))}</td><td class=num><b>{score:.4f}</b></td>"
                    f"<td class=num>{_interval_text(data.interval(task))}</td>"
                    + "".join(baseline_cells)
                    + f"<td class=num>{weight:g}</td><td class=num>{_esc(info.get('num_examples', '-'))}</td></tr>")
    overall_interval = (data.summary.get("confidence") or {}).get("overall") or {}
    overall_bounds = (_float(overall_interval.get("ci_low")), _float(overall_interval.get("ci_high")))
    overall = "" if data.overall is None else (
        f"<tr><th>Overall</th><th>weighted mean</th><th class=num>{data.overall:.4f}</th>"
        f"<th class=num>{_interval_text(None if None in overall_bounds else overall_bounds)}</th>"
        "<th></th><th></th><th></th><th></th></tr>")
    legend = ('<p class="sub">The interval is a seeded bootstrap over the test clips (black error bars in the chart): '
              "overlapping intervals do not settle whether two runs differ: <code>lalmbench compare</code> tests a difference "
              "between two runs on the same clips. "
              "Baseline cells are green where this run scores higher, red where it scores lower. "
              "The published numbers come from the XARES-LLM README (100k steps on an A100); a shorter run is not "
              "expected to reach them.</p>")
    plots_note = "" if report.plots_available else _note(
        "matplotlib is not installed, so this report has no plots; install them with: pip install 'lalmbench[report]'")
    return (f'<section id="scores"><h2>{title}</h2>{plots_note}{image}<table>{head}{"".join(rows)}{overall}</table>'
            f"{legend}</section>")


def _interval_text(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"{interval[0]:.4f} – {interval[1]:.4f}"


def _loss_section(report: _Report, data: RunData) -> str:
    title = "Training loss"
    if data.train_log is None:
        return f'<section id="loss"><h2>{title}</h2>{_note("train_log.csv is missing: no training curve to show.")}</section>'
    points = [r for r in data.train_log if r.get("step") is not None and r.get("loss") is not None]
    if not points:
        return f'<section id="loss"><h2>{title}</h2>{_note("train_log.csv has no step with a loss.")}</section>'
    image = report.image("loss", lambda: plot_loss(data.train_log), "training loss")
    head_n = max(1, len(points) // 10)
    first = sum(p["loss"] for p in points[:head_n]) / head_n
    last = sum(p["loss"] for p in points[-head_n:]) / head_n
    text = (f'<p class="sub">{len(points)} logged steps (last step {points[-1]["step"]:.0f}); mean loss of the first '
            f"{head_n} logged steps {first:.4f}, of the last {head_n} {last:.4f}.</p>")
    return f'<section id="loss"><h2>{title}</h2>{text}{image}</section>'


def _samples_table(metric: str | None, rows: list[dict[str, str]]) -> str:
    score, name, higher_is_better = _example_scorer(metric)
    scored = [(float(score(r.get("prediction", ""), r.get("reference", ""))), i, r) for i, r in enumerate(rows)]
    sign = 1.0 if higher_is_better else -1.0  # best first: the highest, or the lowest when lower is better
    best = sorted(scored, key=lambda t: (-sign * t[0], t[1]))[:SAMPLES_SHOWN]
    worst = sorted(scored, key=lambda t: (sign * t[0], t[1]))[:SAMPLES_SHOWN]

    def table(title: str, chosen) -> str:
        body = "".join(f"<tr><td>{_esc(r.get('key', ''))}</td><td class=text>{_esc(r.get('prediction', ''))}</td>"
                       f"<td class=text>{_esc(r.get('reference', ''))}</td><td class=num>{s:.2f}</td></tr>"
                       for s, _, r in chosen)
        return (f"<h3>{title}</h3><table><tr><th>key</th><th>prediction</th><th>reference</th>"
                f"<th class=num>{_esc(name)}</th></tr>{body}</table>")

    return (f'<p class="sub">Samples are ordered by a per-example {_esc(name)} (a quick proxy, not the task '
            "metric).</p>" + table("Best predictions", best) + table("Worst predictions", worst))


def _task_section(report: _Report, data: RunData, task: str) -> str:
    metric = data.metric(task)
    rows = data.predictions.get(task)
    score = next((f" · score {value:.4f}" for name, value, _ in data.scores or [] if name == task), "")
    count = f" · {len(rows)} examples" if rows else ""
    parts = [f'<section id="task-{_esc(task)}"><h2>{_esc(task)}</h2>'
             f'<p class="sub">metric: {_esc(metric or "unknown (no run_summary.json)")}{score}{count}</p>']
    if rows is None:
        parts.append(_note(f"predictions_{task}.csv is missing: no per-example view for this task."))
        return "".join(parts) + "</section>"
    if not rows:
        parts.append(_note(f"predictions_{task}.csv has no rows."))
        return "".join(parts) + "</section>"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)
    if metric == "Accuracy":
        labels, counts, vocabulary = confusion(rows)
        shown = len(labels) - (OTHER_LABEL in labels)
        if vocabulary > shown:
            parts.append(f'<p class="sub">{vocabulary} reference labels; the {shown} most frequent are shown, '
                         f'the rest and unexpected predictions are counted as "{OTHER_LABEL}" (so its diagonal cell '
                         "mixes hits and misses among those labels).</p>")
        parts.append(report.image(f"confusion_{safe}", lambda: plot_confusion(task, labels, counts),
                                  f"{task} confusion matrix"))
    elif metric == "mAP":
        from lalmbench.metrics.classification import average_precision_per_class

        references = [r.get("reference", "") for r in rows]
        num_classes = data.metric_args(task).get("num_classes")
        if num_classes is None:
            vocabulary = {label.strip() for ref in references
                          for label in normalize_text(ref, keep_label_separator=True).split(";")}
            num_classes = len(vocabulary)
            parts.append(_note("num_classes is not in run_summary.json; using the number of reference labels."))
        per_class = average_precision_per_class([r.get("prediction", "") for r in rows], references, int(num_classes))
        parts.append(report.image(f"ap_{safe}", lambda: plot_average_precision(task, per_class),
                                  f"{task} AP per class"))
        if per_class:
            mean = sum(per_class.values()) / len(per_class)
            parts.append(f'<p class="sub">Mean AP over the {len(per_class)} classes the references use: {mean:.4f} '
                         f"(the task score divides by num_classes={num_classes}).</p>")
    parts.append(_samples_table(metric, rows))
    return "".join(parts) + "</section>"


def write_report(run_dir: str | Path) -> Path:
    """Write `<run_dir>/report.html` (self-contained) and the plots as `<run_dir>/report/*.png`."""
    # kept as f-strings: a Jinja2 template of this page was tried (commit 02cbc04) and came out 57 lines longer
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
    navigation = "".join(f'<a href="#task-{_esc(t)}">{_esc(task_key(t))}</a>' for t in tasks)
    title = f"lalmbench report: {data.summary.get('encoder_name') or run_dir.name}"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body><main>'
            f'<nav><a href="#scores">scores</a><a href="#loss">loss</a>{navigation}</nav>'
            + "".join(sections) + "</main></body></html>\n")
    path = run_dir / "report.html"
    atomic_write_text(path, page)
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
