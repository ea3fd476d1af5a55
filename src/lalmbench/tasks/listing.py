"""`lalmbench tasks [SUITE]`: a table of the built-in datasets of a suite (or one dataset).

Columns: name, domain, task type, metric, number of classes, train/test shard counts, and whether every
shard is already in the data home (`yes`, `no`, or `k/n` files present).
"""

from __future__ import annotations

import os

from lalmbench.config import load_eval_configs, load_train_config
from lalmbench.data.shards import data_home, hub_relative_paths
from lalmbench.tasks.catalog import DatasetInfo, load_catalog


def dataset_rows(name: str, home: str | os.PathLike | None = None) -> list[dict]:
    """One row per dataset of suite or dataset `name` (ConfigError when unknown)."""
    catalog = load_catalog()
    resolved = catalog.resolve(name)
    root = data_home(home)
    rows = []
    for info in resolved.datasets:
        train_paths = _paths_of(info, "train")
        test_paths = _paths_of(info, "test")
        every = list(dict.fromkeys(train_paths + test_paths))
        present = sum((root / p).is_file() for p in every)
        downloaded = "yes" if present == len(every) else "no" if present == 0 else f"{present}/{len(every)}"
        rows.append({"name": info.name, "domain": info.domain, "task_type": info.task_type,
                     "metric": info.metric, "num_classes": info.num_classes,
                     "train_shards": len(train_paths), "test_shards": len(test_paths),
                     "downloaded": downloaded, "suites": ",".join(s for s in info.suites if s != "all") or "all",
                     "new": info.new})
    return rows


def _paths_of(info: DatasetInfo, split: str) -> list[str]:
    if split == "train":
        specs = list(load_train_config(info.train_config).train_data.values())
    else:
        specs = [task.data for task in load_eval_configs(info.eval_config)]
    paths: list[str] = []
    for spec in specs:
        paths += hub_relative_paths(spec)
    return paths


def format_table(rows: list[dict]) -> str:
    header = ["name", "domain", "type", "metric", "classes", "train", "test", "downloaded", "suite"]
    body = [[r["name"] + (" *" if r["new"] else ""), r["domain"], r["task_type"], r["metric"],
             "-" if r["num_classes"] is None else str(r["num_classes"]), str(r["train_shards"]),
             str(r["test_shards"]), r["downloaded"], r["suites"]] for r in rows]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    numeric = {4, 5, 6}
    lines = []
    for line in [header] + body:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def tasks_command(suite: str = "all") -> int:
    catalog = load_catalog()
    resolved = catalog.resolve(suite)  # ConfigError naming the valid names when unknown
    rows = dataset_rows(suite)
    if resolved.name in catalog.suites:
        print(f"suite {resolved.name}: {catalog.suites[resolved.name].description}; "
              f"train config `{resolved.train_config}`, eval config `{resolved.eval_config}`")
    print(format_table(rows))
    print(f"\ntrain/test: number of shard files; data home: {data_home()}")
    if any(r["new"] for r in rows):
        print("* not in the published configs:")
        for info in resolved.datasets:
            if info.new:
                print(f"  {info.name}: {info.notes}")
    print(f"Suites: {', '.join(catalog.suites)}. Every dataset name above is also a train and eval config "
          f"(e.g. `lalmbench run ENCODER {rows[0]['name']}`). Fetch shards: `lalmbench download {resolved.name}`.")
    return 0
