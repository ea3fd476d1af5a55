"""What each system trains on: the published trainer's data order beside lalmbench's training stream
(protocol official), on the demo suite (docs/fidelity.md, "Moonshot: same data order").

    python scripts/parity/data_order_side_by_side.py [--steps 2000] [--seed 42]     (about 5 minutes on 2 cores)

The published side is the batches its own trainer draws (XaresLLMTask.train_mlp with the tiny decoder,
N steps: the order depends on Python's global random state, which the trainer seeds, so it is recorded
from a real training run); lalmbench's is TrainStream with the same datasets, weights, buffer sizes and
batch size. Printed, over the first N batches (no target: the two
orders are known to differ):

  - batches and examples identical at the same position;
  - each dataset's share of the examples;
  - how many distinct examples each system saw, and how often the most repeated one came back;
  - per 100-step window, the largest deviation of a dataset's share from its weight (how evenly mixed).
"""

from __future__ import annotations

import argparse
import collections

from kit import Tally
from encoder_state_side_by_side import DATASETS, lalmbench_order, published_training


def describe(tally: Tally, label: str, published: list, ours: list, weights: dict[str, float]) -> None:
    dataset = lambda item: item[0].split("_")[0]
    flat_published = [item for batch in published for item in batch]
    flat_ours = [item for batch in ours for item in batch]
    total = len(flat_published)
    tally.compare(f"{label} batches identical", len(published), sum(a == b for a, b in zip(published, ours)))
    tally.compare(f"{label} examples identical at the same position", total,
                  sum(a == b for a, b in zip(flat_published, flat_ours)))
    for name in DATASETS:
        tally.compare(f"{label} share of {name} (weight {weights[name]:.2f})",
                      sum(dataset(i) == name for i in flat_published) / total,
                      sum(dataset(i) == name for i in flat_ours) / max(1, len(flat_ours)), digits=4)
    for side, flat in (("published", flat_published), ("lalmbench", flat_ours)):
        counts = collections.Counter(flat)
        window = 400  # examples in 100 steps
        deviations = [abs(sum(dataset(i) == name for i in flat[k:k + window]) / window - weights[name])
                      for k in range(0, len(flat) - window + 1, window) for name in DATASETS]
        evenness = f"; largest share deviation in a 100-step window {max(deviations):.3f}" if deviations else ""
        print(f"    {side:9s}: {len(counts)} distinct examples of {len(flat)}; most repeated seen "
              f"{max(counts.values())} times{evenness}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    tally = Tally(f"data order over {args.steps} training steps (demo suite)")
    published = published_training(args.steps, args.seed, keep_audio=False)[2]
    ours = lalmbench_order(args.steps, args.seed)
    weights = {name: 1 / len(DATASETS) for name in DATASETS}
    describe(tally, f"[first {min(10, args.steps)} steps]", published[:10], ours[:10], weights)
    describe(tally, f"[{args.steps} steps]", published, ours, weights)
    tally.finish()


if __name__ == "__main__":
    main()
