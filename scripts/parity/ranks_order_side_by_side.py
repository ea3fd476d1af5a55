"""The training order of each process when training runs on several processes (ranks), under official.

    python scripts/parity/ranks_order_side_by_side.py [--steps 200] [--world 2] [--seed 1]

The published loader splits its shuffled shard stream by rank (webdataset's split_by_node: rank r of w
keeps every w-th shard, from the r-th) and seeds its shard sampling with the rank (ResampledShards); every
rank draws the dataset of each batch from Python's random seeded by the same set_seed. webdataset reads the
rank from the RANK and WORLD_SIZE environment variables when they are set, as torchrun sets them, so one
process per rank is enough to record a rank's order: here each rank's published loader runs with RANK=r,
WORLD_SIZE=w, beside lalmbench's PublishedStream(rank=r, world=w) on the demo suite.

Batch size: the published trainer gives every rank per_device_train_batch_size examples (4), so w ranks
train on 4 * w per step. lalmbench's official keeps a global batch of 4 whatever the world size, 4 / w per
rank, unless global_batch_size is set: its per-rank stream matches the published one with
`global_batch_size: 4 * w`, which is what is compared here (batches of 4 per rank).

Target per rank: every batch identical (key, target text, crop start).
"""

from __future__ import annotations

import argparse
import os

from data_order_side_by_side import tokenizer
from encoder_state_side_by_side import train_data
from kit import Tally
from train_order import as_items, lalmbench_stream, published_order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    tally = Tally(f"training order per rank, {args.world} processes (protocol official)")
    data, tok = train_data(), tokenizer()
    orders = []
    for rank in range(args.world):
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(args.world)
        try:
            published = published_order(data, args.steps, args.seed, 0, tok)
        finally:
            del os.environ["RANK"], os.environ["WORLD_SIZE"]
        stream = lalmbench_stream(data, args.seed, 0, tok, rank=rank, world=args.world)
        ours = [as_items(stream.next_batch()) for _ in range(args.steps)]
        published = [[tuple(item) for item in batch] for batch in published]
        same = sum(a == b for a, b in zip(published, ours))
        tally.compare(f"rank {rank} of {args.world}: identical batches (of {len(published)})", len(published), same, 0.0)
        first = next((k for k, (a, b) in enumerate(zip(published, ours)) if a != b), None)
        if first is not None:
            print(f"    first differing batch {first}: reference {published[first]} lalmbench {ours[first]}")
        orders.append(published)
    keys = [{item[0] for batch in order for item in batch} for order in orders]
    print(f"    distinct clips per rank: {[len(k) for k in keys]}; shared by ranks 0 and 1: {len(keys[0] & keys[1])}")
    tally.check("the ranks' published orders differ", orders[0] != orders[1], "")
    tally.finish()


if __name__ == "__main__":
    main()
