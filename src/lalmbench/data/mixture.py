"""The training stream: datasets mixed by weight, shuffled, length-sorted, batched, and resumable.

Order of operations (docs/protocol.md, "Training"):
  each dataset: endless passes over its shards (shard order reshuffled every pass)
  -> mixture: each example drawn from a dataset picked at random with the `prob` weights
  -> shuffle buffer (256) -> length sort within buffers of 128 (audio seconds + text tokens,
     longest first) -> batches.

Everything here works on examples that still hold their encoded audio bytes; decoding and resampling
happen later (`batches.py`, optionally in worker processes). That keeps the whole order a cheap,
deterministic function of the seed and makes the stream state small: dataset cursors, two RNG states
and the references of the buffered examples, which are read again from their shards on resume.

With several ranks, each rank reads its own shards (or, for a dataset with fewer shards than ranks,
its own records of every shard) and draws from its own RNG, so no example is read twice per pass.

Bad data is counted as the stream reads (`counter`) and checked by the rule in `examples.py`: during a
pass after every shard and every example, at the end of a pass on the whole count. With several ranks
each judges its own share. What fails later, when a batch is decoded, joins this count in the account
that `batches.stream_batches` judges for every batch handed out.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lalmbench.config import DatasetSpec
from lalmbench.data.examples import BadDataCounter, Example, ExampleRef, iter_examples, iter_records, select_texts
from lalmbench.data.audio import probe_duration
from lalmbench.errors import DataError


def stable_fraction(*parts) -> float:
    """A number in [0, 1) fixed by `parts` (seeded crops that survive a resume)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def mixture_weights(specs: list[DatasetSpec], shard_counts: list[int]) -> np.ndarray:
    """Normalized mixture weights: `prob` where set, else the dataset's share of all shards."""
    total_shards = sum(shard_counts)
    weights = [spec.prob if spec.prob is not None else count / total_shards
               for spec, count in zip(specs, shard_counts)]
    weights = np.asarray(weights, dtype=np.float64)
    return weights / weights.sum()


class TrainStream:
    """Endless batches of examples (audio still encoded), with a resumable state."""

    def __init__(self, specs: list[DatasetSpec], shards: dict[str, list[Path]], batch_size: int, seed: int,
                 token_count: Callable[[str, str], int], counter: BadDataCounter, *, rank: int = 0, world: int = 1,
                 shuffle_buffer: int = 256, sort_buffer: int = 128, crop_seconds: float = 30.0,
                 max_bad_fraction: float = 0.01, protocol: str = "official"):
        self.specs = specs
        self.shards = {name: [str(p) for p in paths] for name, paths in shards.items()}
        self.batch_size = batch_size
        self.seed, self.rank, self.world = seed, rank, world
        self.token_count = token_count
        self.counter = counter
        self.shuffle_size, self.sort_size = shuffle_buffer, max(sort_buffer, batch_size)
        self.crop_seconds = crop_seconds
        self.max_bad_fraction = max_bad_fraction
        self.protocol = protocol  # what counts as a target text (examples.py)
        self.weights = mixture_weights(specs, [len(self.shards[s.name]) for s in specs])
        self._mix_rng = np.random.default_rng([seed, rank, 1])
        self._shuffle_rng = np.random.default_rng([seed, rank, 2])
        self.positions = {s.name: (0, 0, 0, 0) for s in specs}  # (epoch, shard index, record, text)
        self._shuffle: list[Example] = []
        self._sorted: list[Example] = []
        self._iterators: dict[str, Iterator[Example]] = {}

    # -- per dataset -----------------------------------------------------------------------------------
    def _epoch_shards(self, index: int, epoch: int) -> tuple[list[str], bool]:
        """This rank's shards for a pass, and whether records (not shards) are split over ranks."""
        name = self.specs[index].name
        order = list(self.shards[name])
        np.random.default_rng([self.seed, index, epoch, 3]).shuffle(order)
        if len(order) >= self.world:
            return order[self.rank::self.world], False
        return order, True

    def _dataset_examples(self, index: int) -> Iterator[Example]:
        spec = self.specs[index]
        epoch, shard_pos, start_record, start_text = self.positions[spec.name]
        while True:
            shards, split_records = self._epoch_shards(index, epoch)
            produced = False
            share = (self.rank, self.world) if split_records else (0, 1)
            for position in range(shard_pos, len(shards)):
                first = position == shard_pos
                for record_index, text_index, example in iter_examples(
                        spec.name, shards[position], spec.key, self.counter, epoch,
                        start_record if first else 0, start_text if first else 0, *share,
                        protocol=self.protocol):
                    self.positions[spec.name] = (epoch, position, record_index, text_index + 1)
                    example.token_count = self.token_count(spec.name, example.text)
                    produced = True
                    self.counter.check_partial(spec.name, self.max_bad_fraction)
                    yield example
                self.counter.check_partial(spec.name, self.max_bad_fraction)  # bad records are not yielded
                self.positions[spec.name] = (epoch, position + 1, 0, 0)
            if not produced and shard_pos == 0 and start_record == 0:
                raise DataError(f"dataset {spec.name}: a full pass over its {len(self.shards[spec.name])} shard(s) "
                                f"gave no usable example (rank {self.rank} of {self.world}). Check the shards and key "
                                f"{spec.key!r}; bad data so far: {self.counter.as_dict().get(spec.name)}")
            self.counter.count_pass(spec.name)
            self.counter.check(spec.name, self.max_bad_fraction)  # a full pass: the whole count
            epoch, shard_pos, start_record, start_text = epoch + 1, 0, 0, 0
            self.positions[spec.name] = (epoch, 0, 0, 0)

    def _next_mixed(self) -> Example:
        index = int(self._mix_rng.choice(len(self.specs), p=self.weights))
        name = self.specs[index].name
        if name not in self._iterators:
            self._iterators[name] = self._dataset_examples(index)
        return next(self._iterators[name])

    def _next_shuffled(self) -> Example:
        while len(self._shuffle) < self.shuffle_size:
            self._shuffle.append(self._next_mixed())
        pick = int(self._shuffle_rng.integers(len(self._shuffle)))
        self._shuffle[pick], self._shuffle[-1] = self._shuffle[-1], self._shuffle[pick]
        return self._shuffle.pop()

    def sort_key(self, example: Example) -> float:
        return min(example.seconds, self.crop_seconds) + example.token_count

    def next_batch(self) -> list[Example]:
        if len(self._sorted) < self.batch_size:
            fresh = [self._next_shuffled() for _ in range(self.sort_size)]
            fresh.sort(key=self.sort_key, reverse=True)
            self._sorted.extend(fresh)
        batch, self._sorted = self._sorted[: self.batch_size], self._sorted[self.batch_size:]
        return batch

    def crop_fraction(self, example: Example) -> float:
        ref = example.ref
        return stable_fraction(self.seed, ref.dataset, ref.epoch, ref.shard, ref.key, ref.text_index)

    # -- state -------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """The stream position now, cheaply (refs stay objects); JSON-safe once refs become dicts."""
        return {
            "positions": dict(self.positions),
            "mix_rng": self._mix_rng.bit_generator.state,
            "shuffle_rng": self._shuffle_rng.bit_generator.state,
            "shuffle_buffer": [e.ref for e in self._shuffle],
            "sorted_buffer": [e.ref for e in self._sorted],
            "rank": self.rank, "world": self.world,
        }

    def state_dict(self) -> dict:
        state = self.snapshot()
        state["positions"] = {name: list(pos) for name, pos in state["positions"].items()}
        state["shuffle_buffer"] = [asdict(r) for r in state["shuffle_buffer"]]
        state["sorted_buffer"] = [asdict(r) for r in state["sorted_buffer"]]
        return state

    def reseed(self, step: int) -> None:
        """Start a fresh data order derived from `step` (resume with another number of processes)."""
        self._mix_rng = np.random.default_rng([self.seed, self.rank, 1, step])
        self._shuffle_rng = np.random.default_rng([self.seed, self.rank, 2, step])
        self.positions = {s.name: (step, 0, 0, 0) for s in self.specs}
        self._shuffle, self._sorted, self._iterators = [], [], {}

    def load_state_dict(self, state: dict) -> None:
        if (state.get("rank"), state.get("world")) != (self.rank, self.world):
            raise DataError(f"the checkpoint's data position belongs to rank {state.get('rank')} of "
                            f"{state.get('world')} processes, this is rank {self.rank} of {self.world}")
        self.positions = {name: tuple(pos) for name, pos in state["positions"].items()}
        self._mix_rng.bit_generator.state = state["mix_rng"]
        self._shuffle_rng.bit_generator.state = state["shuffle_rng"]
        refs = [r if isinstance(r, ExampleRef) else ExampleRef(**r)
                for r in state["shuffle_buffer"] + state["sorted_buffer"]]
        examples = rematerialize(refs, {s.name: s for s in self.specs}, self.protocol, shards=self.shards)
        for example in examples:
            example.token_count = self.token_count(example.ref.dataset, example.text)
        split = len(state["shuffle_buffer"])
        self._shuffle, self._sorted = examples[:split], examples[split:]
        self._iterators = {}


def rematerialize(refs: list[ExampleRef], specs: dict[str, DatasetSpec], protocol: str = "official", *,
                  shards: dict[str, list]) -> list[Example]:
    """Read the examples named by `refs` again from their shards (each shard read once). `refs` come from a
    checkpoint, a file that may have been altered: each must name a dataset of this run and one of its
    `shards` (dataset name -> shard paths), so no other file on the machine is read."""
    allowed = {name: {str(path) for path in paths} for name, paths in shards.items()}
    wanted: dict[str, set[str]] = {}
    for ref in refs:
        if ref.shard not in allowed.get(ref.dataset, ()):
            raise DataError(
                f"cannot resume: the checkpoint's data position names {ref.shard!r} for dataset {ref.dataset!r}, "
                f"which is not one of the shards this run reads for it; the checkpoint was altered, or the shards "
                "moved since it was written. Resume with the data where the run started, or start anew with --force.")
        wanted.setdefault(ref.shard, set()).add(ref.key)
    records = {}
    for shard, keys in wanted.items():
        for record in iter_records(shard):
            if record.key in keys and record.problem is None:
                records[(shard, record.key)] = record
    examples = []
    for ref in refs:
        record = records.get((ref.shard, ref.key))
        if record is None:
            raise DataError(f"cannot resume: example {ref.key} of {ref.shard} is no longer readable; the shard "
                            "changed since the checkpoint was written. Re-download it or start with --force.")
        texts = select_texts(record.meta, specs[ref.dataset].key, protocol) or []
        examples.append(Example(ref, record.audio, texts[ref.text_index], probe_duration(record.audio)))
    return examples
