"""Test sets checked before the first training step: every shard opened, the targets found under the
configured key by the protocol's rules, at least one usable example per test set. A bad test set costs
seconds, not a training run (it used to be found after training: `eval_tones: no usable test example`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from run_helpers import good_records, run_dir_of, run_inprocess, write_configs, write_shard

from lalmbench.errors import DataError


def _data(root: Path, test_records: list[dict], cut: bool = False) -> tuple[Path, Path, Path]:
    train = write_shard(root / "tones.tar", good_records("r", 8, seed=1))
    test = write_shard(root / "test.tar.gz", test_records)
    if cut:  # an interrupted copy: the first record is not whole
        test.write_bytes(test.read_bytes()[:600])
    train_yaml, eval_yaml = write_configs(root, {"tones": [train]}, [test])
    return train_yaml, eval_yaml, test


def _unlabelled(count: int) -> list[dict]:
    records = good_records("test", count, seed=2)
    for record in records:
        record["json"] = json.dumps({"colour": "red", "id": 3}).encode()
    return records


def _task(name: str, shards: list[Path]):
    from lalmbench.config import DatasetSpec, EvalTaskConfig

    return EvalTaskConfig(name=name, data=DatasetSpec(data=[str(p) for p in shards], key="label", name=name),
                          metric="Accuracy")


@pytest.mark.parametrize("fault", ["empty shard", "labels missing", "shard cut short"])
def test_a_bad_test_set_stops_the_run_before_training(tmp_path, fault):
    records = {"empty shard": [], "labels missing": _unlabelled(4),
               "shard cut short": good_records("test", 60, seed=2)}[fault]
    train_yaml, eval_yaml, test = _data(tmp_path / "data", records, cut=fault == "shard cut short")
    with pytest.raises(DataError) as caught:
        run_inprocess(train_yaml, eval_yaml, tmp_path / "out")
    message = str(caught.value)
    # Before the run directory was made: no training step ran, nothing is left.
    assert not run_dir_of(tmp_path / "out").exists()
    assert message.startswith("1 test set(s) cannot be evaluated (checked before training, no training time spent):")
    assert f"in the eval config {eval_yaml}" in message
    if fault == "shard cut short":
        assert f"test set eval_tones: shard {test} is damaged before its first record: " in message
    elif fault == "empty shard":
        assert f"test set eval_tones: no usable example in its 1 shard(s) (target key 'label'): {test}: empty (no record)" in message
    else:
        assert (f"test set eval_tones: no usable example in its 1 shard(s) (target key 'label'): {test}: 4 example(s), "
                "none usable (missing key: 4 (e.g. test.tar.gz:test_0000 has no field 'label' (nor ['captions', "
                "'caption', 'text']); its JSON keys are ['colour', 'id']))") in message


def test_the_protocol_decides_what_a_usable_test_example_is(tmp_path):
    """An empty target string is an example under official (as published) and none under corrected."""
    from lalmbench.data.preflight import check_test_sets

    records = good_records("test", 2, seed=2)
    for record in records:
        record["json"] = json.dumps({"label": ""}).encode()
    shard = write_shard(tmp_path / "test.tar", records)
    check_test_sets([_task("eval_empty", [shard])], {"eval_empty": [shard]}, "official")
    with pytest.raises(DataError) as caught:
        check_test_sets([_task("eval_empty", [shard])], {"eval_empty": [shard]}, "corrected")
    assert f"{shard}: 2 example(s), none usable (missing key: 2 (e.g. test.tar:test_0000 has no field 'label'" in str(
        caught.value)


def test_every_bad_test_set_is_named_at_once(tmp_path):
    from lalmbench.data.preflight import check_test_sets

    good = write_shard(tmp_path / "good.tar", good_records("g", 3, seed=1))
    empty = write_shard(tmp_path / "empty.tar", [])
    unlabelled = write_shard(tmp_path / "unlabelled.tar", _unlabelled(2))
    readme = write_shard(tmp_path / "readme.tar", [{"__key__": "README", "txt": b"about"}])
    shards = {"ok": [good, empty], "a": [empty, readme], "b": [unlabelled, good]}
    with pytest.raises(DataError) as caught:
        check_test_sets([_task(name, paths) for name, paths in shards.items()], shards, "official")
    message = str(caught.value)
    assert message.startswith("2 test set(s) cannot be evaluated")
    # "ok" has usable examples and an empty shard (nothing to evaluate there, nothing lost): it passes.
    assert "test set ok" not in message
    assert (f"test set a: no usable example in its 2 shard(s) (target key 'label'): {empty}: empty (no record); "
            f"{readme}: no example (only members of no example: README.txt)") in message
    # "b" has usable examples, but one of its shards holds none: all its examples would be unusable.
    assert (f"test set b: shard {unlabelled} holds 2 example(s) and none is usable (missing key: 2 (e.g. "
            "unlabelled.tar:test_0000 has no field 'label'") in message
