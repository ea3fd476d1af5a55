"""TensorBoard event files beside train_log.csv (train.open_tensorboard): one point per step and scalar, the
same numbers as the CSV, and a resumed run shows each step once. Skipped without the `tensorboard` package."""

import csv
import json
import shutil

import pytest

from lalmbench.cli import main
from lalmbench.train import open_tensorboard

SCALARS = ("loss", "learning_rate", "grad_norm")
# train_log.csv writes grad_norm to 6 significant digits (`:.6g`): rounding there is up to 5e-6 of the value,
# so 1e-6 held only while the figures happened to round close.
CSV_REL = 1e-5


def _events(run_dir):
    """{scalar: [(step, value), ...]} as TensorBoard reads the run directory. For event files of version 2
    (torch writes them) the reader drops earlier events only at a restart marker, which the writer writes
    when given purge_step: without it a resumed run's repeated steps would show twice (checked by hand)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run_dir))
    board.Reload()
    return {name: [(e.step, e.value) for e in board.Scalars(f"train/{name}")] for name in SCALARS}


def test_event_files_hold_every_logged_row_once_also_after_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from run_helpers import FAST, tiny_data

    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    command = ["run", "lalmbench.encoders.LogMelEncoder", str(train_yaml), str(eval_yaml), "--output-dir",
               str(tmp_path / "out"), "--no-report", "--args", json.dumps(FAST)]  # 6 steps, checkpoints every 2
    assert main(command) == 0
    run_dir = tmp_path / "out" / "train" / "LogMelEncoder"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    rows = list(csv.DictReader(open(run_dir / "train_log.csv")))
    events = _events(run_dir)
    for name in SCALARS:
        assert [step for step, _ in events[name]] == [1, 2, 3, 4, 5, 6]
        assert [value for _, value in events[name]] == pytest.approx([float(r[name]) for r in rows], rel=CSV_REL)

    # As if killed after the checkpoint of step 4: the events of steps 5 and 6 are on disk, their checkpoint
    # and the end of training are not. The same command resumes from step 4 and logs steps 5 and 6 again.
    for name in ("checkpoint-6", "training_complete.json", "final_weights.pt"):
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    assert main(command) == 0
    assert "resuming training identity" in (run_dir / "log.txt").read_text()
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    resumed_rows = list(csv.DictReader(open(run_dir / "train_log.csv")))
    events = _events(run_dir)
    for name in SCALARS:
        assert [step for step, _ in events[name]] == [1, 2, 3, 4, 5, 6]  # 8 points without purge_step
        assert [value for _, value in events[name]] == pytest.approx([float(r[name]) for r in resumed_rows], rel=CSV_REL)


def test_no_writer_without_the_package(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert open_tensorboard(tmp_path, 0) is None
    assert list(tmp_path.iterdir()) == []
