"""Examples -> tensors: audio decoded and resampled (optionally ahead, in worker processes), padded.

A batch is a dict:
  audio [B, T] float32 (zero padded), audio_mask [B, T] long (1 = sample, 0 = padding),
  prompt_ids / target_ids: lists of token id lists (target ends with EOS in training),
  texts (reference strings), refs (ExampleRef, for error messages and resume).
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
from collections import deque
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from lalmbench.data.audio import AudioDecodeError, prepare_audio
from lalmbench.data.examples import BadDataCounter, Example
from lalmbench.threads import single_thread_worker


def _prepare(args: tuple[bytes, float | None, float | None, int, str]) -> np.ndarray | str:
    data, fraction, crop, rate, protocol = args
    try:
        return prepare_audio(data, fraction, crop, rate, protocol)
    except AudioDecodeError as exc:
        return str(exc)


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
            if isinstance(clip, str):  # decoding failed after the header looked fine
                self.counter.count_bad(example.ref.dataset, "undecodable audio", example.ref.shard,
                                       f"{example.ref.key}: {clip}")
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
