"""Evaluation: greedy answers for every test example, exactly once, scored by the task's metric.

Examples are read in shard order and numbered; with several ranks each takes the numbers equal to its
rank modulo the world size, and the answers are gathered back in the original order. Within chunks of
`SORT_CHUNK` examples the batches are formed longest-first (less padding); that changes nothing in the
answers, since each row is decoded independently. An example whose audio and prompt equal the previous
one's (several reference captions of one clip) reuses that answer.

Bad data: every rank reads every shard, so each counts all the records skipped when read; a clip that
fails to decode is counted by the rank that decodes it, and those counts are gathered. Every rank then
holds the whole count of the test set and judges it (`BadDataCounter.check`) after the last batch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lalmbench import metrics
from lalmbench.config import EvalTaskConfig, TrainConfig
from lalmbench.data.batches import BatchMaker
from lalmbench.data.examples import BadDataCounter, Example, iter_examples
from lalmbench.distributed import DistInfo, gather_objects
from lalmbench.errors import EncoderRuntimeError
from lalmbench.train import EncoderFailure

log = logging.getLogger("lalmbench")
SORT_CHUNK = 256


@dataclass
class TaskResult:
    name: str
    metric: str
    score: float
    predictions: list[tuple[str, str, str]]  # (prediction, reference, key)
    seconds: float


def _numbered_examples(task: EvalTaskConfig, shards: list[Path], counter: BadDataCounter, dist: DistInfo,
                       protocol: str = "official"):
    number = 0
    for shard in shards:
        for _, _, example in iter_examples(task.name, shard, task.data.key, counter, protocol=protocol):
            if number % dist.world == dist.rank:
                yield number, example
            number += 1


def _chunks(numbered, size: int):
    chunk = []
    for item in numbered:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def evaluate_task(model, task: EvalTaskConfig, shards: list[Path], config: TrainConfig, tokenize, dist: DistInfo,
                  counter: BadDataCounter, batch_size: int | None = None, workers: int = 0,
                  show_progress: bool = True) -> TaskResult:
    started = time.perf_counter()
    batch_size = batch_size or config.eval_batch_size or task.batch_size
    task_counts, decode_failures = BadDataCounter(), BadDataCounter()  # read on every rank; decoded on one
    maker = BatchMaker(tokenize, decode_failures, config.sample_rate, config.eval_crop_audio_length, None,
                       workers=workers, add_eos=False, protocol=config.protocol)
    answers: dict[int, tuple[str, str, str]] = {}
    model.eval()
    progress = None
    if show_progress and dist.is_main:
        from tqdm.auto import tqdm

        progress = tqdm(desc=task.name, unit="ex", dynamic_ncols=True)

    references: dict[int, tuple[str, str]] = {}  # example number -> (reference text, key)

    def groups():
        """Batches of distinct clips, longest first within a chunk, tagged {ref: example numbers}."""
        for chunk in _chunks(_numbered_examples(task, shards, task_counts, dist, config.protocol), SORT_CHUNK):
            numbers: dict[tuple, list[int]] = {}
            first: dict[tuple, Example] = {}
            for number, example in chunk:
                clip = (example.ref.shard, example.ref.key)
                numbers.setdefault(clip, []).append(number)
                first.setdefault(clip, example)
                references[number] = (example.text, example.ref.key)
            ordered = sorted(first.values(), key=lambda e: -e.seconds)
            for start in range(0, len(ordered), batch_size):
                part = ordered[start:start + batch_size]
                # Keyed by ref, not by row: a row whose audio fails to decode leaves the batch.
                yield part, {e.ref: numbers[(e.ref.shard, e.ref.key)] for e in part}

    try:
        merged = model.merged_lora() if config.merge_lora_for_eval else contextlib.nullcontext()
        with merged, torch.no_grad(), torch.autocast(model.projector.weight.device.type, dtype=torch.bfloat16,
                                                     enabled=config.bf16):
            for batch, numbers_by_ref in maker.iterate(groups()):
                if batch is None:
                    continue
                try:
                    texts = model.decode(model.generate(batch, config.max_new_tokens, config.repetition_penalty))
                except EncoderFailure as failure:
                    raise EncoderRuntimeError(
                        f"the encoder failed while evaluating {task.name}: {failure}. The trained weights are "
                        f"saved; rerunning the same command reuses them and evaluates again.") from failure
                for ref, prediction in zip(batch["refs"], texts):
                    for number in numbers_by_ref[ref]:
                        reference, key = references[number]
                        answers[number] = (prediction, reference, key)
                if progress is not None:
                    progress.update(sum(len(numbers_by_ref[ref]) for ref in batch["refs"]))
    finally:
        maker.close()
        if progress is not None:
            progress.close()
    merged: dict[int, tuple[str, str, str]] = {}
    for rank_answers, rank_failures in gather_objects(dist, (answers, decode_failures)):
        merged.update(rank_answers)
        task_counts.merge(rank_failures)
    counter.merge(task_counts)
    predictions = [merged[n] for n in sorted(merged)]
    if not predictions:
        from lalmbench.errors import DataError

        raise DataError(f"{task.name}: no usable test example in {len(shards)} shard(s); "
                        f"bad data: {task_counts.as_dict().get(task.name)}")
    task_counts.check(task.name, config.max_bad_fraction)
    score = metrics.compute(task.metric, [p for p, _, _ in predictions], [r for _, r, _ in predictions],
                            **task.metric_args)
    return TaskResult(task.name, task.metric, score, predictions, time.perf_counter() - started)
