"""Both systems trained and evaluated end to end on the demo suite, several seeds each: how far the two
scores are apart beside how far seeds move either one (docs/fidelity.md, "End to end").

    python scripts/parity/end_to_end.py [--steps 600] [--seeds 1 2 3] [--encoder lalmbench.encoders.LogMelEncoder]

The published system runs through its own command line (`python -m xares_llm.run ENCODER TRAIN EVAL`) with
the encoder given by dotted path; lalmbench through `lalmbench run ... --protocol official`. Both get the
demo's four training sets (tones, chords, count, melody; equal weights), the same decoder folder
($PARITY_WORK/tinydec), the same schedule (steps, learning rate 3e-3, 100 warm-up steps, batch 4, the
published shuffle and sort buffers) and the demo's test sets. Each run writes under
$PARITY_WORK/e2e/<system>/seed<N>; a finished run is reused (delete its folder to run it again).

Printed per task: each system's mean and standard deviation over the seeds, the difference of the means,
and the seed-to-seed spread (the larger of the two standard deviations) for scale. Note that the
published data pipeline seeds its shard sampling and shuffle buffer with a fixed 42 whatever the seed
setting: its seed changes the initial weights, the dropout and the dataset drawn for each example, not
which shards are read in which order; lalmbench's seed changes its whole data order.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from kit import DEMO, WORK, need, tiny_decoder

DATASETS = {"tones": "Classify the tone.", "chords": "Which notes sound together?",
            "count": "How many tones sound at once?", "melody": "Transcribe the melody."}
SCHEDULE = {"learning_rate": 0.003, "warmup_steps": 100, "per_device_train_batch_size": 4}


def train_data() -> dict:
    return {name: {"data": [str(DEMO / name / f"{name}-train-{{000000..000001}}.tar.gz")], "prompt": prompt,
                   "key": "label", "prob": 1} for name, prompt in DATASETS.items()}


def write_configs(folder: Path, steps: int) -> tuple[Path, Path, Path]:
    """(published train YAML, lalmbench train YAML, eval YAML shared by both)."""
    folder.mkdir(parents=True, exist_ok=True)
    common = {"decoder_model_name": tiny_decoder(), "max_steps": steps, "save_steps": steps, "logging_steps": 100,
              **SCHEDULE, "train_data": train_data()}
    published = folder / "train_published.yaml"
    published.write_text(yaml.safe_dump({**common, "sort_by_length": 128}, sort_keys=False))
    ours = folder / "train_lalmbench.yaml"
    ours.write_text(yaml.safe_dump({**common, "shuffle_buffer": 256, "sort_buffer": 128, "protocol": "official"},
                                   sort_keys=False))
    evaluation = folder / "eval.yaml"
    evaluation.write_text((need(DEMO / "eval.yaml", "demo shards", "lalmbench demo --data-only $PARITY_WORK/demo")
                           ).read_text())
    return published, ours, evaluation


def run(command: list[str], log: Path, cwd: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - started


def published_scores(folder: Path) -> dict[str, float]:
    found = sorted(folder.glob("**/scores.tsv"))
    if not found:
        return {}
    with open(found[0]) as handle:
        return {row["Task"]: float(row["score"]) for row in csv.DictReader(handle, delimiter="\t")}


def our_scores(folder: Path) -> dict[str, float]:
    found = sorted(folder.glob("**/scores.tsv"))
    if not found:
        return {}
    with open(found[0]) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    task, score = ("task", "score") if rows and "task" in rows[0] else ("Task", "score")
    return {row[task]: float(row[score]) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--encoder", default="lalmbench.encoders.LogMelEncoder")
    parser.add_argument("--systems", nargs="+", default=["published", "lalmbench"], choices=["published", "lalmbench"])
    args = parser.parse_args()
    root = WORK / "e2e" / f"steps{args.steps}"
    published_yaml, our_yaml, eval_yaml = write_configs(root, args.steps)
    scores: dict[str, dict[int, dict[str, float]]] = {"published": {}, "lalmbench": {}}
    for seed in args.seeds:
        for system in args.systems:
            folder = root / system / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            read = published_scores if system == "published" else our_scores
            if not read(folder):
                if system == "published":
                    command = [sys.executable, "-m", "xares_llm.run", args.encoder, str(published_yaml), str(eval_yaml),
                               "--args", json.dumps({"seed": seed, "output_dir": str(folder)})]
                else:
                    command = [sys.executable, "-m", "lalmbench", "run", args.encoder, str(our_yaml), str(eval_yaml),
                               "--seed", str(seed), "--output-dir", str(folder), "--no-report", "--no-download"]
                seconds = run(command, folder / "log.txt", folder)
                print(f"{system} seed {seed}: {seconds:.0f} s", flush=True)
            scores[system][seed] = read(folder)
            print(f"{system} seed {seed}: {scores[system][seed]}", flush=True)

    tasks = sorted({t for by_seed in scores.values() for s in by_seed.values() for t in s})
    print(f"\n{'task':14s} {'published mean±sd':>20s} {'lalmbench mean±sd':>20s} {'|diff of means|':>16s} {'seed spread':>12s}")
    for task in tasks:
        columns = []
        for system in ("published", "lalmbench"):
            values = [by_task[task] for by_task in scores[system].values() if task in by_task]
            mean = statistics.mean(values) if values else float("nan")
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            columns.append((mean, sd, values))
        (pm, ps, pv), (lm, ls, lv) = columns
        print(f"{task:14s} {pm:>11.4f} ± {ps:<6.4f} {lm:>11.4f} ± {ls:<6.4f} {abs(pm - lm):>16.4f} {max(ps, ls):>12.4f}"
              f"   per seed: published {[round(v, 4) for v in pv]} lalmbench {[round(v, 4) for v in lv]}")


if __name__ == "__main__":
    main()
