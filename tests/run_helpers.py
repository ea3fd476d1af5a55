"""Tiny runs for the tests that train: 0.25 s tone shards and their train/eval YAMLs, a fast in-process run,
the real CLI in a subprocess (SIGKILLed on cue), a run directory as an interrupted run leaves it, and the
comparison of a resumed run with an uninterrupted one.

Everything is real (WebDataset shards, the tiny-random decoder, the CLI), only small: a 2-layer width-64
decoder, 2-example micro-batches of 0.25 s clips, 3-token answers, 6 steps with a checkpoint every 2.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import yaml

LABELS = {"red": 400.0, "green": 700.0, "blue": 1100.0}
RATE = 16_000

FAST = {"decoder_model_name": "tiny-random", "max_steps": 6, "save_steps": 2, "save_total_limit": 10,
        "shuffle_buffer": 8, "sort_buffer": 4, "per_device_train_batch_size": 2, "warmup_steps": 1,
        "learning_rate": 3e-3, "max_new_tokens": 3, "logging_steps": 1, "torch_num_threads": 1,
        "lora_r": 2}


# -- shards and configs --------------------------------------------------------------------------------------------
def wav_bytes(audio: np.ndarray, rate: int = RATE, fmt: str = "WAV") -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio, dtype=np.float32), rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def nan_wav() -> bytes:
    """A float WAV whose header is fine (it passes the read-time probe) and whose samples are NaN."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.full(4000, np.nan, dtype=np.float32), 16_000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def tone(label: str, rng: np.random.Generator, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * LABELS[label] * t + rng.uniform(0, 6)) + 0.01 * rng.standard_normal(len(t))


def write_shard(path: Path, records: list[dict], compress: bool | None = None) -> Path:
    """Write WebDataset records ({"__key__", "wav", "json", ...}) as a tar (gzip when the name says so)."""
    import webdataset as wds

    path.parent.mkdir(parents=True, exist_ok=True)
    compress = path.name.endswith(".gz") if compress is None else compress
    with wds.TarWriter(str(path), compress=compress, mtime=0.0) as sink:
        for record in records:
            sink.write(record)
    return path


def good_records(prefix: str, count: int, seed: int, seconds: float = 0.25) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        label = list(LABELS)[index % len(LABELS)]
        records.append({"__key__": f"{prefix}_{index:04d}", "wav": wav_bytes(tone(label, rng, seconds)),
                        "json": json.dumps({"label": label}).encode()})
    return records


def write_configs(root: Path, train_shards: dict[str, list[Path]], eval_shards: list[Path],
                  prompt: str = "Name the colour.", batch_size: int = 4, prob: float | None = None,
                  train_settings: dict | None = None) -> tuple[Path, Path]:
    """root/train.yaml (a dataset per entry of `train_shards`, with `prob` where given, and `train_settings`
    beside them) and root/eval.yaml (one Accuracy test set, eval_tones, of `eval_shards`)."""
    datasets = {name: {"data": [str(p) for p in paths], "prompt": prompt, "key": "label",
                       **({} if prob is None else {"prob": prob})} for name, paths in train_shards.items()}
    train = {**(train_settings or {}), "train_data": datasets}
    evaluation = {"eval_tones": {"data": {"data": [str(p) for p in eval_shards], "key": "label", "prompt": prompt},
                                 "batch_size": batch_size, "num_workers": 0, "metric": "Accuracy", "metric_args": {},
                                 "weight": 1}}
    train_yaml, eval_yaml = root / "train.yaml", root / "eval.yaml"
    train_yaml.write_text(yaml.safe_dump(train))
    eval_yaml.write_text(yaml.safe_dump(evaluation))
    return train_yaml, eval_yaml


def tone_data(root: Path, train_records: list[dict], test_records: list[dict]) -> tuple[Path, Path]:
    """One training shard root/tones.tar and one test shard root/test.tar of the given records; the YAMLs."""
    train = write_shard(root / "tones.tar", train_records)
    test = write_shard(root / "test.tar", test_records)
    return write_configs(root, {"tones": [train]}, [test])


def tiny_data(root: Path, train_count: int = 12, eval_count: int = 4) -> tuple[Path, Path]:
    """Two training shards (one gzip, one plain tar) and one test shard of 0.25 s tones; returns the YAMLs."""
    records = good_records("tone", train_count, seed=1)
    half = train_count // 2
    shards = [write_shard(root / "tones-000000.tar.gz", records[:half]),
              write_shard(root / "tones-000001.tar", records[half:])]
    test = write_shard(root / "tones-test.tar", good_records("test", eval_count, seed=2))
    return write_configs(root, {"tones": shards}, [test])


def tones_stream(shards: list[Path], max_bad_fraction: float, key: str = "label", seed: int = 0):
    """lalmbench's training stream over `shards` as one dataset "tones", micro-batches of 2, every text one token."""
    from lalmbench.config import DatasetSpec
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.data.mixture import TrainStream

    spec = DatasetSpec(name="tones", data=[str(p) for p in shards], key=key, prob=1)
    return TrainStream([spec], {"tones": shards}, 2, seed, lambda name, text: 1, BadDataCounter(),
                       max_bad_fraction=max_bad_fraction)


# -- runs ----------------------------------------------------------------------------------------------------------
SLOW_ENCODER = '''
import time
from lalmbench.encoders import logmel


class SlowEncoder(logmel.LogMelEncoder):
    """LogMelEncoder that sleeps in forward, so a test can kill the run between checkpoints."""

    def __init__(self, delay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def forward(self, audio, audio_attention_mask=None):
        time.sleep(self.delay)
        return super().forward(audio, audio_attention_mask)
'''


def run_dir_of(output: Path, encoder_name: str = "LogMelEncoder") -> Path:
    return output / "train" / encoder_name


def run_inprocess(train_yaml: Path, eval_yaml: Path, output: Path, overrides: dict | None = None,
                  encoder: str = "lalmbench.encoders.LogMelEncoder", model_args: dict | None = None,
                  force: bool = False):
    """`lalmbench run` in this process, FAST updated by `overrides`; returns the runner's result."""
    from lalmbench.runner import run

    return run(encoder, str(train_yaml), str(eval_yaml), model_args or {}, {**FAST, **(overrides or {})}, output,
               force=force, allow_download=False, write_report=False, show_progress=False)


class TinyRun(NamedTuple):
    root: Path
    train_yaml: Path
    eval_yaml: Path
    result: object  # the runner's RunResult


def finished_tiny_run(root: Path, output: str = "out", overrides: dict | None = None,
                      model_args: dict | None = None) -> TinyRun:
    """tiny_data under root/data and one finished run of it into root/<output>."""
    train_yaml, eval_yaml = tiny_data(root / "data")
    result = run_inprocess(train_yaml, eval_yaml, root / output, overrides, model_args=model_args)
    return TinyRun(root, train_yaml, eval_yaml, result)


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "CUDA_VISIBLE_DEVICES")}
    env.update({"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env


def cli_command(encoder: str, train_yaml: Path, eval_yaml: Path, output: Path, overrides: dict,
                model_args: dict | None = None) -> list[str]:
    command = [sys.executable, "-m", "lalmbench", "run", encoder, str(train_yaml), str(eval_yaml),
               "--args", json.dumps(overrides), "--output-dir", str(output), "--no-report"]
    if model_args:
        command += ["--model-args", json.dumps(model_args)]
    return command


def run_cli(command: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `command` to its end; it must succeed."""
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def kill_when(command: list[str], ready: Callable[[], bool], what: str, timeout: float = 60.0,
              inspect: Callable[[subprocess.Popen], object] | None = None) -> object:
    """Start `command` and SIGKILL it as soon as `ready()` holds (`what` names that moment in failures); the
    run must not end before. `inspect(process)`, called just before the kill, sees it alive; its value is
    returned."""
    process = subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise AssertionError(f"the run ended (rc {process.returncode}) before {what}: "
                                     f"{process.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen within {timeout} s")
            time.sleep(0.02)
        seen = inspect(process) if inspect else None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        return seen
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


# -- interrupted runs and their comparison -------------------------------------------------------------------------
def interrupted_copy(run_dir: Path, target: Path, keep_step: int) -> Path:
    """The run directory as a run stopped right after checkpoint `keep_step` would have left it."""
    shutil.copytree(run_dir, target)
    for name in ("training_complete.json", "final_weights.pt", "COMPLETED", "scores.tsv", "run_summary.json"):
        (target / name).unlink(missing_ok=True)
    shutil.rmtree(target / "scores", ignore_errors=True)
    for path in target.glob("predictions_*.csv"):
        path.unlink()
    for path in target.glob("checkpoint-*"):
        if int(path.name.split("-")[1]) > keep_step:
            shutil.rmtree(path)
    return target


def resume_copy(ref_dir: Path, output: Path, step: int, train_yaml: Path, eval_yaml: Path,
                overrides: dict | None = None, **run_args):
    """An interrupted copy of `ref_dir` (stopped after checkpoint `step`) under `output`, run again with the
    same command: it must resume from that checkpoint. Returns the runner's result."""
    run_dir = interrupted_copy(ref_dir, run_dir_of(output, ref_dir.name), step)
    result = run_inprocess(train_yaml, eval_yaml, output, overrides, **run_args)
    assert f"resumed from {run_dir / f'checkpoint-{step}'}" in (run_dir / "log.txt").read_text()
    return result


def trained_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "final_weights.pt")


def assert_same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs (max diff {(a[name] - b[name]).abs().max()})"


def losses(run_dir: Path) -> list[tuple[str, str]]:
    rows = (run_dir / "train_log.csv").read_text().splitlines()[1:]
    return [tuple(row.split(",")[:2]) for row in rows]


def assert_same_run(run_dir: Path, ref_dir: Path) -> None:
    """The run in `run_dir` ended as the one in `ref_dir`: final weights, logged losses and scores alike."""
    assert_same_weights(trained_weights(ref_dir), trained_weights(run_dir))
    assert losses(run_dir) == losses(ref_dir)
    assert (run_dir / "scores.tsv").read_text() == (ref_dir / "scores.tsv").read_text()
