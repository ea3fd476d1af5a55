"""A LogMelEncoder that makes one process of a multi-process run fail at a chosen stage (tests only).

Loaded by path as the run's encoder; on the process whose RANK is `rank` it raises while being built
(stage "prepare") or patches one lalmbench function to raise on its `after`+1-th call:

    train       next_batch of the training    the training data stream, a few steps in (PublishedStream
                stream                        under official, TrainStream under corrected)
    checkpoint  train.atomic_directory        writing a checkpoint (as a full disk would)
    evaluate    AudioLLM.generate             answering the test set
    score       metrics.compute               scoring, after every answer was gathered

Before raising it writes the time to `mark` (a file), so a test can measure how long the processes
took to stop. With `hang` the failing process also starts a thread that never ends, so the process
cannot exit by itself (as when a worker or a library thread hangs).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from lalmbench.encoders import logmel  # the module: the loader wants one *Encoder name here

STAGES = ("prepare", "train", "checkpoint", "evaluate", "score")


class StageFailingEncoder(logmel.LogMelEncoder):
    def __init__(self, stage: str, rank: int = 1, after: int = 0, mark: str = "", hang: bool = False):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if int(os.environ.get("RANK", "0")) != rank:
            return
        self._mark, self._hang = mark, hang
        message = f"injected failure at stage {stage} on process {rank}"
        if stage == "prepare":
            self._fail(RuntimeError(message))
        calls = 0

        def failing(original, error: Exception):
            def wrapper(*args, **kwargs):
                nonlocal calls
                calls += 1
                if calls > after:
                    self._fail(error)
                return original(*args, **kwargs)
            return wrapper

        if stage == "train":
            from lalmbench.data.mixture import TrainStream
            from lalmbench.data.official_stream import PublishedStream

            for stream in (TrainStream, PublishedStream):
                stream.next_batch = failing(stream.next_batch, RuntimeError(message))
        elif stage == "checkpoint":
            from lalmbench import train

            train.atomic_directory = failing(train.atomic_directory, OSError(28, f"No space left on device ({message})"))
        elif stage == "evaluate":
            from lalmbench.model.audio_llm import AudioLLM

            AudioLLM.generate = failing(AudioLLM.generate, RuntimeError(message))
        elif stage == "score":
            from lalmbench import metrics

            metrics.compute = failing(metrics.compute, RuntimeError(message))

    def _fail(self, error: Exception):
        if self._mark:
            Path(self._mark).write_text(repr(time.time()))
        if self._hang:
            threading.Thread(target=time.sleep, args=(3600,), name="never-ending", daemon=False).start()
        raise error

