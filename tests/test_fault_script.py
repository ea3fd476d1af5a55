"""scripts/fault_injection.py: its parts (what counts as identical, the kill moments, the phase read from
the files, the throttled stand-in hub), one short end-to-end pass (slow), and a resume defect it found:
a run killed during evaluation lost the bad-data account of the test sets it had already scored."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from hub_server import HubServer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_injection.py"


@pytest.fixture(scope="module")
def faults():
    spec = importlib.util.spec_from_file_location("fault_injection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_injection"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# -- identical ----------------------------------------------------------------------------------------------------
def _finished_run(folder: Path, losses: list[str], weight: float = 1.0, bad_data: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "scores.tsv").write_text("Task\tscore\nt\t0.5\n")
    (folder / "predictions_t.csv").write_text("prediction,reference\nred,red\n")
    torch.save({"projector.weight": torch.full((2, 2), weight), "lora.A": torch.zeros(3)}, folder / "final_weights.pt")
    rows = "".join(f"{step},{loss},0.001,1.0,{step * 0.37:.3f}\n" for step, loss in enumerate(losses, 1))
    (folder / "train_log.csv").write_text("step,loss,lr,grad_norm,elapsed\n" + rows)
    if bad_data is None:
        bad_data = {"t": {"examples_seen": 4}, "eval_t": {"examples_seen": 2}}
    summary = {"steps": len(losses), "total_seconds": 12.0, "bad_data": bad_data}
    (folder / "run_summary.json").write_text(json.dumps(summary))
    return folder


def test_identical_runs_differ_in_nothing_but_their_timings(faults, tmp_path):
    reference = _finished_run(tmp_path / "a", ["2.5", "2.25", "2.0"])
    other = _finished_run(tmp_path / "b", ["2.5", "2.25", "2.0"])
    (other / "train_log.csv").write_text((other / "train_log.csv").read_text().replace("0.370", "9.999"))
    assert faults.differences(reference, other) == []


def test_each_kind_of_difference_is_named(faults, tmp_path):
    reference = _finished_run(tmp_path / "ref", ["2.5", "2.25", "2.0"])
    weights = _finished_run(tmp_path / "weights", ["2.5", "2.25", "2.0"], weight=1.0 + 1e-7)
    assert faults.differences(reference, weights) == ["final_weights.pt: 1 tensors differ, first projector.weight"]
    loss = _finished_run(tmp_path / "loss", ["2.5", "2.25", "2.00000001"])
    assert faults.differences(reference, loss) == ["train_log.csv loss from step 3"]
    # A resumed run that appended to the rows of the killed one: a step logged twice.
    repeated = _finished_run(tmp_path / "repeated", ["2.5", "2.25", "2.0"])
    with open(repeated / "train_log.csv", "a") as log:
        log.write("3,2.0,0.001,1.0,1.0\n")
    assert faults.differences(reference, repeated) == ["train_log.csv steps: 4 rows, 3 distinct (reference 3)"]
    lost = _finished_run(tmp_path / "lost", ["2.5", "2.25", "2.0"], bad_data={"t": {"examples_seen": 4}})
    assert faults.differences(reference, lost) == ["run_summary.json bad_data of eval_t (missing)"]
    scores = _finished_run(tmp_path / "scores", ["2.5", "2.25", "2.0"])
    (scores / "scores.tsv").write_text("Task\tscore\nt\t0.25\n")
    (scores / "predictions_t.csv").unlink()
    assert faults.differences(reference, scores) == ["scores.tsv",
                                                     "prediction files [] (reference ['predictions_t.csv'])"]
    assert faults.differences(reference, None) == ["no run directory"]


# -- the kill moments ---------------------------------------------------------------------------------------------
def _reference_timeline(faults):
    # 30 steps of 0.2 s from 10 s, checkpoints every 10 steps taking 0.05 s, download 10 s..13 s, evaluation 4 s.
    steps = {step: 10.0 + 0.2 * step for step in range(1, 31)}
    return faults.Timeline(download_started=1.0, download_done=4.0, steps=steps,
                           checkpoint_started={n: steps[n] + 0.01 for n in (10, 20, 30)},
                           checkpoint_done={n: steps[n] + 0.06 for n in (10, 20, 30)},
                           training_complete=16.5, scores_written=20.5, exited=22.0)


def test_kill_moments_take_the_phases_in_turn_within_their_reference_durations(faults):
    setting = faults.Setting(steps=30, save_steps=10)
    plans = faults.plan_kills(20, 7, _reference_timeline(faults), setting)
    assert [p.phase for p in plans] == ["download", "step", "checkpoint", "evaluation"] * 5
    for plan in plans:
        if plan.phase == "download":
            assert 0.05 * 3.0 <= plan.delay <= 0.9 * 3.0 and plan.wait_for is None
        elif plan.phase == "step":  # after a row that is no checkpoint's, within one step (0.2 s)
            assert plan.wait_for % 10 and 1 <= plan.wait_for < 30
            assert 0.1 * 0.2 - 1e-9 <= plan.delay <= 0.9 * 0.2 + 1e-9
        elif plan.phase == "checkpoint":
            assert plan.wait_for in (10, 20, 30) and 0 <= plan.delay <= 0.5 * 0.05 + 1e-9
        else:
            assert 0.05 * 4.0 <= plan.delay <= 0.9 * 4.0
    assert faults.plan_kills(20, 7, _reference_timeline(faults), setting) == plans  # seeded
    assert faults.plan_kills(20, 8, _reference_timeline(faults), setting) != plans
    only = faults.plan_kills(3, 0, _reference_timeline(faults), faults.Setting(steps=30, save_steps=10,
                                                                               phases=("checkpoint",)))
    assert [p.phase for p in only] == ["checkpoint"] * 3


def test_phase_is_read_from_the_files_the_run_leaves(faults, tmp_path):
    suite = faults.Suite(tmp_path / "hub", tmp_path / "train.yaml", tmp_path / "eval.yaml", ["a/x-000000.tar.gz"])
    home, output = tmp_path / "home", tmp_path / "out"
    files = faults.RunFiles(home, output, suite, faults.Setting(steps=3, save_steps=2))
    assert files.phase() == "start-up"
    (home / ".cache" / "huggingface" / "download").mkdir(parents=True)
    assert files.phase() == "download"
    (home / "a").mkdir()
    (home / "a" / "x-000000.tar.gz").write_bytes(b"shard")
    assert files.phase() == "model set-up"
    run_dir = output / "train" / "Enc"
    run_dir.mkdir(parents=True)
    (run_dir / "run_identity.json").write_text("{}")
    (run_dir / "train_log.csv").write_text("step,loss\n1,2.0\n2,1.")  # step 2's row half written
    assert (files.phase(), files.logged_steps()) == ("step", 1)
    (run_dir / ".checkpoint-2.abc123.tmp").mkdir()
    assert (files.phase(), files.checkpoint_being_written()) == ("checkpoint", 2)
    (run_dir / ".checkpoint-2.abc123.tmp").rename(run_dir / "checkpoint-2")
    (run_dir / "train_log.csv").write_text("step,loss\n1,2.0\n2,1.5\n3,1.25\n")
    assert files.phase() == "final weights"
    (run_dir / "training_complete.json").write_text("{}")
    assert files.phase() == "evaluation"
    (run_dir / "scores.tsv").write_text("")
    assert files.phase() == "writing results"


def test_stand_in_hub_throttles_each_transfer(tmp_path):
    data = bytes(range(256)) * 400  # 102,400 bytes
    with HubServer(tmp_path) as hub:
        hub.add_file("org/set", "a.bin", data)
        hub.bytes_per_second = 400_000
        started = time.monotonic()
        with urllib.request.urlopen(f"{hub.endpoint}/datasets/org/set/resolve/main/a.bin", timeout=10) as response:
            body = response.read()
        seconds = time.monotonic() - started
    assert body == data
    assert 0.25 <= seconds < 2.0  # 102,400 B at 400,000 B/s: 0.256 s at least


# -- a resume defect the script found ---------------------------------------------------------------------------
def test_evaluation_resumed_from_cached_scores_keeps_their_bad_data_account(tmp_path):
    """Killed after a test set was scored, the run reuses that score on resume; run_summary.json must still
    count that test set's examples (it reported only the training data before)."""
    from run_helpers import run_inprocess, tiny_data

    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    first = run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {"max_steps": 2, "save_steps": 2})
    expected = json.loads((first.run_dir / "run_summary.json").read_text())["bad_data"]
    assert expected["eval_tones"]["examples_seen"] == 4
    for name in ("COMPLETED", "run_summary.json", "scores.tsv"):  # as a kill before the results are written
        (first.run_dir / name).unlink()
    resumed = run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {"max_steps": 2, "save_steps": 2})
    assert resumed.run_dir == first.run_dir
    assert json.loads((resumed.run_dir / "run_summary.json").read_text())["bad_data"] == expected


# -- end to end -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_killed_runs_resume_identical(faults, tmp_path):
    """The script's whole machinery on a 12-step run: a reference, one kill mid-checkpoint and one
    mid-evaluation, each resumed and compared (several minutes on a busy 2-core machine)."""
    setting = faults.Setting(steps=12, save_steps=4, train_examples=8, test_examples=4, bytes_per_second=2_000_000,
                             phases=("checkpoint", "evaluation"))
    lines = []
    report, trials = faults.run_experiment(setting, 2, tmp_path / "work", say=lines.append)
    assert [t.aimed_phase for t in trials] == ["checkpoint", "evaluation"]
    assert all(t.killed_at is not None and t.exit_codes[0] == -9 and t.exit_codes[-1] == 0 for t in trials)
    assert [t.differences for t in trials] == [[], []]
    assert report["identical"] == 2 and lines[-1] == "2 of 2 identical"


# -- a download killed mid-transfer ---------------------------------------------------------------------------------
KILLED_DOWNLOAD = """
import sys
from huggingface_hub import hf_hub_download
hf_hub_download("org/set", "shards/a.tar.gz", repo_type="dataset", local_dir=sys.argv[1], endpoint=sys.argv[2])
"""


def test_partial_file_of_a_killed_download_is_removed_by_the_next(tmp_path, monkeypatch):
    """huggingface_hub leaves a SIGKILLed transfer's `.incomplete` file for good; the next download of the
    same shard removes it, unless another process holds the client's lock of that file."""
    import os
    import signal
    import subprocess

    from filelock import FileLock

    from lalmbench.data.download import RemoteFile, download_files, remove_abandoned_transfers

    data = os.urandom(300_000)
    home = tmp_path / "home"
    partials = home / ".cache" / "huggingface" / "download" / "shards"
    with HubServer(tmp_path / "hub") as hub:
        hub.add_file("org/set", "shards/a.tar.gz", data)
        hub.bytes_per_second = 100_000  # 3 s for the whole file
        env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf_home")}
        env.pop("HF_HUB_OFFLINE", None)
        process = subprocess.Popen([sys.executable, "-c", KILLED_DOWNLOAD, str(home), hub.endpoint], env=env,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not list(partials.glob("*.incomplete")):
                assert process.poll() is None and time.monotonic() < deadline, "the transfer never started"
                time.sleep(0.01)
            time.sleep(0.5)  # partway through the 3 s transfer (the client writes in 10 MB chunks: size 0 here)
            assert process.poll() is None
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        left = list(partials.glob("*.incomplete"))
        assert len(left) == 1 and left[0].stat().st_size < len(data)
        assert not (home / "shards" / "a.tar.gz").exists()

        name_hash, etag, _, _ = left[0].name.split(".")
        resumable = partials / f"{name_hash}.{etag}.incomplete"  # huggingface_hub 0.x's name: it resumes it
        resumable.write_bytes(data[:1000])
        with FileLock(partials / "a.tar.gz.lock"):  # a transfer under way elsewhere: nothing touched
            assert remove_abandoned_transfers(home, "shards/a.tar.gz") == 0
        assert left[0].exists()

        hub.bytes_per_second = None
        from huggingface_hub import constants

        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # an earlier run in this process may have set it
        download_files([RemoteFile("org/set", "shards/a.tar.gz")], home, progress=False)
    assert (home / "shards" / "a.tar.gz").read_bytes() == data
    assert list(partials.glob("*.incomplete")) == [resumable]


def test_claiming_a_run_directory_removes_what_a_killed_run_was_writing(tmp_path):
    """A run killed mid-checkpoint leaves `.checkpoint-N.<random>.tmp` (and mid-write, `.<file>.<random>.tmp`);
    the next run of the identity, holding the directory's lock, removes them and nothing else."""
    from lalmbench.phases.run_directory import RunClaim

    run_dir = tmp_path / "out" / "train" / "Enc"
    (run_dir / "checkpoint-10").mkdir(parents=True)
    (run_dir / "checkpoint-10" / "checkpoint.json").write_text("{}")
    (run_dir / "run_identity.json").write_text(json.dumps({"hash": "abc"}))
    (run_dir / ".checkpoint-20.k3j4h5.tmp").mkdir()
    (run_dir / ".checkpoint-20.k3j4h5.tmp" / "trainable.pt").write_bytes(b"half")
    (run_dir / "scores").mkdir()
    (run_dir / "scores" / ".eval_t.json.x8y9.tmp").write_text("{")
    (run_dir / "notes.tmp").write_text("a user's file")  # not one of ours: no leading dot
    claim = RunClaim()
    try:
        assert claim.take(run_dir, "abc", force=False) == run_dir
    finally:
        claim.release()
    left = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name != ".lock")
    assert left == ["checkpoint-10", "checkpoint-10/checkpoint.json", "notes.tmp", "run_identity.json", "scores"]
