"""Phase 4: the results written, printed and reported (rank 0), and handed back as a RunResult.

    Evaluated rows -> 95% bootstrap intervals (report.confidence) -> scores.tsv -> run_summary.json
    -> COMPLETED (last: a run without it did not finish) -> the table on stdout -> the HTML report

Also the writers of result files that other phases use (predictions_<task>.csv, written by evaluation).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

from lalmbench import __version__
from lalmbench.distributed import barrier
from lalmbench.identity import run_environment
from lalmbench.io_utils import atomic_write_json, atomic_write_text
from lalmbench.phases.run_directory import COMPLETED, TRAINING_COMPLETE

if TYPE_CHECKING:  # the phases import this module for its writers
    from lalmbench.phases.evaluation import Evaluated
    from lalmbench.phases.preparation import Prepared
    from lalmbench.phases.training import Trained

log = logging.getLogger("lalmbench")


@dataclass
class RunResult:
    run_dir: Path
    scores: dict[str, float]
    overall: float
    rows: list[dict] = field(default_factory=list)
    reused_training: bool = False
    results_dir: Path | None = None  # where scores.tsv went: run_dir, or its limit-N directory for --limit
    partial: dict | None = None  # {"limit": N} for a --limit evaluation


def write_results(prepared: "Prepared", trained: "Trained", evaluated: "Evaluated") -> RunResult:
    """Rank 0 writes; every process returns the same scores (the Overall is NaN on the others)."""
    overall = float("nan")
    if prepared.dist.is_main:
        overall = _write_and_show(prepared, trained, evaluated)
    barrier(prepared.dist)
    rows = evaluated.rows
    return RunResult(prepared.run_dir, {r["task"]: r["score"] for r in rows}, overall, rows, trained.reused,
                     evaluated.results_dir, evaluated.partial)


def _write_and_show(prepared: "Prepared", trained: "Trained", evaluated: "Evaluated") -> float:
    from lalmbench.report.confidence import TaskSpec, run_intervals

    config, request = prepared.config, prepared.request
    rows, task_summaries, results_dir = evaluated.rows, evaluated.task_summaries, evaluated.results_dir
    # A 95% bootstrap interval per score, from the kept answers (seconds; see report/confidence.py).
    confidence = run_intervals(results_dir, [TaskSpec(r["task"], r["metric"], r["score"], r["weight"],
                                                  task_summaries[r["task"]]["metric_args"]) for r in rows],
                               config.protocol)
    for task, task_confidence in confidence.tasks.items():
        task_summaries[task].update(task_confidence.as_dict())
    extra_columns = {**(request.extra_columns or {})}
    for task, cells in confidence.table_columns().items():
        extra_columns[task] = {**extra_columns.get(task, {}), **cells}
    overall = write_scores(results_dir, rows, confidence, request.limit)

    training = json.loads((prepared.run_dir / TRAINING_COMPLETE).read_text())  # how it was trained (batch, processes)
    bad_data = prepared.bad_data.as_dict()
    summary = {"lalmbench_version": __version__, "encoder": request.encoder, "encoder_name": prepared.encoder_name,
               "model_args": request.model_args or {}, "decoder": config.decoder_model_name,
               "train_config": config.config_name, "eval_config": prepared.eval_name, "protocol": config.protocol,
               "identity": prepared.identity_hash,
               **_measured(training, task_summaries, evaluated),
               "steps_this_run": trained.steps_this_run, "max_steps": config.max_steps,
               "evaluation_settings": config.evaluation_dict(),
               "reused_training": trained.reused,
               "reuses": _reuses(results_dir, prepared.identity_hash, trained, task_summaries),
               "this_run": {"steps": trained.steps_this_run, "train_seconds": trained.seconds_this_run,
                            "eval_seconds": evaluated.eval_seconds,
                            "total_seconds": time.perf_counter() - prepared.started},
               "world_size": prepared.dist.world, "global_batch_size": training.get("global_batch_size"),
               "train_world_size": training.get("world_size"),
               "bad_data": bad_data, "tasks": task_summaries,
               "overall": overall, "device": str(prepared.device), "data_revisions": prepared.data_revisions,
               "confidence": confidence.summary(), "partial": evaluated.partial,
               "environment": run_environment(),
               "feature_cache": prepared.feature_cache.stats() if prepared.feature_cache is not None else None}
    atomic_write_json(results_dir / "run_summary.json", summary)
    atomic_write_json(results_dir / COMPLETED, {"identity": prepared.identity_hash, "overall": overall,
                                                "partial": evaluated.partial,
                                                "finished": time.strftime("%Y-%m-%d %H:%M:%S")})

    skipped = {name: entry["skipped_total"] for name, entry in bad_data.items() if entry["skipped_total"]}
    if skipped:
        log.warning("skipped unusable examples per dataset: %s (each counted once; details in run_summary.json)",
                    skipped)
    stray = {name: len(entry["stray_members"]) for name, entry in bad_data.items() if entry.get("stray_members")}
    if stray:  # not examples, so not in the counts above: what else the shards hold
        log.info("shard members that are part of no example (no audio, no .json), ignored, per dataset: %s "
                 "(listed in run_summary.json, bad_data.<dataset>.stray_members)", stray)
    print(format_table(rows, overall, extra_columns))
    if evaluated.partial:
        print(f"PARTIAL: only the first {request.limit} test examples of each test set were evaluated (--limit "
              f"{request.limit}); these scores are not comparable with full evaluations")
    print(f"\nResults in {results_dir}")
    if request.write_report:
        _write_report(results_dir)
    return overall


def _measured(training: dict, task_summaries: dict[str, dict], evaluated: "Evaluated") -> dict:
    """The figures of the training and the evaluations behind these scores, as they measured them: a run that
    reuses them (a rerun, a --limit look at a finished training) repeats them and never writes its own
    near-zero times over them (this command's own figures go under `this_run`)."""
    steps, seconds = training.get("steps"), training.get("train_seconds")
    per_task = [summary.get("eval_seconds") for summary in task_summaries.values()]
    return {"steps": steps, "train_seconds": seconds,
            "train_steps_per_second": steps / seconds if steps and seconds else None,
            "trained_at": training.get("finished"), "train_device": training.get("device"),
            "eval_seconds": sum(per_task) if None not in per_task else evaluated.eval_seconds}


def _reuses(results_dir: Path, identity_hash: str, trained: "Trained", task_summaries: dict[str, dict]) -> list[dict]:
    """Every run that reused this training for these results, oldest first: the earlier ones from the summary
    being replaced (same identity), and this one when it reused the training."""
    earlier = []
    previous = results_dir / "run_summary.json"
    if previous.is_file():
        try:
            recorded = json.loads(previous.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = {}
        if isinstance(recorded, dict) and recorded.get("identity") == identity_hash:
            earlier = [entry for entry in recorded.get("reuses") or [] if isinstance(entry, dict)]
    if not trained.reused:
        return earlier
    return earlier + [{"when": time.strftime("%Y-%m-%d %H:%M:%S"), "training_identity": identity_hash,
                       "scores_reused": [task for task, summary in task_summaries.items() if summary.get("reused")]}]


def _write_report(results_dir: Path) -> None:
    try:
        from lalmbench.report.html import write_report

        report = write_report(results_dir)
        print(f"Report: {report}")
    except ImportError as exc:
        log.warning("report skipped (%s); install lalmbench[report] for it", exc)
    except Exception as exc:  # a report problem must not hide finished scores
        log.warning("report failed: %s: %s (scores are in %s)", type(exc).__name__, exc, results_dir)


def write_scores(run_dir: Path, rows: list[dict], confidence=None, limit: int | None = None) -> float:
    """scores.tsv; with `confidence` (report.confidence.RunConfidence) two more columns, ci_low and ci_high;
    with `limit` (a --limit evaluation) a last column `limit` saying on every row how many test examples per
    task were evaluated (readers that look columns up by name read the file as before)."""
    total_weight = sum(r["weight"] for r in rows)
    overall = sum(r["score"] * r["weight"] for r in rows) / total_weight if total_weight else float("nan")
    intervals = {task: c.interval for task, c in confidence.tasks.items()} if confidence else {}

    def bounds(interval) -> str:
        if confidence is None:
            return ""
        return "\t\t" if interval is None else f"\t{interval.low:.6f}\t{interval.high:.6f}"

    marked = "" if limit is None else f"\t{limit}"
    lines = ["Task\tscore\tweight" + ("\tci_low\tci_high" if confidence else "") + ("\tlimit" if marked else "")]
    lines += [f"{r['task']}\t{r['score']:.6f}\t{r['weight']:g}{bounds(intervals.get(r['task']))}{marked}" for r in rows]
    lines.append(f"Overall\t{overall:.6f}\t{total_weight:g}{bounds(confidence.overall if confidence else None)}{marked}")
    atomic_write_text(run_dir / "scores.tsv", "\n".join(lines) + "\n")
    return overall


def write_predictions(path: Path, predictions: list[tuple[str, str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["prediction", "reference", "key"])
    writer.writerows(predictions)
    atomic_write_text(path, buffer.getvalue())


def format_table(rows: list[dict], overall: float, extra: dict[str, dict[str, str]] | None = None) -> str:
    extra = extra or {}
    extra_cols = sorted({k for v in extra.values() for k in v})
    header = ["Task", "metric", "score", "weight"] + extra_cols
    body = [[r["task"], r["metric"], f"{r['score']:.4f}", f"{r['weight']:g}"] +
            [extra.get(r["task"], {}).get(c, "") for c in extra_cols] for r in rows]
    body.append(["Overall", "", f"{overall:.4f}", f"{sum(r['weight'] for r in rows):g}"] +
                [extra.get("Overall", {}).get(c, "") for c in extra_cols])
    # disable_numparse: the cells stay as formatted above (tabulate would print 0.5000 as 0.5)
    return tabulate(body, header, tablefmt="simple", disable_numparse=True)
