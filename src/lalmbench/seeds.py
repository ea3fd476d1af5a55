"""Several training seeds of one run identity: `lalmbench run ENCODER ... --seeds N`.

Flow: the training seed S (from --args, else the train config; 42 by default) -> runs with seeds S, S+1,
..., S+N-1, each a complete run of its own (train, evaluate, intervals, report) in
`<output>/<train config>/<encoder>-seeds/seed-<s>/` -> the group directory gets `seed_group.json` (its
runs and seeds; what `compare` and `leaderboard` read as one group) and `seed_scores.tsv` (per task the
mean, the sample standard deviation, the lowest and the highest score over the seeds) -> the table is
printed. A seed already trained with the same identity is
reused like any run, so `--seeds 5` after `--seeds 3` trains two more.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

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
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return rows, "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


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
    seed_list = list(range(first, first + seeds))
    rows, table = seed_table(results, seed_list)
    atomic_write_json(group_dir / "seed_group.json",
                      {"encoder": encoder, "encoder_name": encoder_name, "train_config": config.config_name,
                       "protocol": config.protocol, "seeds": seed_list,
                       "runs": [str(Path(r.run_dir).relative_to(group_dir)) for r in results]})
    lines = ["Task\tmetric\tmean\tstd\tmin\tmax\tseeds"]
    lines += [f"{r['task']}\t{r['metric']}\t{r['mean']:.6f}\t{r['std']:.6f}\t{r['min']:.6f}\t{r['max']:.6f}\t"
              f"{len(r['scores'])}" for r in rows]
    atomic_write_text(group_dir / "seed_scores.tsv", "\n".join(lines) + "\n")
    print(f"\n== {seeds} seeds of {encoder_name} ==")
    print(table)
    print(f"\nSeed group in {group_dir} (pass it to `lalmbench compare` or `lalmbench leaderboard`)")
    return group_dir


def run_seeds_command(seeds: int, **kwargs) -> int:
    run_seeds(seeds=seeds, **kwargs)
    return 0
