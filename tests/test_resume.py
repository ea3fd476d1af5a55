"""Resume: an interrupted run continues from its newest complete checkpoint and ends where an
uninterrupted run ends (same final weights, same scores), whether it was killed (SIGKILL, in a
subprocess running the real CLI) or stopped at any checkpoint. Half-written checkpoints are ignored.
The tiny runs, kills and comparisons are run_helpers.py's.
"""

from __future__ import annotations

import json
import shutil

import pytest

from run_helpers import (FAST, SLOW_ENCODER, assert_same_run, assert_same_weights, cli_command, finished_tiny_run,
                         interrupted_copy, kill_when, losses, resume_copy, run_cli, run_dir_of, run_inprocess,
                         tiny_data, trained_weights)


def test_sigkilled_cli_run_resumes_to_the_same_weights_and_scores(tmp_path, encoder_file):
    """Real CLI, killed twice with SIGKILL (after checkpoint 2, then after checkpoint 4 of the resumed
    run), rerun to the end: final weights, losses and scores equal an uninterrupted run's."""
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = encoder_file("slow_encoder", SLOW_ENCODER)
    overrides = {**FAST, "max_steps": 8}
    model_args = {"delay": 0.15}  # two encoder calls a step: >= 0.3 s to kill between checkpoints

    reference = tmp_path / "reference"
    run_cli(cli_command(encoder, train_yaml, eval_yaml, reference, overrides, model_args))

    output = tmp_path / "interrupted"
    command = cli_command(encoder, train_yaml, eval_yaml, output, overrides, model_args)
    run_dir = run_dir_of(output, "slow_encoder")
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        kill_when(command, (run_dir / checkpoint / "checkpoint.json").is_file, f"{checkpoint} appeared")
        assert not (run_dir / "training_complete.json").exists()
        assert not (run_dir / "final_weights.pt").exists()
        assert not (run_dir / "scores.tsv").exists()

    finished = run_cli(command)
    assert "resumed from" in finished.stderr and "checkpoint-" in finished.stderr

    ref_dir = run_dir_of(reference, "slow_encoder")
    assert_same_run(run_dir, ref_dir)
    assert [row[0] for row in losses(run_dir)] == [str(step) for step in range(1, 9)]
    assert (run_dir / "predictions_eval_tones.csv").read_text() == (ref_dir / "predictions_eval_tones.csv").read_text()
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["bad_data"] == json.loads((ref_dir / "run_summary.json").read_text())["bad_data"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted in-process run keeping every checkpoint (2, 4, 6)."""
    run = finished_tiny_run(tmp_path_factory.mktemp("resume"), "reference")
    return run.train_yaml, run.eval_yaml, run.result.run_dir


@pytest.mark.parametrize("step", [2, 4, 6])
def test_resume_from_each_checkpoint_matches_uninterrupted(uninterrupted, tmp_path, step, caplog):
    train_yaml, eval_yaml, ref_dir = uninterrupted
    result = resume_copy(ref_dir, tmp_path / "out", step, train_yaml, eval_yaml)
    assert not result.reused_training
    assert_same_run(result.run_dir, ref_dir)
    log = (result.run_dir / "log.txt").read_text()
    assert f"resumed from {result.run_dir / f'checkpoint-{step}'} (step {step} of 6)" in log


def test_half_written_checkpoint_is_ignored(uninterrupted, tmp_path):
    """A checkpoint directory without its marker (a write cut short) and a leftover temporary
    directory are ignored: the run resumes from the newest complete checkpoint."""
    train_yaml, eval_yaml, ref_dir = uninterrupted
    output = tmp_path / "out"
    run_dir = interrupted_copy(ref_dir, run_dir_of(output), 2)
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
    result = resume_copy(ref_dir, tmp_path / "out", 6, train_yaml, eval_yaml)
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


def test_train_log_rows_reach_the_disk_as_they_are_written(tmp_path, encoder_file):
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = encoder_file("peek_encoder", PEEKING_ENCODER)
    log_path = run_dir_of(tmp_path / "out", "peek_encoder") / "train_log.csv"
    notes = tmp_path / "notes.txt"
    run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {"save_steps": 100}, encoder=encoder,
                  model_args={"log": str(log_path), "notes": str(notes)})
    seen = [int(line) for line in notes.read_text().split()]
    assert 5 in seen  # step 6 saw step 5's row on disk, long before the run's only checkpoint (step 6)


def test_a_run_that_starts_over_empties_the_train_log(uninterrupted, tmp_path):
    """A run killed before its first checkpoint left rows behind; starting over, each step is logged once."""
    train_yaml, eval_yaml, ref_dir = uninterrupted
    run_dir = interrupted_copy(ref_dir, run_dir_of(tmp_path / "out"), 0)  # every checkpoint gone, 6 rows kept
    assert len(losses(run_dir)) == 6
    run_inprocess(train_yaml, eval_yaml, tmp_path / "out")
    assert losses(run_dir) == losses(ref_dir)


@pytest.mark.slow
def test_train_log_is_live_and_a_run_that_starts_over_empties_it(tmp_path, encoder_file):
    """Every row reaches the disk when it is written (a run can be followed, a kill keeps the rows); a run
    killed before its first checkpoint starts over, and its log then holds each step once."""
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = encoder_file("slow_encoder", SLOW_ENCODER)
    overrides = {**FAST, "max_steps": 8, "save_steps": 100}  # no checkpoint before the end
    command = cli_command(encoder, train_yaml, eval_yaml, tmp_path / "out", overrides, {"delay": 0.1})
    log_path = run_dir_of(tmp_path / "out", "slow_encoder") / "train_log.csv"
    checkpoints = kill_when(command, lambda: log_path.is_file() and len(log_path.read_text().splitlines()) >= 4,
                            "rows reached train_log.csv while the run trained (header + 3 steps)", timeout=90,
                            inspect=lambda process: list(log_path.parent.glob("checkpoint-*")))
    assert not checkpoints
    assert len(log_path.read_text().splitlines()) >= 4  # the kill kept them
    run_cli(command)
    assert [row[0] for row in losses(log_path.parent)] == [str(step) for step in range(1, 9)]
