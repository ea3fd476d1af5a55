"""The run directory is locked while a run works in it: a second run of the same identity stops at once
and names the holder; a run that stops before training leaves no run directory behind (and never
removes an earlier run's)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from lalmbench.errors import DecoderLoadError, RunInUseError
from lalmbench.io_utils import DirectoryLock
from run_helpers import cli_env, finished_tiny_run, run_dir_of, run_inprocess, tiny_data

HOLDER = '''
import sys, time
from lalmbench.io_utils import DirectoryLock

lock = DirectoryLock(sys.argv[1])
assert lock.acquire({"identity": sys.argv[2]}) is None
print("held", flush=True)
time.sleep(120)
'''


@pytest.fixture
def hold(tmp_path):
    """hold(directory, identity) -> a process (not this one) holding the directory's lock."""
    processes = []

    def start(directory, identity: str) -> subprocess.Popen:
        script = tmp_path / "holder.py"
        script.write_text(HOLDER)
        process = subprocess.Popen([sys.executable, str(script), str(directory), identity], env=cli_env(),
                                   stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait(timeout=30)


def test_the_lock_names_its_holder_and_goes_with_it(tmp_path, hold):
    holder = hold(tmp_path / "run", "abc123")
    found = DirectoryLock(tmp_path / "run").acquire()
    assert found["pid"] == holder.pid and found["host"] == socket.gethostname() and found["identity"] == "abc123"
    holder.kill()
    holder.wait(timeout=30)
    lock = DirectoryLock(tmp_path / "run")
    assert lock.acquire({"identity": "next"}) is None  # a killed holder leaves no stale lock
    assert json.loads(lock.holder_path.read_text())["pid"] == os.getpid() != holder.pid
    lock.release()
    assert not lock.holder_path.exists()  # released: the next reader never takes us for the holder


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root, train_yaml, eval_yaml, result = finished_tiny_run(tmp_path_factory.mktemp("lock"))
    return root, train_yaml, eval_yaml, result.run_dir


def test_a_second_run_of_the_same_identity_stops_at_once_naming_the_holder(finished, hold):
    root, train_yaml, eval_yaml, run_dir = finished
    identity = json.loads((run_dir / "run_identity.json").read_text())["hash"]
    holder = hold(run_dir, identity)
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(RunInUseError) as info:
        run_inprocess(train_yaml, eval_yaml, root / "out")
    message = str(info.value)
    assert f"process {holder.pid} on {socket.gethostname()}" in message and str(run_dir) in message
    after = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file()}
    assert after == before  # nothing of the run was touched
    assert not list(run_dir.parent.glob(f"{run_dir.name}-*"))  # and it did not go elsewhere either


def test_a_run_of_another_identity_at_work_is_left_alone(tmp_path, hold):
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    base = run_dir_of(tmp_path / "out")
    hold(base, "another-identity")  # started, nothing written yet
    result = run_inprocess(train_yaml, eval_yaml, tmp_path / "out")
    identity = json.loads((result.run_dir / "run_identity.json").read_text())["hash"]
    assert result.run_dir == base.with_name(f"{base.name}-{identity[:8]}")
    assert not base.exists()


def test_a_run_that_stops_before_training_leaves_no_run_directory(tmp_path):
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    with pytest.raises(DecoderLoadError):
        run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {"decoder_model_name": str(tmp_path / "no-decoder")})
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failure_after_claiming_removes_only_a_directory_it_made(finished, tmp_path, monkeypatch):
    import lalmbench.phases.preparation

    def broken(*args, **kwargs):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(lalmbench.phases.preparation, "apply_speed_switches", broken)  # runs after the claim
    root, train_yaml, eval_yaml, run_dir = finished
    with pytest.raises(RuntimeError, match="broken on purpose"):
        run_inprocess(train_yaml, eval_yaml, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out" / "train").iterdir()] == [".LogMelEncoder.lock"]  # the lock, empty
    with pytest.raises(RuntimeError, match="broken on purpose"):  # the finished run's directory stays
        run_inprocess(train_yaml, eval_yaml, root / "out")
    assert (run_dir / "COMPLETED").is_file() and (run_dir / "final_weights.pt").is_file()


# -- locking on every platform, and a corrupt identity file --------------------------------------------------
def test_the_lock_holds_without_fcntl(tmp_path, monkeypatch):
    # Windows has no fcntl: the lock must still refuse a second holder (it used to take every one).
    from lalmbench import io_utils

    monkeypatch.setattr(io_utils, "fcntl", None, raising=False)
    first = DirectoryLock(tmp_path / "run")
    assert first.acquire({"identity": "one"}) is None
    second = DirectoryLock(tmp_path / "run")
    holder = second.acquire({"identity": "two"})
    assert holder is not None and holder["identity"] == "one" and holder["pid"] == os.getpid()
    assert not second.held
    first.release()
    assert second.acquire({"identity": "two"}) is None
    second.release()


@pytest.mark.parametrize("content", ["{not json", '["a list"]', ""])
def test_a_corrupt_run_identity_says_so_and_releases_the_lock(tmp_path, content):
    from lalmbench.errors import OutputDirError
    from lalmbench.phases.run_directory import RunClaim

    base = tmp_path / "out" / "train" / "LogMelEncoder"
    base.mkdir(parents=True)
    (base / "run_identity.json").write_text(content)
    (base / "final_weights.pt").write_bytes(b"weights of an earlier run")
    claim = RunClaim()
    with pytest.raises(OutputDirError) as info:
        claim.take(base, "f" * 64, force=False)
    message = str(info.value)
    assert str(base / "run_identity.json") in message and "corrupt" in message and "--force" in message
    assert not claim.lock
    assert (base / "final_weights.pt").read_bytes() == b"weights of an earlier run"  # nothing touched
    lock = DirectoryLock(base)
    assert lock.acquire() is None  # released on the error path
    lock.release()


def test_force_sets_a_run_with_a_corrupt_identity_aside(tmp_path):
    from lalmbench.phases.run_directory import RunClaim

    base = tmp_path / "out" / "train" / "LogMelEncoder"
    base.mkdir(parents=True)
    (base / "run_identity.json").write_text("{not json")
    claim = RunClaim()
    try:
        assert claim.take(base, "f" * 64, force=True) == base
        assert claim.created and list(base.iterdir()) == []
        (kept,) = base.parent.glob("LogMelEncoder.replaced-*")
        assert (kept / "run_identity.json").read_text() == "{not json"
    finally:
        claim.release()
