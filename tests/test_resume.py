"""Resume: an interrupted run continues from its newest complete checkpoint and ends where an
uninterrupted run ends (same final weights, same scores), whether it was killed (SIGKILL, in a
subprocess running the real CLI) or stopped at any checkpoint. Half-written checkpoints are ignored.

The helpers at the top (tiny shards, configs, a slow encoder) are shared with test_faults.py and
test_caches.py.
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

import numpy as np
import pytest
import torch
import yaml

LABELS = {"red": 400.0, "green": 700.0, "blue": 1100.0}
RATE = 16_000

# Small everything: 2-layer width-64 decoder, 4-example batches of 0.25 s clips, 3-token answers.
FAST = {"decoder_model_name": "tiny-random", "max_steps": 6, "save_steps": 2, "save_total_limit": 10,
        "shuffle_buffer": 8, "sort_buffer": 4, "per_device_train_batch_size": 2, "warmup_steps": 1,
        "learning_rate": 3e-3, "max_new_tokens": 3, "logging_steps": 1, "torch_num_threads": 1,
        "lora_r": 2}


def wav_bytes(audio: np.ndarray, rate: int = RATE, fmt: str = "WAV") -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio, dtype=np.float32), rate, format=fmt, subtype="PCM_16")
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
                  eval_prompt: str = "Name the colour.") -> tuple[Path, Path]:
    train = {"train_data": {name: {"data": [str(p) for p in paths], "prompt": "Name the colour.", "key": "label"}
                            for name, paths in train_shards.items()}}
    evaluation = {"eval_tones": {"data": {"data": [str(p) for p in eval_shards], "key": "label", "prompt": eval_prompt},
                                 "batch_size": 4, "num_workers": 0, "metric": "Accuracy", "metric_args": {},
                                 "weight": 1}}
    train_yaml, eval_yaml = root / "train.yaml", root / "eval.yaml"
    train_yaml.write_text(yaml.safe_dump(train))
    eval_yaml.write_text(yaml.safe_dump(evaluation))
    return train_yaml, eval_yaml


def tiny_data(root: Path, train_count: int = 12, eval_count: int = 4) -> tuple[Path, Path]:
    """Two training shards (one gzip, one plain tar) and one test shard of 0.25 s tones; returns the YAMLs."""
    records = good_records("tone", train_count, seed=1)
    half = train_count // 2
    shards = [write_shard(root / "tones-000000.tar.gz", records[:half]),
              write_shard(root / "tones-000001.tar", records[half:])]
    test = write_shard(root / "tones-test.tar", good_records("test", eval_count, seed=2))
    return write_configs(root, {"tones": shards}, [test])


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


def trained_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "final_weights.pt")


def assert_same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs (max diff {(a[name] - b[name]).abs().max()})"


def losses(run_dir: Path) -> list[tuple[str, str]]:
    rows = (run_dir / "train_log.csv").read_text().splitlines()[1:]
    return [tuple(row.split(",")[:2]) for row in rows]


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


def run_inprocess(train_yaml: Path, eval_yaml: Path, output: Path, overrides: dict | None = None,
                  encoder: str = "lalmbench.encoders.LogMelEncoder", model_args: dict | None = None,
                  force: bool = False):
    from lalmbench.runner import run

    return run(encoder, str(train_yaml), str(eval_yaml), model_args or {}, {**FAST, **(overrides or {})}, output,
               force=force, allow_download=False, write_report=False, show_progress=False)


# ---------------------------------------------------------------------------------------------------------------
def _kill_when(process: subprocess.Popen, run_dir: Path, checkpoint: str, timeout: float = 60.0) -> None:
    """SIGKILL `process` as soon as `run_dir/checkpoint` is complete (marker written)."""
    deadline = time.monotonic() + timeout
    while not (run_dir / checkpoint / "checkpoint.json").is_file():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (rc {process.returncode}) before {checkpoint} appeared: "
                                 f"{process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{checkpoint} did not appear within {timeout} s")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_sigkilled_cli_run_resumes_to_the_same_weights_and_scores(tmp_path):
    """Real CLI, killed twice with SIGKILL (after checkpoint 2, then after checkpoint 4 of the resumed
    run), rerun to the end: final weights, losses and scores equal an uninterrupted run's."""
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = tmp_path / "slow_encoder.py"
    encoder.write_text(SLOW_ENCODER)
    overrides = {**FAST, "max_steps": 8}
    model_args = {"delay": 0.15}  # two encoder calls a step: >= 0.3 s to kill between checkpoints

    reference = tmp_path / "reference"
    done = subprocess.run(cli_command(str(encoder), train_yaml, eval_yaml, reference, overrides, model_args),
                          env=cli_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]

    output = tmp_path / "interrupted"
    command = cli_command(str(encoder), train_yaml, eval_yaml, output, overrides, model_args)
    run_dir = run_dir_of(output, "slow_encoder")
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        process = subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _kill_when(process, run_dir, checkpoint)
        finally:
            if process.poll() is None:
                process.kill()
            process.stderr.close()
        assert not (run_dir / "training_complete.json").exists()
        assert not (run_dir / "final_weights.pt").exists()
        assert not (run_dir / "scores.tsv").exists()

    finished = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "resumed from" in finished.stderr and "checkpoint-" in finished.stderr

    ref_dir = run_dir_of(reference, "slow_encoder")
    assert_same_weights(trained_weights(ref_dir), trained_weights(run_dir))
    assert losses(run_dir) == losses(ref_dir)
    assert [row[0] for row in losses(run_dir)] == [str(step) for step in range(1, 9)]
    assert (run_dir / "scores.tsv").read_text() == (ref_dir / "scores.tsv").read_text()
    assert (run_dir / "predictions_eval_tones.csv").read_text() == (ref_dir / "predictions_eval_tones.csv").read_text()
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["bad_data"] == json.loads((ref_dir / "run_summary.json").read_text())["bad_data"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted in-process run keeping every checkpoint (2, 4, 6)."""
    root = tmp_path_factory.mktemp("resume")
    train_yaml, eval_yaml = tiny_data(root / "data")
    result = run_inprocess(train_yaml, eval_yaml, root / "reference")
    return train_yaml, eval_yaml, result.run_dir


def _interrupted_copy(run_dir: Path, target: Path, keep_step: int) -> Path:
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


@pytest.mark.parametrize("step", [2, 4, 6])
def test_resume_from_each_checkpoint_matches_uninterrupted(uninterrupted, tmp_path, step, caplog):
    train_yaml, eval_yaml, ref_dir = uninterrupted
    output = tmp_path / "out"
    _interrupted_copy(ref_dir, run_dir_of(output), step)
    result = run_inprocess(train_yaml, eval_yaml, output)
    assert not result.reused_training
    assert_same_weights(trained_weights(ref_dir), trained_weights(result.run_dir))
    assert losses(result.run_dir) == losses(ref_dir)
    assert (result.run_dir / "scores.tsv").read_text() == (ref_dir / "scores.tsv").read_text()
    log = (result.run_dir / "log.txt").read_text()
    assert f"resumed from {result.run_dir / f'checkpoint-{step}'} (step {step} of 6)" in log


def test_half_written_checkpoint_is_ignored(uninterrupted, tmp_path):
    """A checkpoint directory without its marker (a write cut short) and a leftover temporary
    directory are ignored: the run resumes from the newest complete checkpoint."""
    train_yaml, eval_yaml, ref_dir = uninterrupted
    output = tmp_path / "out"
    run_dir = _interrupted_copy(ref_dir, run_dir_of(output), 2)
    half = run_dir / "checkpoint-4"
    shutil.copytree(ref_dir / "checkpoint-4", half)
    (half / "checkpoint.json").unlink()
    (half / "trainable.pt").write_bytes(b"truncated")
    shutil.copytree(ref_dir / "checkpoint-6", run_dir / ".checkpoint-6.abc123.tmp")
    result = run_inprocess(train_yaml, eval_yaml, output)
    assert f"resumed from {run_dir / 'checkpoint-2'} (step 2 of 6)" in (run_dir / "log.txt").read_text()
    assert_same_weights(trained_weights(ref_dir), trained_weights(result.run_dir))


def test_existing_checkpoint_without_completion_marker_is_not_a_finished_run(uninterrupted, tmp_path):
    """Known defect of the published system: a checkpoint made it skip training. Here only
    training_complete.json means finished; a final checkpoint alone resumes (no step left) and saves."""
    train_yaml, eval_yaml, ref_dir = uninterrupted
    output = tmp_path / "out"
    _interrupted_copy(ref_dir, run_dir_of(output), 6)
    result = run_inprocess(train_yaml, eval_yaml, output)
    assert not result.reused_training
    assert (result.run_dir / "training_complete.json").is_file()
    assert_same_weights(trained_weights(ref_dir), trained_weights(result.run_dir))


def test_data_position_restores_buffers_from_shards(tmp_path):
    """The stream state holds only references; loading it re-reads the buffered examples from the
    shards, and the stream then yields exactly what the uninterrupted stream yields."""
    from lalmbench.config import load_train_config
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.data.mixture import TrainStream

    train_yaml, _ = tiny_data(tmp_path / "data", train_count=10)
    config = load_train_config(str(train_yaml), FAST)
    specs = list(config.train_data.values())
    from lalmbench.data.shards import resolve_shards

    shards = {s.name: resolve_shards(s, tmp_path) for s in specs}

    def stream():
        return TrainStream(specs, shards, 2, 7, lambda d, t: len(t), BadDataCounter(), shuffle_buffer=5,
                           sort_buffer=3)

    first = stream()
    for _ in range(7):  # more than one pass over 10 examples: epochs, buffers and positions all in play
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))
    assert state["shuffle_buffer"] and all(set(ref) >= {"shard", "key"} for ref in state["shuffle_buffer"])
    expected = [[(e.ref, e.audio, e.text) for e in first.next_batch()] for _ in range(12)]

    second = stream()
    second.load_state_dict(state)
    got = [[(e.ref, e.audio, e.text) for e in second.next_batch()] for _ in range(12)]
    assert got == expected


PEEKING_ENCODER = '''
from pathlib import Path
from lalmbench.encoders import logmel


class PeekEncoder(logmel.LogMelEncoder):
    """Notes, at every call, how many rows train_log.csv holds on disk while the run goes on."""

    def __init__(self, log: str = "", notes: str = "", **kwargs):
        super().__init__(**kwargs)
        self.log, self.notes = Path(log), Path(notes)

    def forward(self, audio, audio_attention_mask=None):
        if self.log.is_file():
            with open(self.notes, "a") as handle:
                handle.write(f"{len(self.log.read_text().splitlines()) - 1}\\n")
        return super().forward(audio, audio_attention_mask)
'''


def test_train_log_rows_reach_the_disk_as_they_are_written(tmp_path):
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = tmp_path / "peek_encoder.py"
    encoder.write_text(PEEKING_ENCODER)
    log_path = run_dir_of(tmp_path / "out", "peek_encoder") / "train_log.csv"
    notes = tmp_path / "notes.txt"
    run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {"save_steps": 100}, encoder=str(encoder),
                  model_args={"log": str(log_path), "notes": str(notes)})
    seen = [int(line) for line in notes.read_text().split()]
    assert 5 in seen  # step 6 saw step 5's row on disk, long before the run's only checkpoint (step 6)


def test_a_run_that_starts_over_empties_the_train_log(uninterrupted, tmp_path):
    """A run killed before its first checkpoint left rows behind; starting over, each step is logged once."""
    train_yaml, eval_yaml, ref_dir = uninterrupted
    run_dir = _interrupted_copy(ref_dir, run_dir_of(tmp_path / "out"), 0)  # every checkpoint gone, 6 rows kept
    assert len(losses(run_dir)) == 6
    run_inprocess(train_yaml, eval_yaml, tmp_path / "out")
    assert losses(run_dir) == losses(ref_dir)


@pytest.mark.slow
def test_train_log_is_live_and_a_run_that_starts_over_empties_it(tmp_path):
    """Every row reaches the disk when it is written (a run can be followed, a kill keeps the rows); a run
    killed before its first checkpoint starts over, and its log then holds each step once."""
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = tmp_path / "slow_encoder.py"
    encoder.write_text(SLOW_ENCODER)
    overrides = {**FAST, "max_steps": 8, "save_steps": 100}  # no checkpoint before the end
    command = cli_command(str(encoder), train_yaml, eval_yaml, tmp_path / "out", overrides, {"delay": 0.1})
    log_path = run_dir_of(tmp_path / "out", "slow_encoder") / "train_log.csv"
    process = subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (log_path.is_file() and len(log_path.read_text().splitlines()) >= 4):  # header + 3 steps
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no rows reached train_log.csv while the run trained"
            time.sleep(0.02)
        assert not list(log_path.parent.glob("checkpoint-*"))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert len(log_path.read_text().splitlines()) >= 4  # the kill kept them
    finished = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert [row[0] for row in losses(log_path.parent)] == [str(step) for step in range(1, 9)]
