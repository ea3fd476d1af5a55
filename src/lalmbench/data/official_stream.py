"""The published trainer's training stream, example for example, with a resumable state (protocol official).

The published system (XARES-LLM 0.0.12) builds its training data with webdataset 1.0.2 pipelines. This
module computes the same sequence of examples from the same shards, without decoding audio: every
decision in that sequence depends on the audio only through its header (sample rate, frame count), on
the target texts and on a handful of seeded generators. What it reproduces, in order:

  per dataset, in each loader lane (the main process, or each of `workers` loader processes):
    shards   drawn with replacement from the dataset's shard list sorted as the published `expand_path`
             sorts it (`ResampledShards(seed=42, deterministic=True)`: `random.Random(s)` with
             s = ((rank * 1000 + worker) * 31 + 0) * 31 + 42, whatever the run's seed)
    -> the drawn shards shuffled (`detshuffle(seed=42)`: buffer 1000, yields from 100, pulls two per
       yield while filling) -> every world-th (rank) -> every workers-th (worker) shard
    -> records in tar order; a record without JSON or audio, or whose audio header is unreadable or
       empty, is dropped (counted in the bad-data account, as every drop below)
    -> the crop start of a clip longer than `crop_seconds`: `randint(0, frames - limit)` from the lane's
       generator, drawn when the record is reached (lazily, as the published generator draws it)
    -> one example per target text; texts that look corrupted dropped
    -> batches of `batch_size`, read one example ahead (webdataset's `batched`)
  each lane: a dataset per batch, drawn with the lane's generator (`RandomMix`: `random.random()`
  against the cumulative `prob` weights; a dataset without `prob` weighs by its share of shards). The
  lane's generator is the process-global `random` of the published trainer: seeded with the run's seed
  (`set_seed` before the model is built) when there are no loader workers, with 42 + worker id in
  worker `worker` (the published `seed_worker`) otherwise; mixing and crops share it.
  main process: the lanes' batches in turn (the loader's round robin), unbatched -> shuffle buffer
  (`shuffle_buffer`, seeded 42, yields from 100) -> sort within `sort_buffer` examples, longest first by
  text tokens + seconds after crop and resampling (ties keep their order) -> batches of `batch_size`.

What it does not reproduce: a clip whose header reads but whose samples do not decode is dropped by the
published pipeline before batching, and here when its batch is decoded (the batch is one short); a
record without a target field, or a target list holding a non-string, stops the published trainer
(TypeError/ValueError) and is counted and skipped here; several processes (ranks) follow the published
per-rank seeds but are not measured against it.

Bad data: the same account as the other stream (`examples.BadDataCounter`), each distinct example
counted once: a shard's records are counted on its first reading only (shards are read again and again),
and a dataset's first full pass is complete once every one of its shards was read.

Resume: the state holds every generator's state, the shard buffers (as shard indices), each lane's
position (shard, record, texts left of that record, its crop start) and the buffered examples as
references with their crop starts; restoring reads the buffered examples' bytes again from their shards
and skips records in the current shards without decoding anything.
"""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lalmbench.config import DatasetSpec
from lalmbench.data.examples import (BadDataCounter, Example, ExampleRef, Record, iter_records, looks_corrupted,
                                     select_texts)
from lalmbench.data.mixture import rematerialize
from lalmbench.data.resample import resampled_length
from lalmbench.errors import DataError

SHARD_SEED = 42  # the published ResampledShards and detshuffle seed
SHUFFLE_SEED = 42  # the published main-process shuffle seed
WORKER_SEED_BASE = 42  # the published seed_worker: random.seed(42 + worker id)
SHARD_BUFFER, SHARD_INITIAL = 1000, 100  # detshuffle's defaults
SHUFFLE_INITIAL = 100  # webdataset shuffle's default `initial`
SORT_RATE = 16_000  # the published sort key divides samples by 16000 whatever the target rate


def make_seed(*parts: int) -> int:
    """webdataset's make_seed for integers (hash(n) == n for the small ints used here)."""
    seed = 0
    for part in parts:
        seed = (seed * 31 + hash(part)) & 0x7FFFFFFF
    return seed


def published_shard_order(spec: DatasetSpec, paths: list[Path]) -> list[str]:
    """The shard list in the published order: sorted as strings, hub shards by their download URL (which
    ends in `?download=true`, so `a.tar` sorts after `a.tar.gz` there)."""
    suffix = "?download=true" if spec.repo_id else ""
    return sorted({str(p) for p in paths}, key=lambda p: p + suffix)


def pick(buffer: list, rng: random.Random):
    """webdataset's `pick`: a random item out, the last one moved into its place."""
    k = rng.randint(0, len(buffer) - 1)
    item = buffer[k]
    buffer[k] = buffer[-1]
    buffer.pop()
    return item


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng(state: list) -> random.Random:
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


@dataclass
class PublishedExample(Example):
    """An example with what its place in the published order depends on."""

    crop_start: int | None = None  # first sample of the crop window at the source rate (None: no crop)
    frames: int = 0
    rate: int = 0


def audio_header(data: bytes) -> tuple[int, int] | str:
    """(frames, sample rate) from the header, or why the audio is unusable."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # libsndfile raises several types for bad headers
        return f"unreadable audio header: {exc}"
    if info.frames <= 0 or info.samplerate <= 0:
        return "audio holds no samples"
    return int(info.frames), int(info.samplerate)


class _DatasetLane:
    """One dataset in one loader lane: its shard sampler, shard shuffle, reader and one-ahead batcher."""

    def __init__(self, stream: "PublishedStream", index: int, worker: int):
        self.stream, self.index = stream, index
        self.spec = stream.specs[index]
        self.urls = stream.urls[self.spec.name]
        self.resample_rng = random.Random(make_seed(stream.rank * 1000 + worker, 0, SHARD_SEED))
        self.shuffle_rng = random.Random(SHARD_SEED + 0)  # detshuffle: seed + epoch 0
        self.shard_buffer: list[int] = []
        self.node_taken = 0  # shards taken from the shuffle by split_by_node so far
        self.worker_taken = 0  # ... and by split_by_worker from those
        self.worker, self.workers = worker, stream.workers
        self.shard: int | None = None  # url index of the shard being read
        self.record = -1  # index of the record whose texts are being served
        self.texts: list[int] = []  # text indices of that record still to serve
        self.crop: int | None = None  # its crop start
        self.counting = False  # this reading of the shard is its first: count what it holds
        self.held: PublishedExample | None = None  # the example read ahead by the batcher
        self.empty_shards = 0  # shards read since the last example (a dataset with none would loop)
        self._records: Iterator[Record] | None = None
        self._record: Record | None = None
        self._values: list = []  # the record's target texts and audio header, for its examples
        self._header: tuple[int, int] = (0, 0)

    # -- shards: ResampledShards -> detshuffle -> split_by_node -> split_by_worker -------------------------
    def _resampled(self) -> int:
        return self.resample_rng.randint(0, len(self.urls) - 1)

    def _shuffled(self) -> int:
        buffer = self.shard_buffer
        while True:
            buffer.append(self._resampled())
            if len(buffer) < SHARD_BUFFER:
                buffer.append(self._resampled())
            if len(buffer) >= SHARD_INITIAL:
                return pick(buffer, self.shuffle_rng)

    def _node_shard(self) -> int:
        rank, world = self.stream.rank, self.stream.world
        if world <= 1:
            return self._shuffled()
        skip = rank if self.node_taken == 0 else world - 1
        for _ in range(skip):
            self._shuffled()
        self.node_taken += 1
        return self._shuffled()

    def _next_shard(self) -> int:
        if self.workers <= 1:
            return self._node_shard()
        skip = self.worker if self.worker_taken == 0 else self.workers - 1
        for _ in range(skip):
            self._node_shard()
        self.worker_taken += 1
        return self._node_shard()

    # -- records and examples -------------------------------------------------------------------------------
    def _open(self, shard: int, skip: int) -> None:
        """Read shard `shard` from its record `skip` on (the records before are passed over, not decoded)."""
        self._records = iter(iter_records(self.urls[shard]))
        for _ in range(skip):
            if next(self._records, None) is None:
                raise DataError(f"cannot resume: shard {self.urls[shard]} holds fewer than {skip} records now; it "
                                "changed since the checkpoint was written. Re-download it or start with --force.")

    def _next_record(self) -> Record:
        while True:
            if self._records is not None:
                record = next(self._records, None)
                if record is not None:
                    self.record += 1
                    return record
                self._finish_shard()
            self.shard = self._next_shard()
            self.record = -1
            self.empty_shards += 1
            if self.empty_shards > 10 * len(self.urls) + 10:
                raise DataError(f"dataset {self.spec.name}: {self.empty_shards - 1} shard readings in a row gave no "
                                f"usable example. Check the shards and key {self.spec.key!r}; bad data so far: "
                                f"{self.stream.counter.as_dict().get(self.spec.name)}")
            url = self.urls[self.shard]
            self.counting = (self.stream.counter.counts_share(self.spec.name, url)
                             and not any(lane.counting and lane.urls[lane.shard] == url for lane in self._siblings()))
            if self.counting:
                self.stream.counter.seen[self.spec.name][url] = 0  # read from its start (examples.iter_examples)
            self._open(self.shard, 0)

    def _siblings(self) -> list["_DatasetLane"]:
        """This dataset in the other lanes."""
        return [lane.datasets[self.index] for lane in self.stream.lanes if lane.datasets[self.index] is not self]

    def _finish_shard(self) -> None:
        self._records = None
        name, counter = self.spec.name, self.stream.counter
        if self.counting:
            counter.finish_share(name, self.urls[self.shard])
            if not counter.passes[name] and all(not counter.counts_share(name, url) for url in self.urls):
                counter.count_pass(name)  # every shard read to its end once: a full pass counted
                counter.check(name, self.stream.max_bad_fraction)
        self.counting = False

    def _bad(self, reason: str, record: Record, detail: str) -> None:
        if self.counting:
            counter = self.stream.counter
            counter.count_seen(self.spec.name, 1, record.shard)
            counter.count_bad(self.spec.name, reason, record.shard, f"{Path(record.shard).name}:{record.key}: {detail}",
                              record.key)

    def _take_record(self, record: Record) -> None:
        """The published per-record steps: drop, crop draw, texts (module docstring)."""
        self._record, self.texts, self.crop = record, [], None
        self._values, self._header = [], (0, 0)
        if record.stray:  # members of no example (a README): the published reader drops them too
            if self.counting:
                for member in record.members:
                    self.stream.counter.count_stray(self.spec.name, record.shard, member)
            return
        if record.problem is not None:
            self._bad("bad record", record, record.problem)
            return
        texts = select_texts(record.meta, self.spec.key, self.stream.protocol)
        if texts is None:
            self._bad("missing key", record, f"no field {self.spec.key!r} (nor the defaults); its JSON keys are "
                                             f"{sorted(record.meta)}")
            return
        header = audio_header(record.audio)
        if isinstance(header, str):
            self._bad("undecodable audio", record, header)
            return
        frames, rate = self._header = header
        self._values = texts
        self.crop = self.stream.crop_draw(self.lane_rng, frames, rate)
        for text_index, text in enumerate(texts):
            if self.counting:
                self.stream.counter.count_seen(self.spec.name, 1, record.shard)
            if not isinstance(text, str):
                self._bad_text("target not text", record, text_index, f"target list item {text!r} ({type(text).__name__}) is "
                                                          "not a string (the published system stops on it)")
            elif looks_corrupted(text):
                self._bad_text("corrupt text", record, text_index, repr(text[:40]))
            else:
                self.texts.append(text_index)

    def _bad_text(self, reason: str, record: Record, text_index: int, detail: str) -> None:
        if self.counting:
            self.stream.counter.count_bad(self.spec.name, reason, record.shard,
                                          f"{Path(record.shard).name}:{record.key}: {detail}", record.key, text_index)

    def _example(self, record: Record, text_index: int) -> PublishedExample:
        text = self._values[text_index]
        frames, rate = self._header
        ref = ExampleRef(self.spec.name, record.shard, record.key, text_index, 0)
        example = PublishedExample(ref, record.audio, text, frames / rate, crop_start=self.crop, frames=frames,
                                   rate=rate)
        example.token_count = self.stream.token_count(self.spec.name, text)
        return example

    def pull(self) -> PublishedExample:
        while not self.texts:
            self._take_record(self._next_record())
            if self.counting:
                self.stream.counter.check_partial(self.spec.name, self.stream.max_bad_fraction)
        self.empty_shards = 0
        return self._example(self._record, self.texts.pop(0))

    def next_batch(self) -> list[PublishedExample]:
        """webdataset's `batched`: a batch is handed out when the example after it has been read."""
        batch = [self.held] if self.held is not None else []
        while True:
            example = self.pull()
            if len(batch) >= self.stream.dataset_batch:
                self.held = example
                return batch
            batch.append(example)

    # -- state ----------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"resample_rng": _rng_state(self.resample_rng), "shuffle_rng": _rng_state(self.shuffle_rng),
                "shard_buffer": list(self.shard_buffer), "node_taken": self.node_taken,
                "worker_taken": self.worker_taken, "shard": self.shard,
                "record": self.record if self._records is not None else None,
                "texts": list(self.texts), "crop": self.crop, "counting": self.counting,
                "empty_shards": self.empty_shards}

    def restore(self, state: dict) -> None:
        self.resample_rng, self.shuffle_rng = _set_rng(state["resample_rng"]), _set_rng(state["shuffle_rng"])
        self.shard_buffer = list(state["shard_buffer"])
        self.node_taken, self.worker_taken = state["node_taken"], state["worker_taken"]
        self.shard, self.texts, self.crop = state["shard"], list(state["texts"]), state["crop"]
        self.counting, self.empty_shards = state["counting"], state["empty_shards"]
        self._records, self._record, self.record = None, None, -1
        if state["record"] is not None:
            self._open(self.shard, state["record"])
            self._record = next(self._records, None)
            self.record = state["record"]
            problem = "it holds fewer records" if self._record is None else None
            if problem is None and self.texts:
                self._values = select_texts(self._record.meta, self.spec.key, self.stream.protocol) or []
                header = audio_header(self._record.audio) if self._record.audio is not None else "no audio"
                if isinstance(header, str) or max(self.texts) >= len(self._values):
                    problem = f"its record {self._record.key} reads differently"
                else:
                    self._header = header
            if problem is not None:
                raise DataError(f"cannot resume: shard {self.urls[self.shard]} changed since the checkpoint was "
                                f"written ({problem}). Re-download it or start with --force.")

    @property
    def lane_rng(self) -> random.Random:
        return self.stream.lanes[self.worker].rng


class _Lane:
    """One loader lane: the main process (no workers) or one worker, with its own `random` and datasets."""

    def __init__(self, stream: "PublishedStream", worker: int, rng: random.Random):
        self.rng = rng
        self.datasets = [_DatasetLane(stream, index, worker) for index in range(len(stream.specs))]
        self.cumulative = stream.cumulative

    def next_batch(self) -> list[PublishedExample]:
        """RandomMix: one dataset per batch, `random.random()` against the cumulative weights."""
        index = int(np.searchsorted(self.cumulative, self.rng.random()))
        return self.datasets[min(index, len(self.datasets) - 1)].next_batch()


def published_probs(specs: list[DatasetSpec], shard_counts: list[int]) -> list[float]:
    """The weights the published sampler hands to RandomMix: `prob`, else the dataset's share of shards."""
    total = sum(shard_counts)
    return [spec.prob if spec.prob is not None else float(np.float64(count) / total)
            for spec, count in zip(specs, shard_counts)]


class PublishedStream:
    """Endless batches of examples (audio still encoded) in the published trainer's order; resumable.

    The same interface as `mixture.TrainStream`. `workers` is the published `num_training_workers` (the
    loader lanes whose batches interleave), not lalmbench's decode workers. `dataset_batch` is the published
    per-device batch (each dataset's `batched`); `batch_size` the micro-batches handed out, which cut the
    same sequence of examples more finely under gradient accumulation.
    """

    def __init__(self, specs: list[DatasetSpec], shards: dict[str, list[Path]], batch_size: int, seed: int,
                 token_count: Callable[[str, str], int], counter: BadDataCounter, *, rank: int = 0, world: int = 1,
                 workers: int = 0, shuffle_buffer: int = 256, sort_buffer: int = 128, crop_seconds: float | None = 30.0,
                 max_bad_fraction: float = 0.01, protocol: str = "official", sample_rate: int = 16_000,
                 dataset_batch: int | None = None):
        if workers < 0:
            raise DataError(f"num_training_workers must be 0 or more, got {workers}")
        self.specs = specs
        self.urls = {spec.name: published_shard_order(spec, shards[spec.name]) for spec in specs}
        for spec in specs:
            if not self.urls[spec.name]:
                raise DataError(f"dataset {spec.name}: no shards to train on")
        self.batch_size, self.seed, self.rank, self.world, self.workers = batch_size, seed, rank, world, workers
        self.dataset_batch = dataset_batch or batch_size
        self.token_count, self.counter = token_count, counter
        self.shuffle_size, self.sort_size = shuffle_buffer, sort_buffer
        self.crop_seconds, self.max_bad_fraction = crop_seconds, max_bad_fraction
        self.protocol, self.sample_rate = protocol, sample_rate
        probs = published_probs(specs, [len(self.urls[s.name]) for s in specs])
        self.cumulative = (np.array(probs) / np.sum(probs)).cumsum()
        self._start([self._lane_seed(w) for w in range(max(1, workers))])

    def _lane_seed(self, worker: int) -> int:
        return self.seed if self.workers == 0 else WORKER_SEED_BASE + worker

    def _start(self, lane_seeds: list) -> None:
        self.lanes: list[_Lane] = []
        for worker, lane_seed in enumerate(lane_seeds):
            self.lanes.append(_Lane(self, worker, random.Random(lane_seed)))
        self.next_lane = 0
        self._unbatched: list[PublishedExample] = []
        self._shuffle: list[PublishedExample] = []
        self._shuffle_rng = random.Random(SHUFFLE_SEED)
        self._sorted: list[PublishedExample] = []

    # -- the published draws ----------------------------------------------------------------------------------
    def crop_draw(self, rng: random.Random, frames: int, rate: int) -> int | None:
        if self.crop_seconds is None:
            return None
        limit = int(self.crop_seconds * rate)
        return rng.randint(0, frames - limit) if frames > limit else None

    def crop_fraction(self, example: Example) -> float:
        """The crop start as the fraction `audio.crop_start` turns back into it (the middle of its bin)."""
        start = getattr(example, "crop_start", None)
        if start is None or self.crop_seconds is None:
            return 0.0
        limit = int(self.crop_seconds * example.rate)
        return (start + 0.5) / (example.frames - limit + 1)

    def sort_key(self, example: PublishedExample) -> float:
        frames = example.frames
        if self.crop_seconds is not None:
            frames = min(frames, int(self.crop_seconds * example.rate))
        return example.token_count + resampled_length(frames, example.rate, self.sample_rate) / SORT_RATE

    # -- the main process: round robin -> unbatched -> shuffle -> sort -> batches -------------------------------
    def _next_unbatched(self) -> PublishedExample:
        while not self._unbatched:
            self._unbatched = list(self.lanes[self.next_lane].next_batch())
            self.next_lane = (self.next_lane + 1) % len(self.lanes)
        return self._unbatched.pop(0)

    def _next_shuffled(self) -> PublishedExample:
        if self.shuffle_size < 1:
            return self._next_unbatched()
        buffer, initial = self._shuffle, min(SHUFFLE_INITIAL, self.shuffle_size)
        while True:
            buffer.append(self._next_unbatched())
            if len(buffer) < self.shuffle_size:
                buffer.append(self._next_unbatched())
            if len(buffer) >= initial:
                return pick(buffer, self._shuffle_rng)

    def _next_sorted(self) -> PublishedExample:
        if not self.sort_size:
            return self._next_shuffled()
        if not self._sorted:
            fresh = [self._next_shuffled() for _ in range(self.sort_size)]
            fresh.sort(key=self.sort_key, reverse=True)
            self._sorted = fresh
        return self._sorted.pop(0)

    def next_batch(self) -> list[PublishedExample]:
        return [self._next_sorted() for _ in range(self.batch_size)]

    # -- state ------------------------------------------------------------------------------------------------
    @staticmethod
    def _refs(examples: list[PublishedExample]) -> list:
        return [(e.ref, e.crop_start) for e in examples]

    def snapshot(self) -> dict:
        """The stream position now; JSON-safe once refs become dicts (state_dict)."""
        return {
            "kind": "published", "rank": self.rank, "world": self.world, "workers": self.workers,
            "next_lane": self.next_lane,
            "lanes": [{"rng": _rng_state(lane.rng),
                       "datasets": [dict(d.state(), held=self._refs([d.held])[0] if d.held else None)
                                    for d in lane.datasets]} for lane in self.lanes],
            "unbatched": self._refs(self._unbatched), "shuffle": self._refs(self._shuffle),
            "shuffle_rng": _rng_state(self._shuffle_rng), "sorted": self._refs(self._sorted),
        }

    def state_dict(self) -> dict:
        def plain(obj):
            if isinstance(obj, ExampleRef):
                return asdict(obj)
            if isinstance(obj, dict):
                return {k: plain(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [plain(v) for v in obj]
            return obj
        return plain(self.snapshot())

    def reseed(self, step: int) -> None:
        """A fresh order derived from `step` (a resume with another number of processes: the published
        system has no such resume, so there is no published order to keep)."""
        self._start([f"{self._lane_seed(w)}:{step}" for w in range(len(self.lanes))])

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "published":
            raise DataError("the checkpoint's data position was written by the other training stream (protocol "
                            "corrected); resume it with the protocol it was started with, or start with --force")
        if (state.get("rank"), state.get("world"), state.get("workers")) != (self.rank, self.world, self.workers):
            raise DataError(f"the checkpoint's data position belongs to rank {state.get('rank')} of {state.get('world')} "
                            f"processes with {state.get('workers')} published loader workers; this is rank {self.rank} "
                            f"of {self.world} with {self.workers}")
        self.next_lane = state["next_lane"]
        self._shuffle_rng = _set_rng(state["shuffle_rng"])
        held = [(lane_index, d) for lane_index, lane in enumerate(state["lanes"]) for d in lane["datasets"]]
        groups = [state["unbatched"], state["shuffle"], state["sorted"],
                  [d["held"] for _, d in held if d["held"] is not None]]
        examples = self._materialize([item for group in groups for item in group])
        cut = np.cumsum([len(g) for g in groups]).tolist()
        self._unbatched, self._shuffle, self._sorted = (examples[:cut[0]], examples[cut[0]:cut[1]],
                                                        examples[cut[1]:cut[2]])
        held_examples = iter(examples[cut[2]:])
        for lane, lane_state in zip(self.lanes, state["lanes"]):
            lane.rng = _set_rng(lane_state["rng"])
            for dataset, dataset_state in zip(lane.datasets, lane_state["datasets"]):
                dataset.restore(dataset_state)
                dataset.held = next(held_examples) if dataset_state["held"] is not None else None

    def _materialize(self, items: list) -> list[PublishedExample]:
        refs = [r if isinstance(r, ExampleRef) else ExampleRef(**r) for r, _ in items]
        specs = {s.name: s for s in self.specs}
        out = []
        for example, (_, crop) in zip(rematerialize(refs, specs, self.protocol, shards=self.urls), items):
            frames, rate = audio_header(example.audio)
            again = PublishedExample(example.ref, example.audio, example.text, example.seconds, crop_start=crop,
                                     frames=frames, rate=rate)
            again.token_count = self.token_count(example.ref.dataset, example.text)
            out.append(again)
        return out
