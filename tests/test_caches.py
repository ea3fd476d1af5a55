"""Caches keyed by the run identity: a finished run is reused only when everything its weights depend
on is the same (and says so); changing encoder arguments never reuses anything; --force recomputes and
keeps the old directory; changing only the eval config recomputes only evaluation."""

from __future__ import annotations

import json

import pytest
import yaml

from run_helpers import assert_same_weights, finished_tiny_run, run_dir_of, run_inprocess, trained_weights

ENCODER = "lalmbench.encoders.LogMelEncoder"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    return finished_tiny_run(tmp_path_factory.mktemp("caches"), model_args={"n_mels": 32})


def _log(run_dir):
    return (run_dir / "log.txt").read_text()


def test_same_identity_reuses_training_and_scores_and_says_so(first_run):
    root, train_yaml, eval_yaml, first = first_run
    before = (first.run_dir / "final_weights.pt").stat().st_mtime_ns
    again = run_inprocess(train_yaml, eval_yaml, root / "out", model_args={"n_mels": 32})
    assert again.run_dir == first.run_dir == run_dir_of(root / "out")
    assert again.reused_training
    assert (first.run_dir / "final_weights.pt").stat().st_mtime_ns == before
    log = _log(again.run_dir)
    assert "reusing the finished training of this run identity" in log
    assert "eval_tones: reusing the cached score" in log
    assert again.scores == first.scores


def test_changed_encoder_args_get_a_new_directory_and_reuse_nothing(first_run, capsys):
    root, train_yaml, eval_yaml, first = first_run
    other = run_inprocess(train_yaml, eval_yaml, root / "out", model_args={"n_mels": 24})
    identity = json.loads((other.run_dir / "run_identity.json").read_text())["hash"]
    assert other.run_dir == first.run_dir.with_name(f"LogMelEncoder-{identity[:8]}")
    assert identity != json.loads((first.run_dir / "run_identity.json").read_text())["hash"]
    assert not other.reused_training
    log = _log(other.run_dir)
    assert "reusing" not in log and "resumed from" not in log
    assert f"holds a run with another identity; this run goes to {other.run_dir}" in capsys.readouterr().err
    assert json.loads((other.run_dir / "run_identity.json").read_text())["identity"]["model_args"] == {"n_mels": 24}
    # The first run's directory is untouched and still reusable.
    assert json.loads((first.run_dir / "run_identity.json").read_text())["identity"]["model_args"] == {"n_mels": 32}


def test_changed_eval_config_recomputes_only_evaluation(first_run, tmp_path):
    root, train_yaml, _, first = first_run
    evaluation = yaml.safe_load((root / "data" / "eval.yaml").read_text())
    evaluation["eval_tones"]["data"]["prompt"] = "Which colour is this tone?"
    evaluation["eval_second"] = {**evaluation["eval_tones"], "weight": 2}
    evaluation["eval_second"]["data"] = dict(evaluation["eval_tones"]["data"], prompt="Name the colour.")
    eval_yaml = tmp_path / "eval2.yaml"
    eval_yaml.write_text(yaml.safe_dump(evaluation))
    result = run_inprocess(train_yaml, eval_yaml, root / "out", model_args={"n_mels": 32})
    assert result.run_dir == first.run_dir and result.reused_training
    log = _log(result.run_dir).split("reusing the finished training")[-1]
    assert "eval_tones: reusing the cached score" not in log  # its prompt changed: evaluated again
    assert "eval_tones [Accuracy]" in log and "eval_second [Accuracy]" in log
    assert set(result.scores) == {"eval_tones", "eval_second"}
    scores = (result.run_dir / "scores.tsv").read_text().splitlines()
    header, overall = scores[0].split("\t"), scores[-1].split("\t")
    assert header[:3] == ["Task", "score", "weight"] and overall[0] == "Overall"
    assert overall[header.index("weight")] == "3"  # weights 1 + 2 over the two test sets
    assert "Which colour is this tone?" in (result.run_dir / "eval_config.yaml").read_text()


def test_force_recomputes_and_keeps_the_old_directory(first_run):
    root, train_yaml, eval_yaml, first = first_run
    old_weights = trained_weights(first.run_dir)
    forced = run_inprocess(train_yaml, eval_yaml, root / "out", model_args={"n_mels": 32}, force=True)
    assert forced.run_dir == first.run_dir and not forced.reused_training
    kept = sorted(first.run_dir.parent.glob("LogMelEncoder.replaced-*"))
    assert len(kept) == 1
    assert_same_weights(trained_weights(kept[0]), old_weights)
    assert (kept[0] / "scores.tsv").is_file() and (kept[0] / "training_complete.json").is_file()
    log = _log(forced.run_dir)
    assert "reusing" not in log and "resumed from" not in log
    assert_same_weights(trained_weights(forced.run_dir), old_weights)  # deterministic: recomputed, same result


def test_merged_lora_decoding_rescores_without_retraining(first_run):
    root, train_yaml, eval_yaml, first = first_run
    merged = run_inprocess(train_yaml, eval_yaml, root / "out", {"merge_lora_for_eval": True}, model_args={"n_mels": 32})
    assert merged.run_dir == first.run_dir and merged.reused_training  # not part of the run identity
    log = _log(merged.run_dir).split("reusing the finished training")[-1]
    assert "reusing the cached score" not in log  # but part of the score's key: decoded again
    assert merged.scores == first.scores  # the same answers up to rounding
