"""Demo training throughput alone and beside one CPU-bound competitor, old and new thread settings.

    python scripts/thread_fairness.py [--steps 300] [--seconds 60] [--output-dir /tmp/fairness]

For each setting it runs `lalmbench demo` twice: on an idle machine and with one busy-looping process
beside it, and reads the training rate from train_log.csv over at most --seconds of training after
step 10 (start-up is left out, and the run is stopped before evaluation). The ratio busy/idle says how much of its throughput a run keeps
when it shares the cores; a fair share on 2 cores with one competitor is about 50%.

Settings:
  before  2 torch threads, OpenMP's default waiting (spins before sleeping): the demo as it was
  after   threads from the usable cores, OMP_WAIT_POLICY=PASSIVE (lalmbench.threads)

Figures depend on the machine and whatever else runs on it: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "before": ({"OMP_WAIT_POLICY": "unset"}, {"torch_num_threads": 2}),
    "after": ({}, {}),
}


def demo_rate(output: Path, steps: int, env_changes: dict, overrides: dict, competitor: bool,
              seconds: float) -> float:
    """Training steps per second of `lalmbench demo`, measured from train_log.csv over at most `seconds`
    of training after the first 10 steps (the run is stopped there: evaluation is not what is measured)."""
    if output.exists():
        shutil.rmtree(output)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for key, value in env_changes.items():
        if value != "unset":
            env[key] = value
    if env_changes.get("OMP_WAIT_POLICY") == "unset":
        # lalmbench's CLI sets PASSIVE unless a value is present; an empty value is one libgomp ignores
        env["OMP_WAIT_POLICY"] = ""
    args = {"max_steps": steps, "save_steps": steps, **overrides}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
    demo = subprocess.Popen([sys.executable, "-m", "lalmbench", "demo", "--output-dir", str(output), "--args",
                             json.dumps(args)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = None
        while demo.poll() is None:
            time.sleep(1.0)
            rows = _rows(output)
            if deadline is None and rows and int(rows[-1]["step"]) >= 10:
                deadline = time.monotonic() + seconds
            if deadline is not None and (time.monotonic() > deadline or int(rows[-1]["step"]) >= steps):
                break
    finally:
        os.killpg(demo.pid, 9) if demo.poll() is None else None
        demo.wait()
        if busy is not None:
            busy.kill()
            busy.wait()
    rows = [r for r in _rows(output) if int(r["step"]) >= 10]
    first, last = rows[0], rows[-1]
    return (int(last["step"]) - int(first["step"])) / (float(last["elapsed_seconds"]) - float(first["elapsed_seconds"]))


def _rows(output: Path) -> list[dict]:
    logs = list(output.glob("runs/*/*/train_log.csv"))
    if not logs:
        return []
    with logs[0].open() as handle:
        return [row for row in csv.DictReader(handle) if row.get("elapsed_seconds")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="steps at most per measurement")
    parser.add_argument("--seconds", type=float, default=60.0, help="training seconds at most per measurement")
    parser.add_argument("--output-dir", default="/tmp/lalmbench-fairness")
    args = parser.parse_args()
    root = Path(args.output_dir)
    results = {}
    for name, (env_changes, overrides) in SETTINGS.items():
        idle = demo_rate(root / f"{name}-idle", args.steps, env_changes, overrides, False, args.seconds)
        busy = demo_rate(root / f"{name}-busy", args.steps, env_changes, overrides, True, args.seconds)
        results[name] = {"idle_steps_per_second": idle, "busy_steps_per_second": busy, "busy_over_idle": busy / idle}
        print(f"{name:7s} idle {idle:7.2f} steps/s  with one competitor {busy:7.2f} steps/s  ratio {busy / idle:.0%}",
              flush=True)
    print(json.dumps({"cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), **results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
