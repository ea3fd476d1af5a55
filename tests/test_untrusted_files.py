"""Files someone else wrote cannot run code here: every file a resume or a reuse reads from a run directory,
and every feature cache entry, is read without unpickling arbitrary objects; a file that holds anything
but tensors and plain values stops the run with an error naming it. Shard paths a YAML gives for a hub
dataset stay inside the data home.

Each test plants a pickle whose unpickling runs a shell command that creates a marker file, and checks
that the marker never appears.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lalmbench.config import DatasetSpec
from lalmbench.errors import ConfigError, LalmbenchError
from run_helpers import (finished_tiny_run, good_records, interrupted_copy, run_dir_of, run_inprocess, tiny_data,
                         write_shard)

STEPS = {"max_steps": 4, "save_steps": 2}
CHECKPOINT_FILES = ["checkpoint.json", "data_state.json", "optimizer.pt", "rng.pt", "scheduler.pt", "trainable.pt"]


class RunsACommand:
    """Unpickling this runs `touch <marker>` in a shell: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def plant(path: Path, marker: Path) -> None:
    """Replace `path` with a torch file whose unpickling runs a command, beside a real tensor (as a
    tampered checkpoint would look)."""
    path.unlink()
    torch.save({"weight": torch.zeros(2), "payload": RunsACommand(marker)}, path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step run keeping checkpoints 2 and 4."""
    run = finished_tiny_run(tmp_path_factory.mktemp("untrusted"), "reference", {**STEPS, "save_total_limit": 10})
    return run.train_yaml, run.eval_yaml, run.result.run_dir


def test_the_planted_pickle_runs_its_command_when_fully_unpickled(tmp_path):
    """The payload is real: full unpickling (what the loads did before) creates the marker."""
    marker = tmp_path / "ran"
    path = tmp_path / "x.pt"
    torch.save({"payload": RunsACommand(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_checkpoint_holds_exactly_the_files_these_tests_plant_into(finished):
    _, _, run_dir = finished
    assert sorted(p.name for p in (run_dir / "checkpoint-2").iterdir()) == CHECKPOINT_FILES


def test_every_file_a_run_directory_holds_loads_without_unsafe_globals(finished):
    """What lalmbench writes needs nothing beyond tensors and plain values: torch finds no global in it that
    weights_only loading would refuse (the random states included)."""
    _, _, run_dir = finished
    files = sorted(run_dir.glob("checkpoint-*/*.pt")) + [run_dir / "final_weights.pt"]
    assert len(files) == 9
    for path in files:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
        torch.load(path, weights_only=True)


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_pickle_planted_in_a_checkpoint_file_does_not_run(finished, tmp_path, name):
    """Resuming a run directory whose checkpoint file `name` was replaced by a hostile pickle: nothing runs,
    the run stops with an error naming the file and what to do."""
    train_yaml, eval_yaml, ref_dir = finished
    output = tmp_path / "out"
    run_dir = interrupted_copy(ref_dir, run_dir_of(output), keep_step=2)
    marker = tmp_path / "ran"
    plant(run_dir / "checkpoint-2" / name, marker)
    with pytest.raises(LalmbenchError) as error:
        run_inprocess(train_yaml, eval_yaml, output, STEPS)
    assert not marker.exists()
    message = str(error.value)
    assert str(run_dir / "checkpoint-2" / name) in message
    assert "--force" in message
    assert "weights_only=False" not in message  # torch's advice to load it unsafely is not passed on


def test_a_pickle_planted_in_the_final_weights_does_not_run(finished, tmp_path):
    """A finished run directory is reused by the next command of its identity: its final weights are read
    as tensors only."""
    train_yaml, eval_yaml, ref_dir = finished
    output = tmp_path / "out"
    run_dir = run_dir_of(output)
    shutil.copytree(ref_dir, run_dir)
    marker = tmp_path / "ran"
    plant(run_dir / "final_weights.pt", marker)
    with pytest.raises(LalmbenchError) as error:
        run_inprocess(train_yaml, eval_yaml, output, STEPS)
    assert not marker.exists()
    assert str(run_dir / "final_weights.pt") in str(error.value) and "--force" in str(error.value)


def test_a_data_position_naming_a_file_outside_the_run_s_shards_is_refused(finished, tmp_path):
    """A checkpoint's data position names the shards its buffered examples are read again from; one naming
    any other file (a tar elsewhere on the machine) stops the resume instead of reading that file."""
    train_yaml, eval_yaml, ref_dir = finished
    output = tmp_path / "out"
    run_dir = interrupted_copy(ref_dir, run_dir_of(output), keep_step=2)
    elsewhere = write_shard(tmp_path / "elsewhere" / "private.tar", good_records("tone", 12, seed=1))
    state_file = run_dir / "checkpoint-2" / "data_state.json"
    state = json.loads(state_file.read_text())
    refs = []

    def find_refs(value):  # every example reference in the stream's state, whatever the stream
        if isinstance(value, dict):
            if {"dataset", "shard", "key"} <= set(value):
                refs.append(value)
            for item in value.values():
                find_refs(item)
        elif isinstance(value, list):
            for item in value:
                find_refs(item)

    find_refs(state)
    assert refs
    for ref in refs:
        ref["shard"] = str(elsewhere)
    state_file.write_text(json.dumps(state))
    with pytest.raises(LalmbenchError) as error:
        run_inprocess(train_yaml, eval_yaml, output, STEPS)
    message = str(error.value)
    assert repr(str(elsewhere)) in message and "--force" in message


def test_a_checkpoint_of_the_older_format_is_refused_unread_and_force_starts_anew(finished, tmp_path):
    """A checkpoint written before the random state was stored as tensors (its rng.pt needs full
    unpickling: numpy arrays, tuples) is not read at all; the error says why and what to do, and --force
    trains anew, keeping the old directory."""
    train_yaml, eval_yaml, ref_dir = finished
    output = tmp_path / "out"
    run_dir = interrupted_copy(ref_dir, run_dir_of(output), keep_step=2)
    checkpoint = run_dir / "checkpoint-2"
    marker_file = json.loads((checkpoint / "checkpoint.json").read_text())
    del marker_file["format"]  # as the older lalmbench wrote it
    (checkpoint / "checkpoint.json").write_text(json.dumps(marker_file))
    ran = tmp_path / "ran"
    (checkpoint / "rng.pt").unlink()
    torch.save({"torch": torch.random.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                "payload": RunsACommand(ran)}, checkpoint / "rng.pt")
    with pytest.raises(LalmbenchError) as error:
        run_inprocess(train_yaml, eval_yaml, output, STEPS)
    assert not ran.exists()
    message = str(error.value)
    assert str(checkpoint) in message and "older" in message and "--force" in message

    result = run_inprocess(train_yaml, eval_yaml, output, STEPS, force=True)
    assert not result.reused_training and (result.run_dir / "training_complete.json").is_file()
    assert not ran.exists()
    kept = list(output.joinpath("train").glob("LogMelEncoder.replaced-*"))
    assert len(kept) == 1 and (kept[0] / "checkpoint-2" / "rng.pt").is_file()


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    """Python's, numpy's and torch's generators, each mid-way through a Gaussian pair (the cached second
    value is part of the state), restored from a file read with weights_only=True."""
    from lalmbench.train import _rng_state, _set_rng_state

    random.seed(3)
    random.gauss(0.0, 1.0)
    np.random.seed(4)
    np.random.standard_normal()
    torch.manual_seed(5)
    torch.save(_rng_state(), tmp_path / "rng.pt")

    def draws():
        return (random.random(), random.gauss(0.0, 1.0), np.random.standard_normal(), np.random.rand(),
                torch.rand(3).tolist())

    expected = draws()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    assert draws() != expected
    _set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


def test_a_pickle_planted_in_feature_cache_entries_does_not_run(tmp_path):
    """Every entry of a shared disk cache replaced by a hostile pickle: the next run reads none of them as a
    pickle, recomputes each one and replaces it."""
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    settings = {"feature_cache": "disk", "cache_dir": str(tmp_path / "cache"), "protocol": "corrected"}
    first = run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {**settings, "max_steps": 2})
    entries = sorted((tmp_path / "cache").rglob("*.features"))
    before = json.loads((first.run_dir / "run_summary.json").read_text())["feature_cache"]
    assert len(entries) == before["misses"] >= 8  # the training clips of 2 steps of 4 (some twice) and the 4 test clips
    marker = tmp_path / "ran"
    for entry in entries:
        plant(entry, marker)
    # the same run again (--force): the same clips in the same order, each entry read once
    second = run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {**settings, "max_steps": 2}, force=True)
    assert not marker.exists()
    stats = json.loads((second.run_dir / "run_summary.json").read_text())["feature_cache"]
    # each planted entry is found invalid and recomputed; the hits are the clips read twice, found the
    # second time in the entry this run wrote
    assert stats["invalid_entries_recomputed"] == len(entries) and stats["hits"] == before["hits"]
    assert all(entry.read_bytes().startswith(b"lalmbench feature cache entry") for entry in entries)


# -- shard paths stay in the data home -------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, offending", [
    ("../outside-0000.tar", "../outside-0000.tar"),
    ("/etc/passwd", "/etc/passwd"),
    ("ESC-50/../../outside.tar", "ESC-50/../../outside.tar"),
    ("ESC-50/{train,../../escape}/x.tar", "ESC-50/../../escape/x.tar"),
    # brace expansion reads a backslash as an escape: a doubled one reaches the path as one
    ("ESC-50\\\\..\\\\..\\\\outside.tar", "ESC-50\\..\\..\\outside.tar"),
    ("C:/Windows/x.tar", "C:/Windows/x.tar"),
    ("", ""),
])
def test_hub_shard_paths_outside_the_data_home_are_refused(tmp_path, pattern, offending):
    from lalmbench.data.download import remote_files
    from lalmbench.data.shards import resolve_shards

    home = tmp_path / "home"
    spec = DatasetSpec(data=[pattern], repo_id="someone/data", name="hostile")
    for call in (lambda: resolve_shards(spec, home, must_exist=False), lambda: remote_files([spec], home)):
        with pytest.raises(ConfigError) as error:
            call()
        message = str(error.value)
        assert f"{offending!r}" in message and str(home) in message and "hostile" in message


def test_download_of_a_yaml_naming_a_path_outside_the_data_home_fetches_nothing(tmp_path, monkeypatch):
    """`lalmbench download hostile.yaml` refuses before asking the hub or creating anything."""
    import yaml

    from lalmbench.data.download import download_command

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a request would fail loudly
    config = tmp_path / "hostile.yaml"
    config.write_text(yaml.safe_dump({"train_data": {"hostile": {
        "data": ["ok-0000.tar", "../../victim/evil-0000.tar"], "repo_id": "someone/data", "prompt": "p", "key": "k"}}}))
    home = tmp_path / "deep" / "home"
    with pytest.raises(ConfigError) as error:
        download_command([str(config)], home=str(home))
    assert "'../../victim/evil-0000.tar'" in str(error.value)
    assert not (tmp_path / "victim").exists() and not home.exists()


def test_hub_shard_paths_inside_the_data_home_resolve_below_it(tmp_path):
    """Nested folders, braces and names with dots stay accepted."""
    from lalmbench.data.shards import resolve_shards

    spec = DatasetSpec(data=["ESC-50/train/esc50_fold_{1..2}_0000000.tar.gz", "a..b/./c.tar"], repo_id="x/y")
    paths = resolve_shards(spec, tmp_path, must_exist=False)
    assert paths == [tmp_path / "ESC-50/train/esc50_fold_1_0000000.tar.gz",
                     tmp_path / "ESC-50/train/esc50_fold_2_0000000.tar.gz", tmp_path / "a..b/c.tar"]
