"""Examples -> tensors: audio decoded and resampled (optionally ahead, in worker processes), padded.

A batch is a dict:
  audio [B, T] float32 (zero padded), audio_mask [B, T] long (1 = sample, 0 = padding),
  prompt_ids / target_ids: lists of token id lists (target ends with EOS in training),
  texts (reference strings), refs (ExampleRef, for error messages and resume).

Bad data: a clip the decoder or the resampler rejects comes back as a `ClipFailure` and is counted when
its batch is handed out, not when it is decoded ahead: the counts then cover the batches consumed,
which a checkpoint's data position covers too. `stream_batches` puts these counts and the stream's
together into one account per dataset and judges it for every training batch (examples.py).
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch

from lalmbench.data.audio import AudioDecodeError, prepare_audio
from lalmbench.data.examples import BadDataCounter, Example
from lalmbench.threads import single_thread_worker

if TYPE_CHECKING:
    from lalmbench.data.mixture import TrainStream


@dataclass(frozen=True)
class ClipFailure:
    """Why one clip could not be prepared: a bad-data reason and its message."""

    reason: str
    detail: str


def prepare_clip(data: bytes, fraction: float | None, crop_seconds: float | None, sample_rate: int,
                 protocol: str) -> np.ndarray | ClipFailure:
    """One clip as the model reads it, or why not (bad data, counted by the caller)."""
    try:
        return prepare_audio(data, fraction, crop_seconds, sample_rate, protocol)
    except AudioDecodeError as exc:
        return ClipFailure("undecodable audio", str(exc))
    except Exception as exc:  # e.g. a rate the resampler rejects: this clip is unusable, the run is not
        return ClipFailure("unusable audio", f"cannot prepare audio: {type(exc).__name__}: {exc}")


def _prepare(args: tuple[bytes, float | None, float | None, int, str]) -> np.ndarray | ClipFailure:
    return prepare_clip(*args)


def pad_audio(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(c) for c in clips)
    audio = torch.zeros(len(clips), longest, dtype=torch.float32)
    mask = torch.zeros(len(clips), longest, dtype=torch.long)
    for row, clip in enumerate(clips):
        audio[row, : len(clip)] = torch.from_numpy(clip)
        mask[row, : len(clip)] = 1
    return audio, mask


class BatchMaker:
    """Turns lists of examples into padded tensor batches, decoding in `workers` processes ahead."""

    def __init__(self, tokenize: Callable[[str, str, bool], tuple[list[int], list[int]]], counter: BadDataCounter,
                 sample_rate: int = 16_000, crop_seconds: float | None = None,
                 crop_fraction: Callable[[Example], float] | None = None, workers: int = 0, prefetch: int = 4,
                 add_eos: bool = True, protocol: str = "official"):
        self.tokenize = tokenize
        self.protocol = protocol  # the resampler and crop rule (audio.py)
        self.counter = counter
        self.sample_rate, self.crop_seconds, self.crop_fraction = sample_rate, crop_seconds, crop_fraction
        self.add_eos = add_eos
        self.prefetch = max(1, prefetch)
        self.pool = None
        if workers > 0:
            self.pool = futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                   initializer=single_thread_worker)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def _jobs(self, examples: list[Example]) -> list[tuple]:
        return [(e.audio, self.crop_fraction(e) if self.crop_fraction else None, self.crop_seconds, self.sample_rate,
                 self.protocol) for e in examples]

    def _assemble(self, examples: list[Example], clips: list) -> dict | None:
        kept, audio = [], []
        for example, clip in zip(examples, clips):
            if isinstance(clip, ClipFailure):  # decoding failed after the header looked fine
                self.counter.count_bad(example.ref.dataset, clip.reason, example.ref.shard,
                                       f"{example.ref.key}: {clip.detail}")
                continue
            kept.append(example)
            audio.append(clip)
        if not kept:
            return None
        padded, mask = pad_audio(audio)
        prompts, targets = zip(*(self.tokenize(e.ref.dataset, e.text, self.add_eos) for e in kept))
        return {"audio": padded, "audio_mask": mask, "prompt_ids": list(prompts), "target_ids": list(targets),
                "texts": [e.text for e in kept], "refs": [e.ref for e in kept]}

    def make(self, examples: list[Example]) -> dict | None:
        return self._assemble(examples, [_prepare(job) for job in self._jobs(examples)])

    def iterate(self, groups: Iterable[tuple[list[Example], object]]) -> Iterator[tuple[dict | None, object]]:
        """Batches for `groups` of (examples, tag), in order; decoding runs `prefetch` groups ahead.

        A batch's decode failures are counted when the batch is handed out, not when it is decoded ahead:
        the counts then cover the batches consumed, which a checkpoint's data position also covers.
        """
        if self.pool is None:
            for examples, tag in groups:
                yield self.make(examples), tag
            return
        pending: deque = deque()
        source = iter(groups)
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.prefetch:
                try:
                    examples, tag = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((examples, tag, self.pool.map(_prepare, self._jobs(examples))))
            if not pending:
                return
            examples, tag, clips = pending.popleft()
            yield self._assemble(examples, list(clips)), tag


@dataclass
class DataPosition:
    """Where training data stands after a batch: the stream's snapshot, what the stream had read up to it
    (`read`), and what failed in the batches handed out up to it (`failed`)."""

    snapshot: dict
    read: BadDataCounter
    failed: BadDataCounter

    def account(self) -> BadDataCounter:
        """Everything unusable behind the batches so far, per dataset."""
        total = self.read.copy()
        total.merge(self.failed)
        return total


def stream_batches(stream: "TrainStream", maker: BatchMaker, max_bad_fraction: float
                   ) -> Iterator[tuple[dict, DataPosition]]:
    """Training batches, each with the data position after it. Every batch handed out is judged on the
    whole account: what the stream skipped and what failed to decode (examples.py's rule). The stream
    counts into `stream.counter`, the maker into `maker.counter`; a resumed run restores both."""
    def groups():
        while True:
            examples = stream.next_batch()
            yield examples, (stream.snapshot(), stream.counter.copy())

    for batch, (snapshot, read) in maker.iterate(groups()):
        position = DataPosition(snapshot, read, maker.counter.copy())
        position.account().judge(max_bad_fraction)
        if batch is not None:  # every clip of the group failed: counted, nothing to train on
            yield batch, position
