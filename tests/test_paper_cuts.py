"""Issue 19, "Paper cuts": each user-facing rough edge found by trying the commands, with its fix.

Every test here failed on the code before the fix (a traceback, a wrong count, a misleading message).
"""

from __future__ import annotations

import json
import os
import re
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from lalmbench.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

TINY_ENCODER = '''
import torch


class TinyEncoder(torch.nn.Module):
    def __init__(self, dim: int = 8, scale: float = 1.0):
        super().__init__()
        self.output_dim = dim
        self.proj = torch.nn.Linear(1, dim)
        self.scale = scale

    def forward(self, audio, audio_attention_mask=None):
        frames = audio[:, : audio.shape[1] // 320 * 320].reshape(audio.shape[0], -1, 320).mean(-1, keepdim=True)
        return self.proj(frames) * self.scale, None
'''


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def tiny_encoder(tmp_path):
    path = tmp_path / "tiny_encoder.py"
    path.write_text(TINY_ENCODER)
    return path


# ---------------------------------------------------------------- --args and --model-args


def test_args_naming_a_missing_yaml_file_says_it_is_missing(tmp_path, capsys):
    missing = tmp_path / "nosuch.yaml"
    assert main(["run", "enc.py", "task1", "--args", str(missing), "--print-config"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"--args: the file {missing} does not exist" in err
    assert "--args takes a JSON object, a YAML mapping or the path of a YAML file" in err


def test_args_naming_a_directory_or_a_bare_word_is_explained(tmp_path, capsys):
    assert main(["run", "enc.py", "task1", "--args", str(tmp_path), "--print-config"]) == 2
    assert f"--args: {tmp_path} is a directory, not a YAML file" in _one_line(capsys.readouterr().err)
    assert main(["run", "enc.py", "task1", "--args", "bf16", "--print-config"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "--args must be a mapping" in err and "'bf16'" in err and "does not exist" not in err


def test_model_args_of_the_wrong_type_name_the_value_and_the_annotation(tiny_encoder):
    from lalmbench.encoders.loading import load_encoder
    from lalmbench.errors import EncoderContractError

    with pytest.raises(EncoderContractError) as caught:
        load_encoder(str(tiny_encoder), {"dim": "big"})
    message = _one_line(str(caught.value))
    assert "does not accept" not in message
    assert "TinyEncoder accepts dim, but TinyEncoder(dim='big') raised TypeError" in message
    assert "dim='big' is a str; the constructor annotates it int" in message
    # A keyword it really does not take is still named as such, with the ones it takes.
    with pytest.raises(EncoderContractError) as caught:
        load_encoder(str(tiny_encoder), {"width": 4})
    message = _one_line(str(caught.value))
    assert "TinyEncoder does not accept width" in message and "it takes: dim, scale" in message


def test_check_command_shows_the_wrong_type_not_a_missing_keyword(tiny_encoder, capsys):
    assert main(["check", str(tiny_encoder), "--model-args", '{"dim": "big"}']) == 1
    out = _one_line(capsys.readouterr().out)
    assert "accepts dim" in out and "annotates it int" in out and "does not accept" not in out


# ---------------------------------------------------------------- devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch build or machine without CUDA")
def test_run_on_cuda_without_cuda_is_a_clear_error(tiny_encoder, demo_suite, tmp_path, capsys):
    train_yaml, eval_yaml, _ = demo_suite
    output = tmp_path / "runs"
    code = main(["run", str(tiny_encoder), str(train_yaml), str(eval_yaml), "--device", "cuda",
                 "--max-steps", "1", "--output-dir", str(output)])
    err = _one_line(capsys.readouterr().err)
    assert code == 2, err
    assert "Traceback" not in err
    assert "device 'cuda' is not available" in err
    assert "--device cpu" in err and "CUDA build of torch" in err
    assert not output.exists()  # refused before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch build or machine without CUDA")
def test_a_stop_before_the_run_directory_is_said_once(demo_suite, tmp_path):
    """In a process of its own (no pytest handlers on the root logger): the reason a run stopped goes to
    log.txt only; before the run directory exists there is no log.txt, and the line must not reach stderr
    through logging's last-resort handler beside the CLI's own error."""
    import subprocess
    import sys

    train_yaml, eval_yaml, _ = demo_suite
    done = subprocess.run([sys.executable, "-m", "lalmbench", "run", "lalmbench.encoders.LogMelEncoder",
                           str(train_yaml), str(eval_yaml), "--device", "cuda", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("device 'cuda' is not available") == 1, done.stderr
    assert "run stopped" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch build or machine without CUDA")
def test_bench_on_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "--quick", "--device", "cuda", "--output", str(tmp_path / "bench.json")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "device 'cuda' is not available" in err and "--device cpu" in err


def test_a_missing_gpu_index_is_a_clear_error():
    from lalmbench.devices import require_device
    from lalmbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"device 'cuda:99' is not available.*--device"):
        require_device("cuda:99", "--device")
    assert require_device("cpu", "--device") == torch.device("cpu")


# ---------------------------------------------------------------- demo --data-only


def test_demo_data_only_into_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("mine")
    assert main(["demo", "--data-only", "--output-dir", str(target)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "Traceback" not in err
    assert f"--output-dir {target} is a file, not a directory" in err
    assert target.read_text() == "mine"  # nothing a user made is touched


def test_demo_data_only_below_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("mine")
    assert main(["demo", "--data-only", "--output-dir", str(target / "sub")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"--output-dir {target / 'sub'} cannot be made" in err and "not a directory" in err


def _unwritable_directory(tmp_path) -> Path:
    if os.geteuid() != 0:
        directory = tmp_path / "read_only"
        directory.mkdir()
        directory.chmod(0o555)
        return directory
    # root writes through permission bits: a read-only file system is the real case left
    if os.path.isdir("/sys") and not os.access("/sys", os.W_OK | os.X_OK) or _mkdir_fails("/sys/lalmbench_probe"):
        return Path("/sys")
    pytest.skip("no read-only directory available to this user")


def _mkdir_fails(path: str) -> bool:
    try:
        os.mkdir(path)
    except OSError:
        return True
    os.rmdir(path)
    return False


def test_demo_data_only_into_a_read_only_directory_is_a_clear_error(tmp_path, capsys):
    directory = _unwritable_directory(tmp_path)
    assert main(["demo", "--data-only", "--output-dir", str(directory)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "Traceback" not in err
    assert f"--output-dir {directory} is not writable" in err and "choose another --output-dir" in err


# ---------------------------------------------------------------- demo --help


def test_demo_help_shows_the_demos_own_defaults(capsys):
    from lalmbench.demo import DEMO_TRAINING

    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    text = _one_line(capsys.readouterr().out)
    assert f"--max-steps INT Optimizer steps to train. (default: {DEMO_TRAINING['max_steps']})" in text
    assert f"(default: {DEMO_TRAINING['learning_rate']!r})" in text
    assert "(default: 'tiny-random')" in text
    assert "(default: 10000)" not in text and "SmolLM2-135M')" not in text
    # run --help keeps the protocol's defaults
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = _one_line(capsys.readouterr().out)
    assert "--max-steps INT Optimizer steps to train. (default: 10000)" in text


# ---------------------------------------------------------------- weights


def test_all_weights_zero_is_refused_at_load_time(demo_suite, tmp_path):
    import yaml

    from lalmbench.config import load_eval_configs
    from lalmbench.errors import ConfigError

    _, eval_yaml, _ = demo_suite
    raw = yaml.safe_load(Path(eval_yaml).read_text())
    for entry in raw.values():
        entry["weight"] = 0
    zero = tmp_path / "zero.yaml"
    zero.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_eval_configs(str(zero))
    message = _one_line(str(caught.value))
    assert "every test set has weight 0 (eval_tones, eval_chords, eval_count, eval_melody)" in message
    assert "give at least one a weight > 0" in message
    raw["eval_tones"]["weight"] = 0.5  # one weight above 0 is a valid config
    zero.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert [t.weight for t in load_eval_configs(str(zero))] == [0.5, 0, 0, 0]


def test_a_tasks_subset_whose_weights_are_all_zero_is_refused(demo_suite, tmp_path):
    import yaml

    from lalmbench.errors import ConfigError
    from lalmbench.run_configs import resolve_configs

    train_yaml, eval_yaml, _ = demo_suite
    raw = yaml.safe_load(Path(eval_yaml).read_text())
    raw["eval_tones"]["weight"] = 0
    zero = tmp_path / "eval.yaml"
    zero.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=r"every test set has weight 0 \(eval_tones\)"):
        resolve_configs(str(train_yaml), str(zero), {}, ["tones"])


# ---------------------------------------------------------------- package


def test_package_counts_every_file_in_the_zip(tmp_path, capsys):
    from lalmbench.encoders.check import CheckOptions
    from lalmbench.encoders.package import package_command
    from lalmbench.encoders.scaffold import new_encoder_command

    repo = tmp_path / "submission"
    assert new_encoder_command(str(repo), class_name="TinyAudioEncoder") == 0
    options = CheckOptions(long_seconds=4.0, frame_rate_seconds=(1.0, 2.0, 4.0), timing_batch=2, timing_seconds=1.0)
    capsys.readouterr()
    assert package_command(str(repo), options=options) == 0
    out = capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        names = archive.namelist()
    sizes = sum((repo / name).stat().st_size for name in names if name != "MANIFEST.json")
    assert len(names) == 7  # the six scaffolded files and MANIFEST.json
    assert f"{len(names)} files (6 from {repo} and MANIFEST.json)" in out
    assert f"{sizes:,} bytes" in out


# ---------------------------------------------------------------- report


def test_report_refuses_a_directory_that_is_not_a_run_directory(tmp_path, capsys):
    from run_dirs import write_run

    empty = tmp_path / "not_a_run"
    empty.mkdir()
    (empty / "notes.txt").write_text("mine")
    assert main(["report", str(empty)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"{empty} is not a run directory: it has neither scores.tsv nor run_summary.json" in err
    assert "<output-dir>/<train config>/<encoder>/" in err
    assert sorted(p.name for p in empty.iterdir()) == ["notes.txt"]  # no report.html written into it

    # A directory above run directories: the runs below are named.
    rows = [("dog", "dog", "k0"), ("cat", "dog", "k1")]
    run_dir = write_run(tmp_path / "runs" / "task1", "my_encoder", {"eval_esc-50": {"metric": "Accuracy", "rows": rows}})
    assert main(["report", str(tmp_path / "runs")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "is not a run directory" in err and f"run directories below it: {run_dir}" in err
    assert not (tmp_path / "runs" / "report.html").exists()

    # A run directory still gets its report.
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()


def test_report_on_an_unfinished_run_says_how_to_finish_it(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "task1" / "my_encoder"
    run_dir.mkdir(parents=True)
    (run_dir / "run_identity.json").write_text(json.dumps({"hash": "ab" * 32, "identity": {}}))
    assert main(["report", str(run_dir)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "has no scores yet (no scores.tsv or run_summary.json)" in err
    assert "run the same `lalmbench run` command again" in err


# ---------------------------------------------------------------- offline: one consistent message, the files named

UNREACHABLE = "http://127.0.0.1:9"  # discard port: connection refused


@pytest.fixture
def hub_state(monkeypatch):
    """No offline switch from the shell, a fresh reachability probe, the hub client's constant restored."""
    from huggingface_hub import constants

    from lalmbench import hub

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LALMBENCH_DATA_HOME", "XARES_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_probed", {})
    return monkeypatch


def _shard_paths(target: str, tmp_path) -> list[str]:
    from lalmbench.data.download import remote_files, specs_for_targets

    return [remote.path for remote in remote_files(specs_for_targets([target]))]


def test_run_with_the_hub_unreachable_lists_the_missing_files_and_says_one_thing(
        tiny_encoder, hub_state, tmp_path, capsys):
    """HF_HUB_OFFLINE unset, the hub down: the probe switches the process offline; the error used to say
    both 'unset HF_HUB_OFFLINE' (the hub client's words) and 'set HF_HUB_OFFLINE=1', and named no file."""
    hub_state.setenv("HF_ENDPOINT", UNREACHABLE)
    home = tmp_path / "data"
    code = main(["run", str(tiny_encoder), "esc-50", "--data-home", str(home), "--output-dir", str(tmp_path / "runs")])
    err = _one_line(capsys.readouterr().err)
    assert code == 2, err
    paths = _shard_paths("esc-50", home)
    assert len(paths) == 5
    assert f"{len(paths)} shard file(s) are not in the data home {home}" in err
    assert f"the hub at {UNREACHABLE} did not answer when this command started (ConnectError" in err
    for path in paths:
        assert str(home / path) in err
    assert f"fetch them with: lalmbench download esc-50 --data-home {home}" in err  # as the run was told
    assert "unset" not in err.lower() and "set HF_HUB_OFFLINE=1" not in err
    assert not list((tmp_path / "runs").rglob("run_identity.json"))  # no run directory was made


def test_download_offline_by_environment_names_the_variable_and_lists_the_files(hub_state, tmp_path, capsys):
    from lalmbench.data.download import download_command
    from lalmbench.errors import DataError

    paths = _shard_paths("task1", tmp_path)
    assert len(paths) > 20
    hub_state.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(DataError) as caught:
        download_command(["task1"], home=str(tmp_path))
    message = _one_line(str(caught.value))
    assert f"{len(paths)} shard file(s) are not in the data home {tmp_path}" in message
    assert "TRANSFORMERS_OFFLINE=1 is set" in message and "HF_HUB_OFFLINE is set" not in message
    assert str(tmp_path / paths[0]) in message and str(tmp_path / paths[19]) in message
    assert str(tmp_path / paths[20]) not in message and f"... and {len(paths) - 20} more" in message
    assert "Unset TRANSFORMERS_OFFLINE and fetch them with: lalmbench download esc-50 " in message

    hub_state.delenv("TRANSFORMERS_OFFLINE")
    hub_state.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as caught:
        download_command(["esc-50"], home=str(tmp_path))
    message = _one_line(str(caught.value))
    assert "HF_HUB_OFFLINE=1 is set" in message and "Unset HF_HUB_OFFLINE and fetch them with" in message
    assert "set HF_HUB_OFFLINE=1" not in message
    assert all(str(tmp_path / path) in message for path in _shard_paths("esc-50", tmp_path))


# ---------------------------------------------------------------- scores.png: legend and chance levels


def _legend_and_chance(run_dir):
    pytest.importorskip("matplotlib")
    from lalmbench.report import html as report_html

    figure = report_html.scores_figure(report_html.read_run_dir(run_dir))
    axes = figure.axes[0]
    assert axes.get_legend() is None and len(figure.legends) == 1  # one legend, below the chart
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    chance = {}
    for line in axes.get_lines():  # one short vertical mark per task with a chance level, its gid the task
        if "chance level" in line.get_label():
            chance[line.get_gid()] = float(line.get_xdata()[0])
    return legend, chance


def test_scores_plot_lists_only_what_it_draws_and_marks_chance_levels(tmp_path):
    from run_dirs import write_run

    # The demo's kind of tasks: no published baseline for them, so no baseline in the legend.
    tones = [("red", "red", "k0"), ("blue", "red", "k1"), ("red", "red", "k2"), ("red", "blue", "k3")]
    melody = [("do re mi", "do re mi", "m0"), ("do do", "re mi fa", "m1"), ("mi", "do re mi", "m2")]
    run_dir = write_run(tmp_path, "demo_run", {"eval_tones": {"metric": "Accuracy", "rows": tones},
                                               "eval_melody": {"metric": "iWER", "rows": melody}})
    legend, chance = _legend_and_chance(run_dir)
    assert legend == ["this run", "chance level (best constant answer)"]
    # tones: answering "red" always is right 3 times in 4. melody: the references are "do re mi" twice and
    # "re mi fa"; answering "do re mi" always costs 2 word edits (insert do, delete fa) over 9 reference
    # words, iWER = 1 - 2/9 = 7/9 ("re mi fa" always costs 4: 5/9).
    assert chance["eval_tones"] == pytest.approx(0.75)
    assert chance["eval_melody"] == pytest.approx(7 / 9)

    # A published task: both baselines have a bar and are listed; a caption task has no chance level.
    esc = [("dog", "dog", "e0"), ("dog", "cat", "e1"), ("cat", "cat", "e2"), ("cat", "cat", "e3"), ("x", "cat", "e4")]
    run_dir = write_run(tmp_path, "published_run", {"eval_esc-50": {"metric": "Accuracy", "rows": esc}})
    legend, chance = _legend_and_chance(run_dir)
    assert legend == ["this run", "Dasheng-base (published)", "Whisper-base (published)",
                      "chance level (best constant answer)"]
    assert chance == {"eval_esc-50": pytest.approx(0.8)}
