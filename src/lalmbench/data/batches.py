"""Examples -> tensors: audio decoded and resampled (optionally ahead, in loader worker processes), padded.

A batch is a dict:
  audio [B, T] float32 (zero padded), audio_mask [B, T] long (1 = sample, 0 = padding),
  prompt_ids / target_ids: lists of token id lists (target ends with EOS in training),
  texts (reference strings), refs (ExampleRef, for error messages and resume).

Decoding runs in torch's `DataLoader`, over a map-style dataset whose indices are decode jobs (a clip's
encoded bytes and where to crop it). What goes into each batch is decided in the main process, by the
caller's iterator of example groups (the training stream, the test-set reader): the loader's batch
sampler takes each group from it, sends the group's jobs to a worker and notes the group; the loader
hands batches back in the order it asked for them, so each batch finds its group again. The order of
the batches, and so exact resume, is the caller's whatever the number of workers. Tokenizing and padding
stay in the main process.

Workers are started with "spawn": fresh interpreters, never forked copies of a process whose CUDA
context and tokenizer or OpenMP threads may hold locks at that moment (a forked copy can wait on such a
lock forever). Each runs on one thread (`threads.single_thread_worker`) and serves one `iterate` call,
a whole training run or one test set; starting one costs a second or two (it imports torch). A spawned
worker imports the main module, so a script that starts a run must do it under
`if __name__ == "__main__":` (the `lalmbench` command does).

Bad data: a clip the decoder or the resampler rejects comes back as a `ClipFailure` and is counted when
its batch is handed out, not when it is decoded ahead: the counts then cover the batches consumed,
which a checkpoint's data position covers too. `stream_batches` puts these counts and the stream's
together into one account per dataset and judges it for every training batch (examples.py).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from lalmbench.data.audio import AudioDecodeError, prepare_audio
from lalmbench.data.examples import BadDataCounter, Example
from lalmbench.errors import LalmbenchError
from lalmbench.threads import single_thread_worker

if TYPE_CHECKING:
    from lalmbench.data.mixture import TrainStream

WORKER_START_METHOD = "spawn"
PARENT_CHECK_SECONDS = 0.5  # how often a worker checks that the process it serves is still there
WORKER_DIED = (
    "a loader worker process stopped unexpectedly ({reason}). If it stopped as it started, the script that "
    "started the run probably calls it at module level: loader workers are spawned and import the main "
    "module, so put the call under `if __name__ == \"__main__\":`. If it stopped later, the system may have "
    "killed it for lack of memory: try fewer than {workers} workers (num_workers; 0 decodes in the main "
    "process).")


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


class DecodeJobs(Dataset):
    """The loader's dataset: an index is a decode job (encoded bytes, crop start fraction), an item the
    prepared clip or its ClipFailure."""

    def __init__(self, sample_rate: int, crop_seconds: float | None, protocol: str):
        self.sample_rate, self.crop_seconds, self.protocol = sample_rate, crop_seconds, protocol

    def __getitem__(self, job: tuple[bytes, float | None]) -> np.ndarray | ClipFailure:
        data, fraction = job
        return prepare_clip(data, fraction, self.crop_seconds, self.sample_rate, self.protocol)


def keep_as_list(items: list) -> list:
    """The loader's collate function: clips differ in length and may be failures, so the main process
    pads them once it knows which are kept."""
    return items


def start_worker(worker_id: int) -> None:
    """A loader worker's set-up: one thread for the maths, and an end with its parent's."""
    single_thread_worker()
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="exit-with-parent", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    # torch's worker notices a dead parent only between jobs, and then waits, as it exits, for its queue
    # to write the last results into a pipe that nobody reads any more: the workers of a SIGKILLed run
    # would wait for ever. Measured: a worker still there 30 s after the kill. os._exit skips that wait.
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


class _GroupSampler:
    """The loader's batch sampler: draws each group from the caller's iterator, notes it with its tag, and
    gives the loader the group's decode jobs."""

    def __init__(self, groups: Iterable[tuple[list[Example], object]],
                 jobs: Callable[[list[Example]], list[tuple[bytes, float | None]]]):
        self.groups, self.jobs = groups, jobs
        self.asked: deque = deque()  # (examples, tag) of the batches asked for and not yet handed out

    def __iter__(self) -> Iterator[list[tuple[bytes, float | None]]]:
        for examples, tag in self.groups:
            self.asked.append((examples, tag))
            yield self.jobs(examples)


def pad_audio(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips zero-padded on the right to the longest, float32 [B, T], and their mask (1 = audio)."""
    audio = pad_sequence([torch.from_numpy(clip) for clip in clips], batch_first=True).float()
    return audio, (torch.arange(audio.shape[1]) < torch.tensor([len(clip) for clip in clips])[:, None]).long()


class BatchMaker:
    """Turns lists of examples into padded tensor batches, decoding in `workers` loader processes ahead
    (`prefetch` batches in all)."""

    def __init__(self, tokenize: Callable[[str, str, bool], tuple[list[int], list[int]]], counter: BadDataCounter,
                 sample_rate: int = 16_000, crop_seconds: float | None = None,
                 crop_fraction: Callable[[Example], float] | None = None, workers: int = 0, prefetch: int = 4,
                 add_eos: bool = True, protocol: str = "official"):
        self.tokenize = tokenize
        self.protocol = protocol  # the resampler and crop rule (audio.py)
        self.counter = counter
        self.sample_rate, self.crop_seconds, self.crop_fraction = sample_rate, crop_seconds, crop_fraction
        self.add_eos = add_eos
        self.workers = workers
        self.prefetch = max(1, prefetch)
        self._running: list = []  # loader iterators of unfinished `iterate` calls, for close()

    def close(self) -> None:
        """Stop the workers of any `iterate` left unfinished (training stops mid-stream)."""
        while self._running:
            _stop_workers(self._running.pop())

    def _jobs(self, examples: list[Example]) -> list[tuple[bytes, float | None]]:
        return [(e.audio, self.crop_fraction(e) if self.crop_fraction else None) for e in examples]

    def _assemble(self, examples: list[Example], clips: list) -> dict | None:
        kept, audio = [], []
        for example, clip in zip(examples, clips):
            if isinstance(clip, ClipFailure):  # decoding failed after the header looked fine
                self.counter.count_bad(example.ref.dataset, clip.reason, example.ref.shard,  # once per example
                                       f"{example.ref.key}: {clip.detail}", example.ref.key, example.ref.text_index)
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
        """One batch, decoded here and now."""
        return self._assemble(examples, [prepare_clip(data, fraction, self.crop_seconds, self.sample_rate,
                                                      self.protocol) for data, fraction in self._jobs(examples)])

    def loader(self, sampler: _GroupSampler) -> DataLoader:
        parallel = self.workers > 0
        # The loader draws a seed for its workers when it starts; from a generator of its own, so that the
        # global RNG (dropout) is where a checkpoint left it whenever the loader starts. Decoding draws
        # nothing at random: the seed is unused.
        return DataLoader(DecodeJobs(self.sample_rate, self.crop_seconds, self.protocol), batch_sampler=sampler,
                          collate_fn=keep_as_list, num_workers=self.workers, generator=torch.Generator(),
                          multiprocessing_context=WORKER_START_METHOD if parallel else None,
                          worker_init_fn=start_worker if parallel else None,
                          prefetch_factor=math.ceil(self.prefetch / self.workers) if parallel else None)

    def iterate(self, groups: Iterable[tuple[list[Example], object]]) -> Iterator[tuple[dict | None, object]]:
        """Batches for `groups` of (examples, tag), in order; with workers, decoding runs ahead.

        A batch's decode failures are counted when the batch is handed out (module docstring). A group
        whose clips all fail gives None.
        """
        sampler = _GroupSampler(groups, self._jobs)
        batches = None
        try:
            batches = iter(self.loader(sampler))
            self._running.append(batches)
            while True:
                try:
                    clips = next(batches)
                except StopIteration:
                    return
                except RuntimeError as exc:
                    if "exited unexpectedly" in str(exc):  # torch's words for a worker that died
                        raise LalmbenchError(WORKER_DIED.format(workers=self.workers, reason=exc)) from exc
                    raise
                examples, tag = sampler.asked.popleft()
                yield self._assemble(examples, clips), tag
        finally:
            if batches is not None:
                if batches in self._running:
                    self._running.remove(batches)
                _stop_workers(batches)


def _stop_workers(batches) -> None:
    # torch stops a loader's workers when its iterator is collected; a traceback or a suspended generator
    # can keep the iterator alive, so they are stopped here at a known moment.
    stop = getattr(batches, "_shutdown_workers", None)
    if stop is not None:
        stop()


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
