"""Training-mixture weights of the suites task1 / task2 / all: item 1 (suites) of docs/fidelity.md.

    python scripts/parity/mixture_weights.py

Each dataset's share of training samples, as both systems compute it from their suite YAML: `prob` where
set, else the dataset's share of shards; then normalized. Target: the same datasets with the same shares
(|diff| <= 1e-9) in every suite.
"""

from __future__ import annotations

import braceexpand
import yaml

from kit import XARES_SRC, Tally, need

PUBLISHED = {"task1": "task1/train/train_task1_config.yaml", "task2": "task2/train/train_task2_config.yaml",
             "all": "all/train/all_train_config.yaml"}


def shares(config: dict) -> dict[str, float]:
    data = config["train_data"]
    shards = {name: sum(len(list(braceexpand.braceexpand(p))) for p in spec["data"]) for name, spec in data.items()}
    total = sum(shards.values())
    weights = {name: spec["prob"] if spec.get("prob") is not None else shards[name] / total for name, spec in data.items()}
    norm = sum(weights.values())
    return {name: weight / norm for name, weight in weights.items()}


def main() -> None:
    from importlib.resources import files

    tally = Tally("training-mixture shares per suite")
    published_root = need(XARES_SRC / "src/xares_llm/tasks", "published task YAMLs", "set XARES_SRC")
    ours_root = files("lalmbench.tasks") / "train"
    for suite, path in PUBLISHED.items():
        reference = shares(yaml.safe_load(open(published_root / path)))
        mine = shares(yaml.safe_load((ours_root / f"{suite}.yaml").read_text()))
        tally.same(f"[{suite}] datasets", sorted(reference), sorted(mine))
        for name in sorted(set(reference) | set(mine)):
            tally.compare(f"[{suite}] {name}", reference.get(name, 0.0), mine.get(name, 0.0), 1e-9, digits=6)
    tally.finish()


if __name__ == "__main__":
    main()
