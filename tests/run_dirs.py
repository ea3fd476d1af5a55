"""Finished run directories written here with the files `lalmbench run` leaves (scores.tsv, predictions,
run_summary.json, run_identity.json, eval_config.yaml, COMPLETED), from answers chosen by the test.

Scores are computed by `lalmbench.metrics.compute`, as the runner computes them, so a test can check the
confidence code against the metric itself.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from lalmbench import metrics


def write_run(root: Path, encoder: str, tasks: dict[str, dict], seed: int = 42, protocol: str | None = "official",
              directory: str | None = None, train: dict | None = None, summary: dict | None = None,
              identity: dict | None = None) -> Path:
    """`tasks`: eval name -> {"metric", "rows": [(prediction, reference, key), ...], optional "metric_args",
    "weight", "data"}. `train` updates the identity's training settings, `identity` its other parts (e.g.
    the decoder), `summary` adds to run_summary.json (e.g. data_revisions, evaluation_settings). Returns the
    run directory `<root>/<directory or encoder>`."""
    run_dir = root / (directory or encoder)
    run_dir.mkdir(parents=True)
    summaries, lines = {}, ["Task\tscore\tweight"]
    eval_config = {}
    for name, task in tasks.items():
        rows, args = task["rows"], dict(task.get("metric_args", {}))
        score = metrics.compute(task["metric"], [p for p, _, _ in rows], [r for _, r, _ in rows],
                                protocol=protocol or "corrected", **args)
        with open(run_dir / f"predictions_{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["prediction", "reference", "key"])
            writer.writerows(rows)
        weight = task.get("weight", 1.0)
        summaries[name] = {"metric": task["metric"], "metric_args": args, "score": score, "weight": weight,
                           "num_examples": len(rows)}
        eval_config[name] = {"data": task.get("data", {"data": [f"{name}/test-*.tar"], "key": "label"}),
                             "metric": task["metric"], "metric_args": args, "batch_size": 8, "num_workers": 0,
                             "weight": weight}
        lines.append(f"{name}\t{score:.6f}\t{weight:g}")
    overall = sum(s["score"] * s["weight"] for s in summaries.values()) / sum(s["weight"] for s in summaries.values())
    lines.append(f"Overall\t{overall:.6f}\t{len(tasks)}")
    (run_dir / "scores.tsv").write_text("\n".join(lines) + "\n")
    written = {"encoder_name": encoder, "train_config": "train", "tasks": summaries, "overall": overall,
               **(summary or {})}
    if protocol is not None:
        written["protocol"] = protocol
    (run_dir / "run_summary.json").write_text(json.dumps(written))
    identity = {"encoder": {"file_sha256": encoder}, "model_args": {}, "decoder": "tiny-random",
                "train": {"seed": seed, "max_steps": 40, **(train or {})}, **(identity or {})}
    (run_dir / "run_identity.json").write_text(json.dumps({"hash": f"{encoder}-{seed}", "identity": identity}))
    (run_dir / "eval_config.yaml").write_text(yaml.safe_dump(eval_config))
    (run_dir / "COMPLETED").write_text("{}")
    return run_dir


def seed_group(root: Path, runs: list[Path]) -> Path:
    """A seed-group directory as `lalmbench run --seeds` writes it, listing `runs` (inside `root`)."""
    (root / "seed_group.json").write_text(json.dumps({"runs": [str(run.relative_to(root)) for run in runs]}))
    return root
