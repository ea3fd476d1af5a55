"""Several training seeds of one run identity: `lalmbench run ENCODER ... --seeds N`.

Flow: the training seed S (from --args, else the train config; 42 by default) -> runs with seeds S, S+1,
..., S+N-1, each a complete run of its own (train, evaluate, intervals, report) in
`<output>/<train config>/<encoder>-seeds/seed-<s>/` -> the group directory gets `seed_group.json` (its
runs and seeds; what `compare` and `leaderboard` read as one group) and `seed_scores.tsv` (per task the
mean, the sample standard deviation, the lowest and the highest score over the seeds) -> the table is
printed. A seed already trained with the same identity is
reused like any run, so `--seeds 5` after `--seeds 3` trains two more.

A group is keyed by what its runs share: the training identity less the seed (`group_key`). The same
settings again extend the group in place (its seeds are kept: `--seeds 2` after `--seeds 3` leaves three);
other settings (another max_steps, learning rate, encoder file, data, ...) make a new group in
`<encoder>-seeds-<key8>/`, beside the first, which is never rewritten.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from lalmbench.errors import ConfigError
from lalmbench.io_utils import atomic_write_json, atomic_write_text

SEED_GROUP_SUFFIX = "-seeds"


def seed_run_name(encoder_name: str, seed: int) -> str:
    return f"{encoder_name}{SEED_GROUP_SUFFIX}/seed-{seed}"


def seed_table(results: list, seeds: list[int]) -> tuple[list[dict], str]:
    """Per task: mean, spread, range over the seeds' results (RunResult), as rows and as a printed table."""
    rows = []
    for row in results[0].rows:
        task = row["task"]
        values = [result.scores[task] for result in results]
        rows.append({"task": task, "metric": row["metric"], "mean": statistics.fmean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values),
                     "max": max(values), "scores": values, "weight": row["weight"]})
    overall = [result.overall for result in results]
    rows.append({"task": "Overall", "metric": "weighted mean", "mean": statistics.fmean(overall),
                 "std": statistics.stdev(overall) if len(overall) > 1 else 0.0, "min": min(overall),
                 "max": max(overall), "scores": overall, "weight": sum(r["weight"] for r in results[0].rows)})
    header = ["Task", "metric", "mean", "sd", "min", "max"] + [f"seed {s}" for s in seeds]
    body = [[r["task"], r["metric"], f"{r['mean']:.4f}", f"{r['std']:.4f}", f"{r['min']:.4f}", f"{r['max']:.4f}"]
            + [f"{v:.4f}" for v in r["scores"]] for r in rows]
    # disable_numparse: the cells stay as formatted above (tabulate would print 0.5000 as 0.5)
    return rows, tabulate(body, header, tablefmt="simple", disable_numparse=True)


def run_seeds(encoder: str, train: str = "task1", eval: str | None = None, model_args: dict | None = None,
              overrides: dict | None = None, output_dir: str | Path = "lalmbench_runs", seeds: int = 2,
              force: bool = False, allow_download: bool = True, write_report: bool = True,
              show_progress: bool = True, task_names: list[str] | None = None, limit: int | None = None) -> Path:
    """Train and evaluate `seeds` seeds of one identity; returns the group directory. `task_names` picks
    datasets of the suite as for one run (the group then sits under `<train>@<tasks>/`)."""
    from lalmbench.encoders.loading import encoder_display_name
    from lalmbench.run_configs import resolve_configs
    from lalmbench.runner import run

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if limit is not None:
        raise ConfigError(f"--limit {limit} with --seeds {seeds}: a seed group measures the spread of full scores; "
                          "look at one seed with --limit first, then run the seeds without it")
    overrides = dict(overrides or {})
    config, _, _ = resolve_configs(train, eval, overrides, task_names)
    first = config.seed
    encoder_name = encoder_display_name(encoder)
    group_dir = Path(output_dir) / Path(config.config_name).name / f"{encoder_name}{SEED_GROUP_SUFFIX}"
    results = []
    for seed in range(first, first + seeds):
        print(f"\n== seed {seed} ({seed - first + 1} of {seeds}) ==")
        results.append(run(encoder, train, eval, model_args=model_args, overrides={**overrides, "seed": seed},
                           output_dir=output_dir, force=force, allow_download=allow_download,
                           write_report=write_report, show_progress=show_progress,
                           run_name=seed_run_name(encoder_name, seed), task_names=task_names))
    if os.environ.get("RANK", "0") != "0":  # under torchrun, the main process alone writes files
        return group_dir
    group_dir, members, key, settings = _place_group(group_dir, [Path(r.run_dir) for r in results])
    seed_list = [member.seed for member in members]
    rows, table = seed_table(members, seed_list)
    atomic_write_json(group_dir / "seed_group.json",
                      {"encoder": encoder, "encoder_name": encoder_name, "train_config": config.config_name,
                       "protocol": config.protocol, "seeds": seed_list, "group_key": key, "settings": settings,
                       "runs": [os.path.relpath(member.run_dir, group_dir) for member in members]})
    seeds = len(members)
    lines = ["Task\tmetric\tmean\tstd\tmin\tmax\tseeds"]
    lines += [f"{r['task']}\t{r['metric']}\t{r['mean']:.6f}\t{r['std']:.6f}\t{r['min']:.6f}\t{r['max']:.6f}\t"
              f"{len(r['scores'])}" for r in rows]
    atomic_write_text(group_dir / "seed_scores.tsv", "\n".join(lines) + "\n")
    print(f"\n== {seeds} seeds of {encoder_name} ==")
    print(table)
    print(f"\nSeed group in {group_dir} (pass it to `lalmbench compare` or `lalmbench leaderboard`)")
    return group_dir


@dataclass
class SeedRun:
    """One finished run of a group, as its run_summary.json gives it (what seed_table reads)."""

    run_dir: Path
    seed: int
    rows: list[dict]  # task, metric, weight
    scores: dict[str, float]
    overall: float


def _seed_run(run_dir: Path):
    from lalmbench.report.run_groups import read_record

    record = read_record(run_dir)
    tasks = record.summary.get("tasks") or {}
    rows = [{"task": task, "metric": info.get("metric"), "weight": info.get("weight", 1.0)} for task, info in tasks.items()]
    return SeedRun(run_dir, record.seed, rows, {task: info.get("score") for task, info in tasks.items()},
                   float(record.summary.get("overall", float("nan")))), record


def _group_key(record) -> str:
    from lalmbench.identity import digest

    return digest(record.identity_without_seed())


def _recorded_group(group_dir: Path) -> tuple[str | None, list[Path], object | None]:
    """(its key, its runs, the record of its first run) of the group written in `group_dir`; key None
    when the group's runs cannot be read (it is then never rewritten)."""
    recorded = json.loads((group_dir / "seed_group.json").read_text(encoding="utf-8"))
    runs = [group_dir / run for run in recorded.get("runs") or []]
    try:
        _, record = _seed_run(runs[0])
    except Exception:  # a group whose runs are gone or damaged: keep it as it is
        return recorded.get("group_key"), runs, None
    return recorded.get("group_key") or _group_key(record), runs, record


def _place_group(base: Path, run_dirs: list[Path]) -> tuple[Path, list[SeedRun], str, dict]:
    """The group directory for these runs and the group's runs (the kept ones of an earlier group of the same
    settings, then these), by seed: `base` when it holds no group or one of the same key, else
    `<base>-<key8>`. A group of other settings is never rewritten."""
    from lalmbench.report.run_groups import setting_differences

    new = [_seed_run(run_dir) for run_dir in run_dirs]
    record = new[0][1]
    key = _group_key(record)
    for candidate in (base, base.with_name(f"{base.name}-{key[:8]}")):
        if not (candidate / "seed_group.json").is_file():
            break
        old_key, old_runs, old_record = _recorded_group(candidate)
        if old_key == key:
            break
        if old_record is not None:
            differ = [d.describe() for d in setting_differences([("there", old_record), ("here", record)])]
            what = "; ".join(differ) or "the encoder, data or library versions (see run_identity.json)"
        else:
            what = "its runs cannot be read"
        if candidate == base:
            print(f"{base} holds a seed group with other settings ({what}); it is kept as it is, and this group "
                  f"goes to {base.with_name(f'{base.name}-{key[:8]}')}")
    else:
        raise ConfigError(f"{candidate} holds another seed group; move it away or pass another --output-dir")
    members = {member.resolve(): None for member in run_dirs}
    kept_seeds: list[int] = []
    if (candidate / "seed_group.json").is_file():
        _, old_runs, _ = _recorded_group(candidate)
        new_seeds = {run.seed for run, _ in new}
        for old in old_runs:
            if old.resolve() in members or not (old / "scores.tsv").is_file():
                continue
            run, _ = _seed_run(old)
            if run.seed in new_seeds:
                continue
            if {row["task"] for row in run.rows} != {row["task"] for row in new[0][0].rows}:
                raise ConfigError(f"the seed group in {candidate} holds {old}, scored on other test sets than these "
                                  "runs; evaluate it with the same eval config, or pass another --output-dir")
            new.append((run, None))
            kept_seeds.append(run.seed)
    runs = sorted((run for run, _ in new), key=lambda run: run.seed)
    if kept_seeds:
        print(f"the seed group in {candidate} keeps seeds {', '.join(str(r.seed) for r in runs)} (this command ran "
              f"{', '.join(str(run.seed) for run, _ in new[:len(run_dirs)])}; the others are earlier runs of the "
              "same settings)")
    return candidate, runs, key, record.settings()


def run_seeds_command(seeds: int, **kwargs) -> int:
    run_seeds(seeds=seeds, **kwargs)
    return 0
