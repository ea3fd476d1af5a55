"""--tasks: which datasets of a suite a name picks (lalmbench.run_configs), checked on the built-in configs."""

import pytest

from lalmbench.errors import ConfigError
from lalmbench.run_configs import check_limit, parse_task_names, resolve_configs


def test_names_pick_train_and_test_sets_by_catalog_name_or_key():
    config, tasks, eval_name = resolve_configs("task1", None, {"max_steps": 5}, ["VoxCeleb1", "eval_gtzan", "esc-50"])
    assert eval_name == "task1"
    # In the config's order, whatever the typed order and spelling.
    assert list(config.train_data) == ["ESC-50", "VoxCeleb1", "GTZAN"]
    assert [t.name for t in tasks] == ["eval_esc-50", "eval_gtzan", "eval_voxceleb1"]  # eval/task1.yaml order
    assert config.config_name == "task1@esc-50,voxceleb1,gtzan" and config.max_steps == 5
    assert config.train_data["GTZAN"].prob == 1.0 and config.train_data["ESC-50"].prob == 0.5  # weights kept


def test_catalog_names_differ_from_keys():
    # LibriSpeechGender is librispeech-gender in the catalog: lower-casing the key would miss it.
    config, tasks, _ = resolve_configs("extended", None, None, ["librispeech-gender"])
    assert list(config.train_data) == ["LibriSpeechGender"] and [t.name for t in tasks] == ["eval_librispeech-gender"]


def test_a_subset_changes_the_training_identity_and_all_names_change_nothing():
    full, full_tasks, _ = resolve_configs("task2", None)
    subset, _, _ = resolve_configs("task2", None, None, ["clotho"])
    assert subset.identity_dict()["train_data"] != full.identity_dict()["train_data"]
    everything = ["aishell-1", "clotho", "librispeech", "mecat", "songdescriber"]
    same, same_tasks, _ = resolve_configs("task2", None, None, everything)
    assert same.model_dump() == full.model_dump() and same.config_name == "task2"
    assert [t.name for t in same_tasks] == [t.name for t in full_tasks]


def test_names_that_pick_nothing_are_refused():
    with pytest.raises(ConfigError, match=r"'esc50' is not a dataset of train config 'task1'.*Did you mean 'esc-50'"):
        resolve_configs("task1", None, None, ["esc50"])
    # Train on ESC-50 alone, evaluate on task1: gtzan is a test set only, so nothing would be trained.
    with pytest.raises(ConfigError, match="picks no training dataset of 'esc-50'"):
        resolve_configs("esc-50", "task1", None, ["gtzan"])


def test_task_list_and_limit_parsing():
    assert parse_task_names(" esc-50, gtzan,,esc-50 ") == ["esc-50", "gtzan"]
    assert parse_task_names(None) == []
    check_limit(None)
    check_limit(1)
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ConfigError, match="--limit must be a whole number"):
            check_limit(bad)
