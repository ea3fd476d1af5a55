"""End to end: `lalmbench run` on the demo's synthetic shards, checking the artifacts it leaves."""

import csv
import json

import pytest
import torch
import transformers
import yaml

from lalmbench.cli import main


@pytest.fixture(scope="module")
def finished_run(demo_suite, tmp_path_factory):
    train_yaml, eval_yaml, _ = demo_suite
    output = tmp_path_factory.mktemp("runs")
    args = {"max_steps": 40, "save_steps": 20, "shuffle_buffer": 16, "sort_buffer": 8, "max_new_tokens": 8}
    code = main(["run", "lalmbench.encoders.LogMelEncoder", str(train_yaml), str(eval_yaml),
                 "--args", json.dumps(args), "--output-dir", str(output)])
    assert code == 0
    return output / "train" / "LogMelEncoder"


def test_scores_table(finished_run):
    rows = list(csv.DictReader(open(finished_run / "scores.tsv"), delimiter="\t"))
    assert [r["Task"] for r in rows] == ["eval_tones", "eval_chords", "eval_count", "eval_melody", "Overall"]
    scores = [float(r["score"]) for r in rows[:-1]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert float(rows[-1]["score"]) == pytest.approx(sum(scores) / 4, abs=1e-5)  # weights 1 each
    assert rows[-1]["weight"] == "4"


def test_predictions_cover_every_test_example(finished_run):
    for task in ("tones", "chords", "count", "melody"):
        rows = list(csv.DictReader(open(finished_run / f"predictions_eval_{task}.csv")))
        assert len(rows) == 8
        assert set(rows[0]) == {"prediction", "reference", "key"}
        assert [r["key"] for r in rows] == [f"{task}_test_{i:05d}" for i in range(8)]  # shard order


def test_loss_goes_down_and_every_step_is_logged(finished_run):
    rows = list(csv.DictReader(open(finished_run / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-8:]) / 8 < 0.6 * sum(losses[:8]) / 8
    # Warm-up is the demo's 100 steps: the learning rate rises linearly through step 40.
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates == sorted(rates) and rates[0] == pytest.approx(3e-3 / 100)


def test_resolved_config_summary_and_markers(finished_run):
    config = yaml.safe_load(open(finished_run / "config.yaml"))
    assert config["max_steps"] == 40 and config["decoder_model_name"] == "tiny-random"
    assert set(config["train_data"]) == {"tones", "chords", "count", "melody"}
    summary = json.loads((finished_run / "run_summary.json").read_text())
    assert summary["tasks"]["eval_chords"]["metric"] == "mAP"
    assert summary["tasks"]["eval_chords"]["metric_args"] == {"num_classes": 5}
    # what produced the run: library versions and, from a checkout, the lalmbench commit
    environment = summary["environment"]
    assert environment["libraries"]["torch"] == torch.__version__
    assert environment["libraries"]["transformers"] == transformers.__version__
    source = environment["lalmbench_source"]
    assert not source or (len(source["commit"]) == 40 and isinstance(source["uncommitted_changes"], bool))
    assert (finished_run / "COMPLETED").is_file() and (finished_run / "training_complete.json").is_file()
    assert sorted(p.name for p in finished_run.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    assert (finished_run / "log.txt").read_text().count("eval_melody [iWER]") == 1


def test_data_only_writes_usable_configs(tmp_path, capsys):
    assert main(["demo", "--data-only", str(tmp_path)]) == 0
    train = yaml.safe_load(open(tmp_path / "train.yaml"))
    evals = yaml.safe_load(open(tmp_path / "eval.yaml"))
    assert set(train["train_data"]) == {"tones", "chords", "count", "melody"}
    assert {e["metric"] for e in evals.values()} == {"Accuracy", "mAP", "iWER"}
    assert len(list(tmp_path.glob("*/*.tar.gz"))) == 12  # 2 train + 1 test shard per task
    assert "lalmbench run" in capsys.readouterr().out


def test_bad_encoder_stops_before_training(tmp_path, demo_suite, capsys):
    train_yaml, eval_yaml, _ = demo_suite
    encoder = tmp_path / "broken.py"
    encoder.write_text("import torch\nclass BrokenEncoder(torch.nn.Module):\n    output_dim = 4\n"
                       "    def forward(self, audio, mask=None):\n        return audio[:, :, None]\n")
    code = main(["run", str(encoder), str(train_yaml), str(eval_yaml), "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "encoder check 'output tuple' failed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("checkpoint-*"))


NONDETERMINISTIC_ENCODER = '''
import torch
from lalmbench.encoders import logmel


class ScatterEncoder(logmel.LogMelEncoder):
    def forward(self, audio, audio_attention_mask=None):
        features, mask = super().forward(audio, audio_attention_mask)
        flat = features.reshape(-1).clone()
        flat.put_(torch.arange(2), torch.zeros(2))  # put_ (no accumulate): no deterministic kernel
        return flat.view_as(features), mask
'''


def test_an_operation_without_a_deterministic_kernel_stops_a_deterministic_run(tmp_path, capsys, encoder_file):
    from run_helpers import FAST, tiny_data

    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = encoder_file("scatter", NONDETERMINISTIC_ENCODER)
    command = ["run", encoder, str(train_yaml), str(eval_yaml), "--output-dir", str(tmp_path / "out"),
               "--no-report"]
    code = main(command + ["--args", json.dumps({**FAST, "max_steps": 2})])
    assert code == 2
    message = capsys.readouterr().err
    assert "put_ has no deterministic implementation" in message
    assert "deterministic: true" in message and '--args \'{"deterministic": false}\'' in message
    assert not list((tmp_path / "out").rglob("run_identity.json"))
    # The setting it names lets the run go on.
    assert main(command + ["--args", json.dumps({**FAST, "max_steps": 2, "deterministic": False})]) == 0
    assert (tmp_path / "out" / "train" / "scatter" / "COMPLETED").is_file()
