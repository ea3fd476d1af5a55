"""Evaluation: greedy answers for every test example, scored by the task's metric.

Which examples share a batch depends on the protocol. It matters because under `official` a clip's
answer can depend on its batch mates (the published layout attends to the padding of shorter clips when
the encoder returns no mask, model/audio_llm.py):

  official   the batches of the published test loader (webdataset pipeline + torch DataLoader), rebuilt:
               1. shards sorted by location, then shuffled by random.Random(42) (the loader's shard list
                  is seeded with 42);
               2. dealt to the eval config's `num_workers` loader workers, shard i to worker i mod n
                  (0 or 1 worker: one stream of every shard);
               3. each worker batches its own stream by `batch_size`, and the DataLoader hands out one
                  batch of each worker in turn, skipping workers that ran out;
               4. the examples are taken in that order in runs of 256, each run sorted longest first by
                  prompt tokens + seconds of 16 kHz audio (a stable sort: ties keep their order);
               5. batched again by `batch_size`.
             Every target text is an example of its own: a clip with five captions is answered five
             times. References are scored as the published evaluation sees them, decoded back from their
             token ids (special tokens skipped, stripped).
  corrected  shards in the given order; the examples of one clip (its several captions) grouped; within
             runs of 256 clips, batches of clips longest first (least padding); each clip answered once,
             its captions sharing that answer. References are scored as written.

`limit` (`lalmbench run --limit N`, a quick partial look): only the first N examples of a test set are
answered, first in the order the protocol reads them:
  official   the first N examples the published test loader hands out (steps 1-3: seeded shard order,
             dealt over the workers, a worker batch of each in turn), then sorted and batched as above
             (steps 4-5) among themselves;
  corrected  the first N examples in shard, record, text order (every target text counts: a clip with
             five captions is five examples), then batched as above.
Reading stops soon after the N-th example. The runner keeps a limited evaluation apart from full ones.

Predictions are paired with their references by example, never by row (a row whose audio fails to
decode leaves its batch without shifting the others), and listed in shard, record, text order.

Several processes: under both protocols every rank rebuilds the same batches and takes every world-th
one, so the batches, and with them every answer and score, are those of a single process whatever the
world size (under `official`, those of a single published process); a clip's captions never part. The
answers are gathered back.

Bad data: every rank reads every shard, so each counts all the records skipped when read; a clip that
fails to decode is counted by the rank that decodes it, and those counts are gathered. Every rank then
holds the whole count of the test set and judges it (`BadDataCounter.check`) after the last batch.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from lalmbench import metrics
from lalmbench.config import EvalTaskConfig, TrainConfig
from lalmbench.data.batches import BatchMaker
from lalmbench.data.examples import BadDataCounter, Example, ExampleRef, count_examples, iter_examples
from lalmbench.distributed import DistInfo, gather_objects
from lalmbench.errors import EncoderFailure, EncoderRuntimeError
from lalmbench.progress import Progress

log = logging.getLogger("lalmbench")
SORT_CHUNK = 256  # examples sorted together (the published test loader's sort_by_length)
PUBLISHED_SHARD_SEED = 42  # the published test loader's shard list shuffles with this seed
PUBLISHED_SORT_RATE = 16_000  # the published sort key counts seconds as samples / 16000

T = TypeVar("T")
Position = tuple[int, int, int]  # (shard's place in the given list, record index, text index)


@dataclass
class TaskResult:
    name: str
    metric: str
    score: float
    predictions: list[tuple[str, str, str]]  # (prediction, reference, key)
    seconds: float


# -- the published test loader's batches ---------------------------------------------------------------------------

def published_shard_order(shards: list[Path], from_hub: bool = False) -> list[Path]:
    """The order the published test loader reads `shards` in: sorted by location, shuffled with seed 42.

    It sorts download URLs for hub datasets; they all end in "?download=true", which can change how one
    name sorts against another that extends it ("a.tar" against "a.tar.gz").
    """
    suffix = "?download=true" if from_hub else ""
    ordered = sorted(dict.fromkeys(shards), key=lambda shard: str(shard) + suffix)
    random.Random(PUBLISHED_SHARD_SEED).shuffle(ordered)
    return ordered


def interleave_worker_batches(streams: list[Iterable[T]], batch_size: int) -> Iterator[T]:
    """Items in the order a torch DataLoader hands them out when each stream is one worker batching its
    own items by `batch_size`: a batch of each worker in turn, workers that ran out skipped."""
    running = [iter(stream) for stream in streams]
    while running:
        still_running = []
        for worker in running:
            batch = list(itertools.islice(worker, batch_size))
            yield from batch
            if len(batch) == batch_size:  # a short (or empty) batch was the worker's last
                still_running.append(worker)
        running = still_running


def sorted_runs(items: Iterable[T], key: Callable[[T], float], run: int = SORT_CHUNK) -> Iterator[T]:
    """Each run of `run` consecutive items, largest key first; equal keys keep their order."""
    source = iter(items)
    while chunk := list(itertools.islice(source, run)):
        yield from sorted(chunk, key=key, reverse=True)  # stable, as the published list.sort(reverse=True)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    # hand-written: itertools.batched is Python 3.12+ (we support 3.10)
    source = iter(items)
    while batch := list(itertools.islice(source, size)):
        yield batch


def published_batches(streams: list[Iterable[T]], batch_size: int, key: Callable[[T], float],
                      limit: int | None = None) -> Iterator[list[T]]:
    """Steps 3-5 of the module docstring: one stream per loader worker (at least one) -> batches; with
    `limit`, of the first `limit` items handed out."""
    handed_out = itertools.islice(interleave_worker_batches(streams, batch_size), limit)
    return batched(sorted_runs(handed_out, key), batch_size)


def _header_frames(audio: bytes) -> tuple[int, int]:
    import soundfile as sf

    info = sf.info(io.BytesIO(audio))  # readable: iter_examples already read this header
    return info.frames, info.samplerate


def _published_length(example: Example, tokenize, sample_rate: int) -> float:
    """The published sort key: prompt tokens + samples of the (uncropped) clip at `sample_rate` / 16000."""
    from lalmbench.data.resample import resampled_length

    prompt_ids, _ = tokenize(example.ref.dataset, example.text, False)
    frames, rate = _header_frames(example.audio)
    return len(prompt_ids) + resampled_length(frames, rate, sample_rate) / PUBLISHED_SORT_RATE


# -- reading ---------------------------------------------------------------------------------------------------------

def _read(task: EvalTaskConfig, shards: list[Path], places: dict[Path, int], counter: BadDataCounter,
          protocol: str) -> Iterator[tuple[Position, Example]]:
    for shard in shards:
        for record, text, example in iter_examples(task.name, shard, task.data.key, counter, protocol=protocol):
            yield (places[shard], record, text), example


def official_batches(task: EvalTaskConfig, shards: list[Path], counter: BadDataCounter, dist: DistInfo,
                     batch_size: int, sort_key: Callable[[Example], float],
                     limit: int | None = None) -> Iterator[tuple[list[Example], list]]:
    """This rank's share of the published test batches (module docstring, official); each example
    answered on its own."""
    places = {shard: place for place, shard in enumerate(shards)}
    order = published_shard_order(shards, from_hub=bool(task.data.repo_id))
    workers = max(1, task.num_workers)
    streams = [_read(task, order[worker::workers], places, counter, "official") for worker in range(workers)]
    for index, batch in enumerate(published_batches(streams, batch_size, key=lambda item: sort_key(item[1]),
                                                    limit=limit)):
        if index % dist.world == dist.rank:
            yield [example for _, example in batch], [[item] for item in batch]


def clip_groups(reading: Iterable[tuple[Position, Example]]) -> Iterator[list[tuple[Position, Example]]]:
    """The examples of each clip (one per caption), together: read in shard, record, text order, a clip's
    examples come one after another."""
    for _, group in itertools.groupby(reading, key=lambda item: (item[1].ref.shard, item[1].ref.key)):
        yield list(group)


def corrected_batches(task: EvalTaskConfig, shards: list[Path], counter: BadDataCounter, dist: DistInfo,
                      batch_size: int, limit: int | None = None) -> Iterator[tuple[list[Example], list]]:
    """This rank's share of the batches of clips, longest first within each run of SORT_CHUNK clips (module
    docstring, corrected); each clip's one answer fills all its examples (its captions). Every rank builds
    the same batches and takes every world-th one, so the batches do not depend on the world size and a
    clip's captions stay on one rank. `limit`: of the first `limit` examples read."""
    places = {shard: place for place, shard in enumerate(shards)}
    reading = itertools.islice(_read(task, shards, places, counter, "corrected"), limit)
    batches = (part for run in batched(clip_groups(reading), SORT_CHUNK)
               for part in batched(sorted(run, key=lambda clip: -clip[0][1].seconds), batch_size))
    for index, part in enumerate(batches):
        if index % dist.world == dist.rank:
            yield [clip[0][1] for clip in part], part


def _kept_rows(examples: list[Example], kept: list[ExampleRef]) -> list[int]:
    """Where in `examples` each row of a batch comes from (BatchMaker drops rows that fail to decode)."""
    rows, row = [], 0
    for ref in kept:
        while examples[row].ref != ref:
            row += 1
        rows.append(row)
        row += 1
    return rows


# -- evaluation ------------------------------------------------------------------------------------------------------

def evaluate_task(model, task: EvalTaskConfig, shards: list[Path], config: TrainConfig, tokenize, dist: DistInfo,
                  counter: BadDataCounter, batch_size: int | None = None, workers: int = 0,
                  show_progress: bool = True, limit: int | None = None) -> TaskResult:
    """Answer and score one test set (with `limit`, its first `limit` examples: module docstring).
    `workers` decode audio ahead in processes; the eval config's own `num_workers` (the published
    loader's workers) shapes the batches under `official`."""
    started = time.perf_counter()
    official = config.protocol == "official"
    batch_size = batch_size or config.eval_batch_size or task.batch_size
    task_counts, decode_failures = BadDataCounter(), BadDataCounter()  # read on every rank; decoded on one
    maker = BatchMaker(tokenize, decode_failures, config.sample_rate, config.eval_crop_audio_length, None,
                       workers=workers, add_eos=False, protocol=config.protocol)
    answers: dict[Position, tuple[str, str, str]] = {}  # example -> (prediction, reference as scored, key)
    model.eval()
    progress = None
    if show_progress and dist.is_main:  # a bar on a terminal, a line each tenth elsewhere (progress.py)
        total = count_examples(shards, task.data.key, config.protocol, at_most=limit)  # one quick read, no decoding
        share = f" (process {dist.rank} of {dist.world})" if dist.world > 1 else ""
        progress = Progress(f"{task.name}{share}", -(-total // dist.world), "example", line_every=0.1)

    def scored_reference(example: Example) -> str:
        if not official:
            return example.text
        _, target_ids = tokenize(example.ref.dataset, example.text, False)
        return model.decode([target_ids])[0]

    def sort_key(example: Example) -> float:
        return _published_length(example, tokenize, config.sample_rate)

    if official:
        batches = official_batches(task, shards, task_counts, dist, batch_size, sort_key, limit)
    else:
        batches = corrected_batches(task, shards, task_counts, dist, batch_size, limit)
    # Each batch goes to the batch maker tagged with its examples again (to place the rows it keeps) and,
    # for each example, the (position, example) pairs its answer fills.
    tagged = ((examples, (examples, fills)) for examples, fills in batches)

    try:
        merged = model.merged_lora() if config.merge_lora_for_eval else contextlib.nullcontext()
        with merged, torch.no_grad(), torch.autocast(model.projector.weight.device.type, dtype=torch.bfloat16,
                                                     enabled=config.bf16):
            for batch, (examples, fills) in maker.iterate(tagged):
                if batch is None:
                    continue
                try:
                    texts = model.decode(model.generate(batch, config.max_new_tokens, config.repetition_penalty))
                except EncoderFailure as failure:
                    raise EncoderRuntimeError(
                        f"the encoder failed while evaluating {task.name}: {failure}. The trained weights are "
                        f"saved; rerunning the same command reuses them and evaluates again.") from failure
                rows = _kept_rows(examples, batch["refs"])
                for row, prediction in zip(rows, texts):
                    for position, example in fills[row]:
                        answers[position] = (prediction, scored_reference(example), example.ref.key)
                if progress is not None:
                    progress.update(sum(len(fills[row]) for row in rows))
    finally:
        maker.close()
        if progress is not None:
            progress.close()
    gathered: dict[Position, tuple[str, str, str]] = {}
    for rank_answers, rank_failures in gather_objects(dist, (answers, decode_failures)):
        gathered.update(rank_answers)
        task_counts.merge(rank_failures)
    counter.merge(task_counts)
    predictions = [gathered[position] for position in sorted(gathered)]  # shard, record, text order
    if not predictions:
        from lalmbench.errors import DataError

        read = task_counts.seen_total(task.name)
        raise DataError(f"{task.name}: no usable test example in {len(shards)} shard(s) (target key {task.data.key!r}): "
                        f"{read} example(s) read" + (f", none usable: {task_counts.problems(task.name)}" if read else "")
                        + ". Check the test set's `data` and `key` in the eval config and its shards.")
    task_counts.check(task.name, config.max_bad_fraction)
    score = metrics.compute(task.metric, [p for p, _, _ in predictions], [r for _, r, _ in predictions],
                            protocol=config.protocol, **task.metric_args)
    return TaskResult(task.name, task.metric, score, predictions, time.perf_counter() - started)
