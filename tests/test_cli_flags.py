"""Training fields as typed command-line flags, documented from the config (lalmbench.config_flags)."""

import dataclasses

import pytest

from lalmbench.cli import build_parser
from lalmbench.config import TrainConfig
from lalmbench.config_flags import collect_overrides, field_docs, parse_mapping_arg
from lalmbench.errors import ConfigError


def _overrides(argv):
    args = build_parser().parse_args(argv)
    return {**parse_mapping_arg(args.args, "--args"), **collect_overrides(args)}


def test_every_training_field_is_a_documented_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # help text is wrapped: compare without line breaks
    docs = field_docs(TrainConfig)
    fields = [f.name for f in dataclasses.fields(TrainConfig) if not f.name.startswith("_") and f.name != "train_data"]
    assert set(fields) <= set(docs), f"fields without a doc line: {sorted(set(fields) - set(docs))}"
    for name in fields:
        assert f"--{name.replace('_', '-')}" in text
        assert " ".join(docs[name].split()[:4]) in text  # the field's own doc is its help


def test_flags_parse_by_type_and_override_args():
    overrides = _overrides(["run", "enc.py", "--args", '{"max_steps": 50, "bf16": true, "learning_rate": 0.1}',
                            "--max-steps", "7", "--no-bf16", "--eval-crop-audio-length", "none",
                            "--learning-rate", "2e-4", "--protocol", "corrected"])
    assert overrides == {"max_steps": 7, "bf16": False, "learning_rate": 2e-4, "eval_crop_audio_length": None,
                         "protocol": "corrected"}


def test_flags_not_given_leave_the_yaml_alone():
    assert _overrides(["run", "enc.py", "task1"]) == {}


def test_a_bad_flag_value_names_the_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "enc.py", "--max-steps", "ten"])
    assert "--max-steps: expected int, got 'ten'" in capsys.readouterr().err


def test_args_takes_yaml_and_yaml_files(tmp_path):
    assert parse_mapping_arg("{max_steps: 3, bf16: true}", "--args") == {"max_steps": 3, "bf16": True}
    path = tmp_path / "over.yaml"
    path.write_text("max_steps: 9\nseed: 1\n")
    assert parse_mapping_arg(str(path), "--args") == {"max_steps": 9, "seed": 1}
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_mapping_arg("[1, 2]", "--args")
    with pytest.raises(ConfigError, match="neither JSON"):
        parse_mapping_arg("{max_steps: [", "--args")


def test_demo_keeps_its_own_seed_option():
    args = build_parser().parse_args(["demo", "--seed", "3", "--max-steps", "5"])
    assert args.seed == 3 and collect_overrides(args) == {"max_steps": 5}
