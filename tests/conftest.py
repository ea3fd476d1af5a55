"""Shared fixtures: tiny synthetic shards written with webdataset, encoder files, and a small demo suite.

The helpers of tests that train (tiny runs, kills, resumes) are plain functions in run_helpers.py."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch


def wav_bytes(seconds: float = 0.5, rate: int = 16_000, freq: float = 440.0, channels: int = 1, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        audio = np.stack([audio] * channels, axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, audio.astype(np.float32), rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def write_shard(path, samples: list[dict]) -> str:
    """samples: dicts with __key__ and members (bytes or dict for json)."""
    import webdataset as wds

    with wds.TarWriter(str(path), compress=str(path).endswith(".gz")) as sink:
        for sample in samples:
            sink.write({k: (json.dumps(v).encode() if k == "json" and not isinstance(v, bytes) else v)
                        for k, v in sample.items()})
    return str(path)


@pytest.fixture(autouse=True)
def _small_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture
def encoder_file(tmp_path):
    """encoder_file(name, source) -> the path (a str, as `lalmbench run` takes it) of tmp_path/<name>.py
    holding `source`: an encoder given to a run as a file. Its run directory is `<output>/train/<name>`."""
    def write(name: str, source: str) -> str:
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        return str(path)
    return write


@pytest.fixture(scope="session")
def demo_suite(tmp_path_factory):
    """The demo's four synthetic tasks, small: 24 train and 8 test examples each."""
    from lalmbench.demo import write_demo_data

    directory = tmp_path_factory.mktemp("demo_suite")
    train_yaml, eval_yaml, chance = write_demo_data(directory, seed=1, train_examples=24, test_examples=8)
    return train_yaml, eval_yaml, chance
