"""`lalmbench tasks [SUITE]`: a table of the built-in datasets of a suite (or one dataset).

Columns: name, domain, task type, metric, number of classes, train/test shard counts, the dataset's share
of the training mixture of the named suite (`prob` where set, else its share of all shards; normalized, the
rule the training stream uses), and whether every shard is already in the data home (`yes`, `no`, or `k/n`
files present).
"""

from __future__ import annotations

import os

from tabulate import tabulate

from lalmbench.config import load_eval_configs, load_train_config
from lalmbench.data.mixture import mixture_weights
from lalmbench.data.shards import data_home, hub_relative_paths
from lalmbench.tasks.catalog import load_catalog


def dataset_rows(name: str, home: str | os.PathLike | None = None) -> list[dict]:
    """One row per dataset of suite or dataset `name` (ConfigError when unknown)."""
    catalog = load_catalog()
    resolved = catalog.resolve(name)
    root = data_home(home)
    # Shards and shares come from the configs `name` stands for: a single-dataset config may use other test
    # shards than the suites (the published fsd50k and nsynth ones do).
    train_specs = load_train_config(resolved.train_config).train_data
    test_specs = {task.name: task.data for task in load_eval_configs(resolved.eval_config)}
    shares = train_shares(resolved.train_config)
    rows = []
    for info in resolved.datasets:
        train_paths = hub_relative_paths(train_specs[info.train_name])
        test_paths = hub_relative_paths(test_specs[info.eval_name])
        every = list(dict.fromkeys(train_paths + test_paths))
        present = sum((root / p).is_file() for p in every)
        downloaded = "yes" if present == len(every) else "no" if present == 0 else f"{present}/{len(every)}"
        rows.append({"name": info.name, "domain": info.domain, "task_type": info.task_type,
                     "metric": info.metric, "num_classes": info.num_classes,
                     "train_shards": len(train_paths), "test_shards": len(test_paths),
                     "train_share": shares[info.train_name],
                     "downloaded": downloaded, "suites": ",".join(s for s in info.suites if s != "all") or "all",
                     "new": info.new})
    return rows


def train_shares(train_config: str) -> dict[str, float]:
    """Dataset name -> its normalized weight in the training mixture of a built-in train config."""
    specs = list(load_train_config(train_config).train_data.items())
    weights = mixture_weights([spec for _, spec in specs], [len(hub_relative_paths(spec)) for _, spec in specs])
    return {name: float(weight) for (name, _), weight in zip(specs, weights)}


def format_table(rows: list[dict]) -> str:
    header = ["name", "domain", "type", "metric", "classes", "train", "test", "share", "downloaded", "suite"]
    body = [[r["name"] + (" *" if r["new"] else ""), r["domain"], r["task_type"], r["metric"],
             "-" if r["num_classes"] is None else str(r["num_classes"]), str(r["train_shards"]),
             str(r["test_shards"]), f"{100 * r['train_share']:.1f}%", r["downloaded"], r["suites"]] for r in rows]
    # the counts and the share right-aligned; disable_numparse: the cells stay as formatted above
    align = ["left"] * 4 + ["right"] * 4 + ["left"] * 2
    return tabulate(body, header, tablefmt="simple", colalign=align, disable_numparse=True)


def tasks_command(suite: str = "all") -> int:
    catalog = load_catalog()
    resolved = catalog.resolve(suite)  # ConfigError naming the valid names when unknown
    rows = dataset_rows(suite)
    if resolved.name in catalog.suites:
        print(f"suite {resolved.name}: {catalog.suites[resolved.name].description}; "
              f"train config `{resolved.train_config}`, eval config `{resolved.eval_config}`")
    print(format_table(rows))
    print(f"\ntrain/test: number of shard files; share: of the training samples of `{resolved.train_config}`; "
          f"data home: {data_home()}")
    if any(r["new"] for r in rows):
        print("* not in the published configs:")
        for info in resolved.datasets:
            if info.new:
                print(f"  {info.name}: {info.notes}")
    if resolved.name in catalog.suites and catalog.suites[resolved.name].published:
        for suite in (s for s in catalog.suites.values() if not s.published):
            print(f"Opt-in suite {suite.name}: {suite.description}; never run unless named "
                  f"(`lalmbench tasks {suite.name}`).")
    print(f"Suites: {', '.join(catalog.suites)}. Every dataset name above is also a train and eval config "
          f"(e.g. `lalmbench run ENCODER {rows[0]['name']}`). Fetch shards: `lalmbench download {resolved.name}`.")
    return 0
