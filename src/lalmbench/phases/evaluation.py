"""Phase 3: every test set scored, or its cached score reused.

    results directory (the run directory; <run_dir>/limit-N/ for --limit N)
    per test set: evaluation identity (training identity, evaluation-only settings, the test set's config
    and shards, the limit) -> rank 0 looks for a cached score under it (scores/<task>.json with
    predictions_<task>.csv beside it) and tells every process -> reuse it, or evaluate (lalmbench.evaluate)
    and keep predictions and score with the test set's bad-data count -> Evaluated

Uses the model of `Prepared` as the training phase left it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lalmbench.config import EvalTaskConfig
from lalmbench.data.examples import BadDataCounter
from lalmbench.distributed import broadcast_object
from lalmbench.evaluate import evaluate_task
from lalmbench.identity import evaluation_identity
from lalmbench.io_utils import atomic_write_json
from lalmbench.phases.preparation import Prepared
from lalmbench.phases.results import write_predictions
from lalmbench.phases.run_directory import digest
from lalmbench.run_configs import partial_results_dir

log = logging.getLogger("lalmbench")


@dataclass
class Evaluated:
    """The scores, in the eval config's order, and where they were written."""

    results_dir: Path  # the run directory, or its limit-N directory for --limit N
    partial: dict | None  # {"limit": N} for a --limit evaluation
    rows: list[dict]  # per test set: task, metric, score, weight
    task_summaries: dict[str, dict]  # per test set: metric, metric_args, score, weight, num_examples,
    # eval_seconds (of the evaluation that scored it: now, or the earlier one whose score is reused), reused
    eval_seconds: float  # this command's evaluation phase


def evaluate_or_reuse(prepared: Prepared) -> Evaluated:
    started = time.perf_counter()
    limit = prepared.request.limit
    # A --limit evaluation goes into a directory of its own, with the limit in its evaluation identity.
    results_dir = prepared.run_dir if limit is None else partial_results_dir(prepared.run_dir, limit)
    if prepared.dist.is_main and limit is not None:
        results_dir.mkdir(exist_ok=True)
        for name in ("run_identity.json", "eval_config.yaml"):  # what compare and the leaderboard read beside scores
            shutil.copy2(prepared.run_dir / name, results_dir / name)
    rows, task_summaries = [], {}
    for task in prepared.tasks:
        score, count, seconds, reused = _score(prepared, task, results_dir)
        rows.append({"task": task.name, "metric": task.metric, "score": float(score), "weight": task.weight})
        task_summaries[task.name] = {"metric": task.metric, "metric_args": task.metric_args, "score": float(score),
                                     "weight": task.weight, "num_examples": count, "eval_seconds": seconds,
                                     "reused": reused}
    return Evaluated(results_dir=results_dir, partial=None if limit is None else {"limit": limit}, rows=rows,
                     task_summaries=task_summaries, eval_seconds=time.perf_counter() - started)


def _score(prepared: Prepared, task: EvalTaskConfig, results_dir: Path) -> tuple[float, int, float | None, bool]:
    """One test set's score, number of examples, the seconds its evaluation took and whether it was reused:
    cached under its evaluation identity (rank 0 decides, every process follows), or evaluated now and
    cached. Its bad-data count goes into the run's account either way."""
    config, dist, limit = prepared.config, prepared.dist, prepared.request.limit
    cache_file = results_dir / "scores" / f"{task.name}.json"
    decided = None
    if dist.is_main:
        eval_identity = evaluation_identity(prepared.identity_hash, config, task, prepared.eval_shards[task.name],
                                            prepared.home)
        if limit is not None:
            eval_identity = {**eval_identity, "limit": limit}
        eval_key = digest(eval_identity)
        found = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
        reuse = (found.get("key") == eval_key and not prepared.request.force
                 and (results_dir / f"predictions_{task.name}.csv").is_file())
        decided = (eval_key, eval_identity, found if reuse else None)
    eval_key, eval_identity, cached = broadcast_object(dist, decided)
    if cached:
        log.info("%s: reusing the cached score %.4f (same run identity and test config: evaluation identity "
                 "%s)", task.name, cached["score"], eval_key[:12])
        # The test set's bad-data count, kept with its score: a run that resumes evaluation reports it too.
        prepared.bad_data.merge(BadDataCounter.from_dict(cached.get("bad_data", {})))
        return cached["score"], cached["num_examples"], cached.get("seconds"), True
    task_counts = BadDataCounter()
    result = evaluate_task(prepared.model, task, prepared.eval_shards[task.name], config, prepared.tokenizing, dist,
                           task_counts, workers=min(task.num_workers, config.num_workers) if config.num_workers else 0,
                           show_progress=prepared.request.show_progress, limit=limit)
    prepared.bad_data.merge(task_counts)
    score, count = result.score, len(result.predictions)
    if dist.is_main:
        write_predictions(results_dir / f"predictions_{task.name}.csv", result.predictions)
        atomic_write_json(cache_file, {"key": eval_key, "identity": eval_identity, "score": score,
                                       "metric": task.metric, "num_examples": count,
                                       "seconds": result.seconds, "bad_data": task_counts.as_dict()})
    log.info("%s [%s]: %.4f (%d examples, %.1f s)", task.name, task.metric, score, count, result.seconds)
    return score, count, result.seconds, False
