"""Dress rehearsal: the published suites task1 and task2, end to end, on a loopback mirror of their data.

    python scripts/rehearsal/rehearse.py [--work DIR] [--passes 3] [--only main|truncated]
                                         [--max-bad-fraction 0.1] [--keep]

1. Writes the mirror (mirror.py: every shard the built-in task1/task2/all configs name, in the hub's
   layout, with the planted faults of its docstring) and serves it with the tests' hub stand-in
   (tests/hub_server.py) on 127.0.0.1; HF_ENDPOINT points every command at it.
2. `lalmbench download task1` and `lalmbench download task2`, as a user would.
3. `lalmbench run lalmbench.encoders.LogMelEncoder task1` and `... task2`: the built-in configs unchanged
   except `max_steps` (enough for `--passes` passes over the dataset that needs the most steps per pass),
   the `tiny-random` decoder, and `max_bad_fraction` (the mirror's datasets are small, so the planted
   faults are a few percent of each; the default 1% would stop at the first of them). Every test set is
   evaluated in full. When the caption metrics' models (Sentence-BERT, the FENSE error checker) cannot
   be found, tiny stand-ins built like tests/test_captions.py's replace them, and the output says so:
   their FENSE/DATE numbers are then no measure of caption quality.
4. Prints one row per dataset: examples, planted faults, unusable examples expected and counted (from
   run_summary.json's bad-data account, training and test set), score, time; checks expected == counted
   for every dataset and test set. The published sampler draws each dataset's shards with replacement, so
   a shard may never be opened in a short run: a fault is expected only when the account shows its shard
   was read (the writer puts faults at the start of their shard, so an opened shard has had them read).
   `--tabulate --work DIR` prints the table again from an earlier rehearsal's folder.
5. Variant `truncated` (run after the main one): the same mirror with one training shard cut short;
   `lalmbench run task2` must stop (non-zero status) and name the shard, on stderr and in log.txt.

Exit status 0 only when every count matches and the truncated shard stopped its run by name.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the loopback hub stand-in lives with the tests

import mirror  # noqa: E402
from hub_server import HubServer  # noqa: E402

ENCODER = "lalmbench.encoders.LogMelEncoder"
SUITES = ("task1", "task2")
BATCH = 4  # the protocol's examples per optimizer step


def log(message: str) -> None:
    print(f"[rehearsal {time.strftime('%H:%M:%S')}] {message}", flush=True)


def steps_for_passes(suite: str, manifest: dict, passes: float) -> tuple[int, dict[str, float]]:
    """max_steps that gives every dataset of `suite` at least `passes` passes, and the passes each gets."""
    from lalmbench.tasks.listing import train_shares

    shares = train_shares(suite)
    per_pass = {name: manifest["datasets"][name]["train_examples"] / (BATCH * share) for name, share in shares.items()}
    steps = int(math.ceil(passes * max(per_pass.values()) / 100.0)) * 100
    return steps, {name: steps / need for name, need in per_pass.items()}


def caption_models(work: Path) -> tuple[dict[str, str], str | None]:
    """Environment for the caption metrics: the real models when found, else stand-ins (and a note)."""
    from lalmbench.metrics import captions

    try:
        captions.caption_models_preflight(["FENSE", "DATE"])
        return {}, None
    except Exception as exc:  # noqa: BLE001 - any reason the real models are unusable here
        why = " ".join(str(exc).split())
    import test_captions  # the stand-in builders of the caption tests (tiny BERTs with a known geometry)

    root = work / "caption-models"
    if not (root / "sbert").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the stand-ins' save bars are noise here
        test_captions._build_sbert(root / "sbert")
        test_captions._build_echecker(root / "echecker" / "echecker.ckpt", error_logit=-20.0)
    env = {captions.SBERT_ENV: str(root / "sbert"), captions.ECHECKER_ENV: str(root / "echecker" / "echecker.ckpt")}
    note = (f"caption metric models REPLACED: the real Sentence-BERT / error checker are not available here ({why}); "
            f"FENSE and DATE use the tiny stand-ins of tests/test_captions.py ({captions.SBERT_ENV}={env[captions.SBERT_ENV]}, "
            f"{captions.ECHECKER_ENV}={env[captions.ECHECKER_ENV]}), so Clotho, Song Describer and MECAT scores are no "
            "measure of caption quality")
    return env, note


def run_command(args: list[str], env: dict, log_file: Path, timeout: float) -> tuple[int, float, str]:
    """Run a lalmbench command, its output to `log_file`; (status, seconds, output tail)."""
    started = time.monotonic()
    with open(log_file, "w", encoding="utf-8") as out:
        try:
            status = subprocess.run([sys.executable, "-m", "lalmbench", *args], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=timeout, cwd=log_file.parent).returncode
        except subprocess.TimeoutExpired:
            status = 124
    text = log_file.read_text(encoding="utf-8", errors="replace")
    return status, time.monotonic() - started, text[-4000:]


def base_env(hub: HubServer, work: Path, data_home: Path, extra: dict) -> dict:
    env = {**os.environ, **extra, "HF_ENDPOINT": hub.endpoint, "LALMBENCH_DATA_HOME": str(data_home),
           "HF_HOME": str(work / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    return env


def find_summary(runs: Path, suite: str) -> dict | None:
    found = sorted((runs / suite).glob("*/run_summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text(encoding="utf-8")) if found else None


def stray_count(entry: dict) -> int | None:
    """Members that belong to no example, when the summary reports them apart (field names tried in turn)."""
    for name in ("stray_members", "non_example_members", "members_without_example", "orphan_members"):
        value = entry.get(name)
        if isinstance(value, int):
            return value
        if isinstance(value, dict):
            return int(value.get("total", sum(v for v in value.values() if isinstance(v, int))))
        if isinstance(value, list):
            return len(value)
    return None


def write_or_reuse(root: Path, variant: str, seed: int, datasets: list[str] | None = None) -> dict:
    """The mirror's manifest; written unless `root` holds one made by the same recipe, code and seed."""
    import hashlib

    stamp = hashlib.sha256(mirror.RECIPE_FILE.read_bytes() + Path(mirror.__file__).read_bytes()).hexdigest()
    stamp_file = root / "recipe.sha256"
    if stamp_file.is_file() and stamp_file.read_text() == f"{stamp} {variant} {seed} {datasets}":
        log(f"reusing the mirror in {root} (same recipe, code and seed)")
        return json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    shutil.rmtree(root, ignore_errors=True)
    log(f"writing the mirror ({variant}) in {root}")
    started = time.monotonic()
    manifest = mirror.write_mirror(root, variant, seed, datasets)
    stamp_file.write_text(f"{stamp} {variant} {seed} {datasets}")
    log(f"mirror written in {time.monotonic() - started:.0f} s")
    return manifest


def truncated_copy(manifest: dict, source: Path, root: Path) -> str:
    """The main mirror again (hard links, so it costs no time), with mirror.TRUNCATED_SHARD cut short as
    the writer's `truncated` variant cuts it; returns the shard's path in its repo."""
    shutil.rmtree(root, ignore_errors=True)
    for repo in sorted({entry["repo_id"] for entry in manifest["datasets"].values()}):
        shutil.copytree(source / repo, root / repo, copy_function=os.link)
    repo = manifest["datasets"][mirror.TRUNCATED_DATASET]["repo_id"]
    target = root / repo / mirror.REVISION / mirror.TRUNCATED_SHARD
    data = target.read_bytes()
    target.unlink()  # a new file: the main mirror's copy stays whole
    target.write_bytes(data[:int(len(data) * mirror.TRUNCATE_AT)])
    log(f"truncated variant in {root}: {mirror.TRUNCATED_SHARD} cut to {mirror.TRUNCATE_AT:.0%} of its bytes")
    return mirror.TRUNCATED_SHARD


def rehearse_main(args, work: Path, caption_env: dict) -> tuple[list[dict], list[str], bool]:
    mirror_root = work / "mirror"
    manifest = write_or_reuse(mirror_root, "main", args.seed)
    findings: list[str] = []
    rows: list[dict] = []
    ok = True
    data_home, runs = work / "data", work / "runs"
    with HubServer(mirror_root) as hub:
        env = base_env(hub, work, data_home, caption_env)
        for suite in SUITES:
            status, seconds, tail = run_command(["download", suite], env, work / f"download_{suite}.log", 600)
            log(f"lalmbench download {suite}: status {status}, {seconds:.0f} s")
            if status != 0:
                findings.append(f"download {suite} failed (status {status}):\n{tail}")
                return rows, findings, False
        for suite in SUITES:
            steps, passes = (args.max_steps[suite], None) if args.max_steps.get(suite) else \
                steps_for_passes(suite, manifest, args.passes)
            if passes is None:
                passes = draws_per_example(suite, manifest, steps)
            log(f"lalmbench run {suite}: max_steps {steps}; training draws per example " +
                ", ".join(f"{n} {p:.1f}" for n, p in sorted(passes.items())))
            command = ["run", ENCODER, suite, "--decoder-model-name", "tiny-random", "--max-steps", str(steps),
                       "--max-bad-fraction", str(args.max_bad_fraction), "--output-dir", str(runs),
                       "--logging-steps", "100"]
            status, seconds, tail = run_command(command, env, work / f"run_{suite}.log", args.timeout)
            log(f"lalmbench run {suite}: status {status}, {seconds:.0f} s")
            summary = find_summary(runs, suite) if status == 0 else None
            if status != 0:
                ok = False
                findings.append(f"run {suite} stopped (status {status}); the end of its output:\n{tail}")
            rows += suite_rows(suite, manifest, summary, seconds, passes)
    for row in rows:
        ok &= row["match"]
    return rows, findings, ok


def shards_read(account: dict) -> list[str] | None:
    """The shard files a training account shows were opened (the published sampler draws shards with
    replacement, so some may never be); None when the summary does not say."""
    found: set[str] = set()
    known = False
    for field in ("seen_by_share", "seen_by_shard", "complete_shares", "complete_shards"):
        value = account.get(field)
        if isinstance(value, (dict, list)):
            known = True
            found |= {str(v) for v in value}
    for field in ("unusable_examples", "stray_members"):
        found |= {str(item[0]) for item in account.get(field) or [] if isinstance(item, list) and item}
    return sorted(found) if known else None


def suite_rows(suite: str, manifest: dict, summary: dict | None, seconds: float, passes: dict) -> list[dict]:
    """One row per dataset of `suite`: planted faults, those in shards the run read, what it counted."""
    from lalmbench.config import load_train_config

    recipes, shards = mirror.read_recipes(), mirror.config_shards()
    bad = (summary or {}).get("bad_data", {})
    tasks = (summary or {}).get("tasks", {})
    rows = []
    for name in load_train_config(suite).train_data:
        if name not in manifest["datasets"]:  # a mirror written for some datasets only
            continue
        entry = manifest["datasets"][name]
        faults = entry.get("faults") or mirror.fault_layout(recipes[name], shards[name])
        train_account, test_account = bad.get(name, {}), bad.get(entry["eval"], {})
        read = shards_read(train_account)
        opened = (lambda rel: True) if read is None else (lambda rel: any(p.endswith("/" + rel) for p in read))
        reachable = [f for f in faults if opened(f["shard"])]
        expected = sum(1 for f in reachable if f["counts_as"])
        expected_stray = sum(1 for f in reachable if f["stray"])
        expected_test = sum(entry["expected_bad_test"].values())
        counted = train_account.get("skipped_total") if summary else None
        counted_test = test_account.get("skipped_total", 0) if summary else None
        stray = stray_count(train_account) if summary else None
        task = tasks.get(entry["eval"], {})
        match = summary is not None and counted == expected and counted_test == expected_test and \
            stray in (None, expected_stray)
        shards_opened = len(shards[name].train) if read is None else \
            sum(1 for rel in shards[name].train if opened(rel))
        rows.append({"suite": suite, "dataset": name, "task": entry["eval"],
                     "examples": f"{entry['train_examples']}/{entry['test_examples']}",
                     "passes": passes.get(name), "shards_read": f"{shards_opened}/{len(shards[name].train)}",
                     "planted": sum(entry["planted"].values()), "reachable": len(reachable),
                     "expected": f"{expected}+{expected_test}", "counted": "-" if counted is None else
                     f"{counted}+{counted_test}", "by_reason": train_account.get("skipped", {}),
                     "test_by_reason": test_account.get("skipped", {}),
                     "stray": "-" if stray is None else stray, "expected_stray": expected_stray,
                     "score": task.get("score"), "metric": task.get("metric"),
                     "eval_seconds": task.get("eval_seconds"), "suite_seconds": seconds, "match": match})
    return rows


def rehearse_truncated(args, work: Path, caption_env: dict) -> tuple[bool, str]:
    """The truncated-shard variant: the run must stop and name the shard (stderr and log.txt)."""
    mirror_root = work / "mirror-truncated"
    shard = truncated_copy(write_or_reuse(work / "mirror", "main", args.seed), work / "mirror", mirror_root)
    name = Path(shard).name
    data_home, runs = work / "data-truncated", work / "runs-truncated"
    with HubServer(mirror_root) as hub:
        env = base_env(hub, work, data_home, caption_env)
        status, seconds, tail = run_command(["download", "task2"], env, work / "download_truncated.log", 600)
        log(f"lalmbench download task2 (truncated variant): status {status}, {seconds:.0f} s")
        if status != 0:
            return False, f"the download itself failed (status {status}); the truncated shard is {shard}:\n{tail}"
        command = ["run", ENCODER, "task2", "--decoder-model-name", "tiny-random", "--max-steps",
                   str(args.truncated_steps), "--max-bad-fraction", str(args.max_bad_fraction),
                   "--output-dir", str(runs)]
        status, seconds, tail = run_command(command, env, work / "run_truncated.log", args.timeout)
    log(f"lalmbench run task2 (truncated {shard}): status {status}, {seconds:.0f} s")
    named = name in tail
    logs = list(runs.glob("task2/*/log.txt"))
    in_log = any(name in p.read_text(encoding="utf-8", errors="replace") for p in logs)
    message = next((line for line in tail.splitlines() if name in line), "")
    report = (f"truncated shard {shard}: status {status} after {seconds:.0f} s; named in the output: {named}; "
              f"named in log.txt: {in_log if logs else 'no log.txt'}\n    {message.strip()[:600]}")
    return status != 0 and named, report


def draws_per_example(suite: str, manifest: dict, steps: int) -> dict[str, float]:
    from lalmbench.tasks.listing import train_shares

    return {name: steps * BATCH * share / manifest["datasets"][name]["train_examples"]
            for name, share in train_shares(suite).items()}


def tabulate(work: Path) -> int:
    """The table of the runs an earlier rehearsal left in `work`; 0 when every count matches."""
    manifest = json.loads((work / "mirror" / "manifest.json").read_text(encoding="utf-8"))
    rows = []
    for suite in SUITES:
        summary = find_summary(work / "runs", suite)
        steps = (summary or {}).get("max_steps", 0)
        seconds = ((summary or {}).get("this_run") or {}).get("total_seconds", 0.0)
        rows += suite_rows(suite, manifest, summary, seconds, draws_per_example(suite, manifest, steps))
    print_table(rows)
    return 0 if all(row["match"] for row in rows) else 1


def print_table(rows: list[dict]) -> None:
    header = ["suite", "task", "examples", "draws", "shards read", "planted", "expected", "counted", "stray", "score",
              "time", "ok"]
    lines = [header]
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.3f} {r['metric']}"
        took = "-" if r["eval_seconds"] is None else f"{r['eval_seconds']:.0f} s eval"
        lines.append([r["suite"], r["task"], r["examples"], "-" if r["passes"] is None else f"{r['passes']:.1f}",
                      r["shards_read"], f"{r['planted']} ({r['reachable']} read)", r["expected"], r["counted"],
                      f"{r['stray']}/{r['expected_stray']}", score, took, "yes" if r["match"] else "NO"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
    print("examples: train/test examples; draws: training examples drawn per example (max_steps x 4 x the dataset's "
          "mixture share / its examples); shards read: training shards the run opened (the published sampler draws "
          "shards with replacement, so some may never be); planted: faults planted (training shards, and the test set "
          "with a missing label), how many sit in shards the run read; expected/counted: unusable examples, training + "
          "test set (counted: run_summary.json's bad_data); stray: members outside any example reported apart / "
          "planted in shards read ('-': the summary has no such field); time: the test set's evaluation")
    for r in rows:
        if not r["match"]:
            print(f"  {r['task']}: counted {r['by_reason']} in training, {r['test_by_reason']} in the test set")
    for suite in dict.fromkeys(r["suite"] for r in rows):
        seconds = next(r["suite_seconds"] for r in rows if r["suite"] == suite)
        print(f"{suite}: lalmbench run took {seconds / 60:.1f} min (training and every test set)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder to work in (default: a temporary one, removed unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--passes", type=float, default=3.0, help="passes over the dataset needing most steps per pass")
    parser.add_argument("--max-steps-task1", type=int, help="override the computed max_steps of task1")
    parser.add_argument("--max-steps-task2", type=int, help="override the computed max_steps of task2")
    parser.add_argument("--max-bad-fraction", type=float, default=0.1)
    parser.add_argument("--truncated-steps", type=int, default=600)
    parser.add_argument("--only", choices=("main", "truncated"), help="run one variant only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per lalmbench run")
    parser.add_argument("--report", type=Path, help="write the rows and findings as JSON here")
    parser.add_argument("--tabulate", action="store_true",
                        help="run nothing: print the table of the runs already in --work")
    args = parser.parse_args(argv)
    args.max_steps = {"task1": args.max_steps_task1, "task2": args.max_steps_task2}
    if args.tabulate:
        if args.work is None:
            parser.error("--tabulate needs --work, the folder of an earlier rehearsal")
        return tabulate(args.work)

    work = args.work or Path(tempfile.mkdtemp(prefix="lalmbench-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    log(f"work folder {work}; {os.cpu_count()} CPUs, load average {' '.join(load)}")
    caption_env, note = caption_models(work)
    if note:
        log(note)
    ok, rows, findings = True, [], []
    try:
        if args.only in (None, "main"):
            rows, findings, ok = rehearse_main(args, work, caption_env)
            print()
            print_table(rows)
        if args.only in (None, "truncated"):
            stopped, report = rehearse_truncated(args, work, caption_env)
            findings.append(report)
            ok &= stopped
    finally:
        if args.report:
            args.report.write_text(json.dumps({"rows": rows, "findings": findings, "caption_note": note,
                                               "ok": ok, "seconds": time.monotonic() - started}, indent=1))
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for finding in findings:
        print("finding:", finding)
    if note:
        print("note:", note)
    print(f"rehearsal {'PASSED' if ok else 'FAILED'} in {(time.monotonic() - started) / 60:.1f} min "
          f"(load average at the end {' '.join(Path('/proc/loadavg').read_text().split()[:3])})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
