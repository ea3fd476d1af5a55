"""What each system trains on: the published trainer's data order beside lalmbench's training stream
under protocol official (docs/fidelity.md, "Same data order"), on the demo suite.

    python scripts/parity/data_order_side_by_side.py [--steps 2000] [--seeds 1 2 3] [--workers-dataset tones]
                                                     [--workers-seed 1] [--reuse]

The published side is its own training loader (AudioTextTokenWebdataset as XaresLLMTask.train_mlp builds
it, after the Trainer's `set_seed(seed)`: train_order.published_order); it decodes every clip, so it takes
minutes; `--reuse` reads an order recorded by an earlier run with the same arguments
($PARITY_WORK/out/published-order-*.json). lalmbench's side is `data.official_stream.PublishedStream`.
Compared, as (key, target text, crop start) per example:

  - the four demo datasets mixed (no loader workers), for each seed: batches identical at the same
    position (target: all);
  - the same after a kill and resume: a child process draws batches up to a step picked at random, saves
    the stream's state (as a checkpoint does) and is killed (SIGKILL); a fresh stream restored from that
    state draws the rest (target: all identical);
  - one single-dataset config with the published single-dataset configs' 4 loader workers, fresh and
    resumed (target: all identical);

and, without a target: how many distinct clips each order holds, the steps per second of the new stream
and of lalmbench's own stream (protocol corrected, `data.mixture.TrainStream`) over the same steps in this
run (order only: neither decodes audio; decoding costs both the same).
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import random
import signal
import tempfile
import time
from pathlib import Path

from kit import WORK, Tally, tiny_decoder
from encoder_state_side_by_side import DATASETS, train_data
from train_order import as_items, lalmbench_stream, recorded_published_order


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_decoder())


def draw_and_save(data: dict, seed: int, workers: int, steps: int, path: str) -> None:
    """Child process: draw `steps` batches, save the stream state, then wait to be killed."""
    stream = lalmbench_stream(data, seed, workers, tokenizer())
    batches = [as_items(stream.next_batch()) for _ in range(steps)]
    Path(path + ".tmp").write_text(json.dumps({"state": stream.state_dict(), "batches": batches}))
    os.replace(path + ".tmp", path)
    time.sleep(3600)


def killed_and_resumed(data: dict, seed: int, workers: int, steps: int, stop: int) -> list:
    """Batches 1..stop from a process killed right after saving its state, the rest from a fresh stream
    restored from that state."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "state.json")
        child = multiprocessing.get_context("spawn").Process(target=draw_and_save,
                                                             args=(data, seed, workers, stop, path))
        child.start()
        while not os.path.exists(path):
            if not child.is_alive():
                raise SystemExit(f"the child process drawing {stop} batches stopped (exit code {child.exitcode})")
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        saved = json.loads(Path(path).read_text())
    resumed = lalmbench_stream(data, seed, workers, tokenizer())
    resumed.load_state_dict(saved["state"])
    return [[tuple(item) for item in batch] for batch in saved["batches"]] + \
        [as_items(resumed.next_batch()) for _ in range(steps - stop)]


def old_stream_steps_per_second(data: dict, seed: int, steps: int) -> float:
    """lalmbench's own stream (protocol corrected) over the same data: steps per second."""
    from lalmbench.config import DatasetSpec
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.data.mixture import TrainStream
    from lalmbench.data.tokenizing import Tokenizing

    fresh = lalmbench_stream(data, seed, 0, tokenizer())  # the same shard lists
    specs = [DatasetSpec(name=s.name, data=s.data, prompt=s.prompt, key=s.key, prob=s.prob) for s in fresh.specs]
    tokenizing = Tokenizing(tokenizer(), {s.name: s.prompt for s in specs}, "corrected")
    stream = TrainStream(specs, {name: [Path(u) for u in urls] for name, urls in fresh.urls.items()}, 4, seed,
                         tokenizing.count, BadDataCounter(), protocol="corrected")
    started = time.perf_counter()
    for _ in range(steps):
        stream.next_batch()
    return steps / (time.perf_counter() - started)


def describe(published: list, ours: list) -> None:
    for side, batches in (("published", published), ("lalmbench", ours)):
        flat = [item[0] for batch in batches for item in batch]
        counts = collections.Counter(flat)
        print(f"    {side:9s}: {len(counts)} distinct clips in {len(flat)} examples; most repeated seen "
              f"{max(counts.values())} times")


def check(tally: Tally, label: str, data: dict, steps: int, seed: int, workers: int, reuse: bool) -> None:
    tag = f"{'+'.join(data)}-seed{seed}-workers{workers}-steps{steps}"
    published = recorded_published_order(WORK / "out" / f"published-order-{tag}.json", data, steps, seed, workers,
                                         tokenizer(), reuse=reuse)
    published = [[tuple(item) for item in batch] for batch in published]
    started = time.perf_counter()
    stream = lalmbench_stream(data, seed, workers, tokenizer())
    ours = [as_items(stream.next_batch()) for _ in range(steps)]
    new_rate = steps / (time.perf_counter() - started)
    tally.compare(f"{label}: batches identical (of {steps})", len(published),
                  sum(a == b for a, b in zip(published, ours)), tolerance=0, digits=6)
    stop = random.Random(f"{seed}/{workers}").randrange(1, steps)
    resumed = killed_and_resumed(data, seed, workers, steps, stop)
    tally.compare(f"{label}: killed at step {stop}, resumed: identical", len(published),
                  sum(a == b for a, b in zip(published, resumed)), tolerance=0, digits=6)
    describe(published, ours)
    crops = sum(item[2] is not None for batch in published for item in batch)
    print(f"    examples with a crop start: {crops}")
    if workers == 0:
        old_rate = old_stream_steps_per_second(data, seed, steps)
        print(f"    order only, steps/s: official stream (published order) {new_rate:.0f}, lalmbench's own stream "
              f"(corrected) {old_rate:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3], help="seeds of the suite runs (none: skip)")
    parser.add_argument("--workers-seed", type=int, default=1, help="seed of the 4-worker run (0: skip it)")
    parser.add_argument("--workers-dataset", default="tones", choices=DATASETS,
                        help="the single-dataset config trained with 4 published loader workers")
    parser.add_argument("--reuse", action="store_true", help="read published orders recorded by an earlier run")
    args = parser.parse_args()
    tally = Tally(f"training data order over {args.steps} steps (demo suite), protocol official")
    data = train_data()
    for seed in args.seeds:
        check(tally, f"demo suite, seed {seed}", data, args.steps, seed, 0, args.reuse)
    if args.workers_seed:
        single = {args.workers_dataset: data[args.workers_dataset]}
        check(tally, f"{args.workers_dataset} alone, 4 loader workers", single, args.steps, args.workers_seed, 4,
              args.reuse)
    tally.finish()


if __name__ == "__main__":
    main()
