"""Both systems trained and evaluated end to end on the demo suite, several seeds each: how far the two
scores are apart beside how far seeds move either one (docs/fidelity.md, "End to end").

    python scripts/parity/end_to_end.py [--steps 600] [--seeds 1 2 3] [--encoder lalmbench.encoders.LogMelEncoder]

The published system runs through its own command line (`python -m xares_llm.run ENCODER TRAIN EVAL`) with
the encoder given by dotted path; lalmbench through `lalmbench run ... --protocol official`. Both get the
demo's four training sets (tones, chords, count, melody; equal weights), the same decoder folder
($PARITY_WORK/tinydec), the same schedule (steps, learning rate 3e-3, 100 warm-up steps, batch 4, the
published shuffle and sort buffers), a loss row every step and one torch thread each (the published
default), and the demo's test sets. Each run writes under $PARITY_WORK/e2e/steps<N>/<system>/seed<N>; a
finished run is reused (delete its folder to run it again). --lalmbench-folder and --lalmbench-python run
the lalmbench side again into another folder with another interpreter (another environment).

Printed per task: each system's mean and standard deviation over the seeds, the difference of the means,
and the seed-to-seed spread. Then run by run, with targets: every task's score (the published scores.tsv
has 3 decimals: equal within 5e-4), every step's loss (the published log rounds it to 4 decimals) and
gradient norm (1e-4 relative) with the first step that differs, and every task's (prediction, reference)
pairs (the published predictions CSV is in batch order: compared as multisets). Under protocol official
lalmbench follows the published data order (docs/fidelity.md, "Same data order"), so on the CPU the two
systems should give the same numbers for the same seed.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from kit import DEMO, WORK, Tally, lalmbench_name, need, tiny_decoder

DATASETS = {"tones": "Classify the tone.", "chords": "Which notes sound together?",
            "count": "How many tones sound at once?", "melody": "Transcribe the melody."}
SCHEDULE = {"learning_rate": 0.003, "warmup_steps": 100, "per_device_train_batch_size": 4}


def train_data() -> dict:
    return {name: {"data": [str(DEMO / name / f"{name}-train-{{000000..000001}}.tar.gz")], "prompt": prompt,
                   "key": "label", "prob": 1} for name, prompt in DATASETS.items()}


def write_configs(folder: Path, steps: int) -> tuple[Path, Path, Path]:
    """(published train YAML, lalmbench train YAML, eval YAML shared by both)."""
    folder.mkdir(parents=True, exist_ok=True)
    # a loss row every step (both systems), one torch thread each (the published default): equal arithmetic
    common = {"decoder_model_name": tiny_decoder(), "max_steps": steps, "save_steps": steps, "logging_steps": 1,
              "torch_num_threads": 1, **SCHEDULE, "train_data": train_data()}
    published, ours, evaluation = folder / "train_published.yaml", folder / "train_lalmbench.yaml", folder / "eval.yaml"
    texts = {published: yaml.safe_dump({**common, "sort_by_length": 128}, sort_keys=False),
             ours: yaml.safe_dump({**common, "shuffle_buffer": 256, "sort_buffer": 128, "protocol": "official"},
                                  sort_keys=False),
             evaluation: need(DEMO / "eval.yaml", "demo shards", "lalmbench demo --data-only $PARITY_WORK/demo"
                              ).read_text()}
    for path, text in texts.items():  # left alone when unchanged: another instance's runs may be reading it
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
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


def published_steps(folder: Path) -> dict[int, tuple[float, float]]:
    """step -> (loss, grad norm) from the published run's trainer_state.json (HF rounds the loss to 4 decimals)."""
    found = sorted(folder.glob("**/checkpoint-*/trainer_state.json"))
    if not found:
        return {}
    history = json.loads(found[-1].read_text())["log_history"]
    return {row["step"]: (row["loss"], row["grad_norm"]) for row in history if "loss" in row and "grad_norm" in row}


def our_steps(folder: Path) -> dict[int, tuple[float, float]]:
    found = sorted(folder.glob("**/train_log.csv"))
    if not found:
        return {}
    with open(found[0]) as handle:
        return {int(row["step"]): (float(row["loss"]), float(row["grad_norm"])) for row in csv.DictReader(handle)}


def predictions(folder: Path, prediction: str, reference: str) -> dict[str, collections.Counter]:
    """task -> the (prediction, reference) pairs of its predictions_<task>.csv, read from the named columns
    (the published system writes predict/labels, lalmbench prediction/reference); batch order differs, so
    they are compared as a multiset."""
    found = {}
    for path in folder.glob("**/predictions_*.csv"):
        with open(path) as handle:
            found[path.stem[len("predictions_"):]] = collections.Counter(
                (row[prediction], row[reference]) for row in csv.DictReader(handle))
    return found


def compare_runs(tally: Tally, seed: int, published: Path, ours: Path) -> None:
    """Per step: loss and gradient norm, to the precision the logs keep (the published trainer_state.json
    rounds the loss to 4 decimals: 6e-5 allows that and float32 printing; lalmbench's train_log.csv writes
    the gradient norm with 6 digits: 1e-5 relative); per task: the (prediction, reference) pairs."""
    theirs, mine = published_steps(published), our_steps(ours)
    steps = sorted(set(theirs) & set(mine))
    if steps:
        loss_diff = [abs(theirs[k][0] - mine[k][0]) for k in steps]
        norm_diff = [abs(theirs[k][1] - mine[k][1]) / max(abs(theirs[k][1]), 1e-12) for k in steps]
        first = next((k for k, a, b in zip(steps, loss_diff, norm_diff) if a > 6e-5 or b > 1e-5), None)
        print(f"seed {seed}: {len(steps)} steps in both logs; first step whose loss differs by more than 6e-5 "
              f"or whose gradient norm differs by more than 1e-5 relative: {first}"
              + (f" (loss {theirs[first][0]} / {mine[first][0]:.6f}, gradient norm {theirs[first][1]:.6g} / "
                 f"{mine[first][1]:.6g})" if first else ""))
        tally.compare(f"seed {seed} largest loss |diff| over {len(steps)} steps", 0.0, max(loss_diff), 6e-5)
        tally.compare(f"seed {seed} largest relative gradient norm |diff|", 0.0, max(norm_diff), 1e-5)
    weights = sorted(published.glob("**/checkpoint-*/model.safetensors")), sorted(ours.glob("**/final_weights.pt"))
    if weights[0] and weights[1]:
        import torch
        from safetensors.torch import load_file

        theirs_w, mine_w = load_file(str(weights[0][-1])), torch.load(weights[1][0], map_location="cpu")
        pairs = [(t, mine_w[lalmbench_name(n)]) for n, t in theirs_w.items() if lalmbench_name(n) in mine_w]
        largest = max((float((a.float() - b.float()).abs().max()) for a, b in pairs), default=float("inf"))
        identical = sum(torch.equal(a, b) for a, b in pairs)
        tally.compare(f"seed {seed} trained tensors: largest |diff| ({identical} of {len(pairs)} bit-identical)",
                      0.0, largest, 0.0)
    their_predictions = predictions(published, "predict", "labels")
    my_predictions = predictions(ours, "prediction", "reference")
    for task in sorted(set(their_predictions) & set(my_predictions)):
        same = sum((their_predictions[task] & my_predictions[task]).values())
        total = sum(their_predictions[task].values())
        tally.compare(f"seed {seed} {task} identical (prediction, reference) pairs (of {total})", total, same, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--encoder", default="lalmbench.encoders.LogMelEncoder")
    parser.add_argument("--systems", nargs="+", default=["published", "lalmbench"], choices=["published", "lalmbench"])
    parser.add_argument("--lalmbench-folder", default="lalmbench",
                        help="folder under e2e/steps<N> for the lalmbench runs (another one keeps a second set)")
    parser.add_argument("--lalmbench-python", default=sys.executable,
                        help="the interpreter of the lalmbench runs (e.g. the project's own virtual environment)")
    args = parser.parse_args()
    root = WORK / "e2e" / f"steps{args.steps}"
    published_yaml, our_yaml, eval_yaml = write_configs(root, args.steps)
    scores: dict[str, dict[int, dict[str, float]]] = {"published": {}, "lalmbench": {}}
    for seed in args.seeds:
        for system in args.systems:
            folder = root / (system if system == "published" else args.lalmbench_folder) / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            read = published_scores if system == "published" else our_scores
            if not read(folder):
                if system == "published":
                    command = [sys.executable, "-m", "xares_llm.run", args.encoder, str(published_yaml), str(eval_yaml),
                               "--args", json.dumps({"seed": seed, "output_dir": str(folder)})]
                else:
                    command = [args.lalmbench_python, "-m", "lalmbench", "run", args.encoder, str(our_yaml), str(eval_yaml),
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

    # Run by run: the published scores.tsv has 3 decimals, so a score is "the same" within half of 0.001.
    tally = Tally(f"end to end, {args.steps} steps, published beside lalmbench ({args.lalmbench_folder})")
    for seed in args.seeds:
        published, ours = scores["published"].get(seed), scores["lalmbench"].get(seed)
        if not published or not ours:
            continue
        for task in sorted(set(published) & set(ours)):
            tally.compare(f"seed {seed} {task} score", published[task], ours[task], 5e-4 + 1e-9, digits=4)
        compare_runs(tally, seed, root / "published" / f"seed{seed}", root / args.lalmbench_folder / f"seed{seed}")
    tally.finish()


if __name__ == "__main__":
    main()
