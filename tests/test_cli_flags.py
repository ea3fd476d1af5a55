"""Training fields as typed command-line flags, documented from the config (lalmbench.config_flags)."""

import pytest

from lalmbench.cli import build_parser
from lalmbench.config import TrainConfig
from lalmbench.config_flags import collect_overrides, parse_mapping_arg
from lalmbench.errors import ConfigError


def _overrides(argv):
    args = build_parser().parse_args(argv)
    return {**parse_mapping_arg(args.args, "--args"), **collect_overrides(args)}


def test_every_training_field_is_a_documented_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # help text is wrapped: compare without line breaks
    docs = {name: field.description for name, field in TrainConfig.model_fields.items() if field.description}
    fields = [name for name in TrainConfig.model_fields if name != "train_data"]
    assert set(fields) <= set(docs), f"fields without a doc line: {sorted(set(fields) - set(docs))}"
    assert "Optimizer steps to train." in text  # the attribute docstring under max_steps in config.py
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
    assert parse_mapping_arg('{"max_steps": 3}', "--args") == {"max_steps": 3}  # JSON is YAML's subset
    assert parse_mapping_arg(None, "--args") == {}
    with pytest.raises(ConfigError, match="the file nope.yaml does not exist"):
        parse_mapping_arg("nope.yaml", "--model-args")


def test_demo_keeps_its_own_seed_option():
    args = build_parser().parse_args(["demo", "--seed", "3", "--max-steps", "5"])
    assert args.seed == 3 and collect_overrides(args) == {"max_steps": 5}


def test_print_config_prints_both_configs_and_touches_nothing(tmp_path, monkeypatch, capsys):
    import socket

    import yaml

    from lalmbench.cli import main
    from lalmbench.config import load_eval_configs, load_train_config

    def no_network(*args, **kwargs):
        raise AssertionError("--print-config opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("LALMBENCH_DATA_HOME", str(tmp_path / "data"))
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    code = main(["run", "no_such_encoder.py", "task1", "--tasks", "gtzan,ESC-50", "--max-steps", "7", "--limit", "5",
                 "--output-dir", str(tmp_path / "out"), "--print-config"])
    assert code == 0
    text = capsys.readouterr().out
    train, evals = yaml.safe_load_all(text)
    assert train["config_name"] == "task1@esc-50,gtzan" and train["max_steps"] == 7
    assert list(train["train_data"]) == ["ESC-50", "GTZAN"] and train["train_data"]["GTZAN"]["key"] == "genre"
    assert list(evals) == ["eval_esc-50", "eval_gtzan"] and evals["eval_gtzan"]["metric"] == "Accuracy"
    assert "# --limit 5: only the first 5 test examples" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"] and list(here.iterdir()) == []
    # Each document loads back as the config it shows.
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(evals))
    assert load_train_config(str(tmp_path / "train.yaml")).model_dump() == train
    assert {t.name: t.model_dump() for t in load_eval_configs(str(tmp_path / "eval.yaml"))} == evals


def test_limit_and_tasks_values_are_checked(capsys):
    from lalmbench.cli import main

    assert main(["run", "enc.py", "task1", "--limit", "0", "--print-config"]) == 2
    assert "--limit must be a whole number of test examples, at least 1; got 0" in capsys.readouterr().err
    assert main(["run", "enc.py", "task1", "--tasks", " , ", "--print-config"]) == 2
    assert "--tasks names no dataset" in capsys.readouterr().err
    assert main(["run", "enc.py", "task1", "--seeds", "2", "--limit", "5"]) == 2
    assert "--limit 5 with --seeds 2" in capsys.readouterr().err


def test_one_spelling_per_idea_across_commands():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    # A directory is --output-dir, a file --output, wherever a command writes one.
    for name, command in commands.items():
        options = {o for action in command._actions for o in action.option_strings}
        assert not options & {"--out", "--outdir", "--output_dir", "--dir"}, name
        assert "--output-dir" in options or name not in ("run", "demo", "leaderboard")
    assert build_parser().parse_args(["leaderboard", "r"]).output_dir is None  # no files unless asked
    assert build_parser().parse_args(["compare", "a", "b", "--output", "c.json"]).json == "c.json"
    assert build_parser().parse_args(["compare", "a", "b", "--json", "c.json"]).json == "c.json"  # older spelling
    assert build_parser().parse_args(["download", "task1", "--data-home", "d"]).data_home == "d"
    assert build_parser().parse_args(["demo", "--data-only", "--output-dir", "x"]).data_only is True


def test_demo_data_only_writes_into_output_dir(tmp_path, capsys, monkeypatch):
    from lalmbench import demo
    from lalmbench.cli import main

    write = demo.write_demo_data  # the real writer, with few examples (the default size takes many seconds)
    monkeypatch.setattr(demo, "write_demo_data", lambda directory, seed: write(directory, seed, 4, 2))
    assert main(["demo", "--data-only", "--output-dir", str(tmp_path / "shards")]) == 0
    assert (tmp_path / "shards" / "train.yaml").is_file() and (tmp_path / "shards" / "eval.yaml").is_file()
    assert len(list((tmp_path / "shards").glob("*/*.tar.gz"))) == 12


def test_bench_protocol_flag_reaches_the_bench(monkeypatch):
    """`lalmbench bench --protocol corrected` trains the paths on corrected's stream; official is the default."""
    from lalmbench import bench
    from lalmbench.cli import main

    seen = []
    monkeypatch.setattr(bench, "bench_command", lambda **kwargs: seen.append(kwargs["protocol"]) or 0)
    assert main(["bench", "--quick", "--protocol", "corrected"]) == 0
    assert main(["bench", "--quick"]) == 0
    assert seen == ["corrected", "official"]
    with pytest.raises(SystemExit):
        main(["bench", "--protocol", "oficial"])
