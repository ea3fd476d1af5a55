"""Training and evaluation identities: every input of the trained weights is in the training identity
(encoder code and the modules it imports, files named in --model-args, decoder weights, shards, library
versions, settings); evaluation-only settings re-evaluate and never retrain."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lalmbench import identity
from lalmbench.config import TrainConfig
from run_helpers import finished_tiny_run, interrupted_copy, run_dir_of, run_inprocess, tiny_data

ENCODER_FILE = '''
import helper_frames
from lalmbench.encoders import logmel


class FileEncoder(logmel.LogMelEncoder):
    def __init__(self, table: str = "", **kwargs):
        super().__init__(**kwargs)
        self.table = table
'''


def test_file_encoder_identity_covers_the_local_modules_it_imports(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "helper_frames.py").write_text("HOP = 10\n")
    encoder = tmp_path / "file_encoder.py"
    encoder.write_text(ENCODER_FILE)
    first = identity.encoder_identity(str(encoder))
    assert set(first["local_modules"]) >= {"helper_frames", "lalmbench.encoders.logmel"}
    assert first["local_modules"]["helper_frames"] == identity.file_sha256(tmp_path / "helper_frames.py")
    assert "torch" in first["packages"]  # logmel imports torch: its installed version is recorded
    (tmp_path / "helper_frames.py").write_text("HOP = 20\n")  # the encoder file itself is unchanged
    assert identity.encoder_identity(str(encoder)) != first


def test_installed_encoder_is_identified_by_package_and_version():
    found = identity.encoder_identity("torch.nn.Identity")
    assert found == {"class": "torch.nn.Identity", "packages": {"torch": identity.library_versions()["torch"]}}


def test_files_named_in_model_args_are_fingerprinted_by_content(tmp_path):
    weights = tmp_path / "encoder.ckpt"
    weights.write_bytes(b"abc")
    args = {"checkpoint": str(weights), "layers": [3, 4], "name": "not-a-file"}
    first = identity.model_arg_files(args)
    assert list(first) == [str(weights)]
    stat = weights.stat()
    weights.write_bytes(b"abd")  # same size, same modification time: only the content tells
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert identity.model_arg_files(args) != first


def test_tiny_random_decoder_identity_is_its_weights():
    from lalmbench.model.decoder import load_decoder

    same = [identity.decoder_identity("tiny-random", *load_decoder("tiny-random", seed=s)) for s in (0, 0, 1)]
    assert same[0] == same[1]
    assert same[0]["weights_sha256"] != same[2]["weights_sha256"]
    assert same[0]["tokenizer_sha256"] == same[2]["tokenizer_sha256"]


def test_local_shards_are_identified_by_size_and_modification_time(tmp_path):
    from lalmbench.config import load_train_config
    from lalmbench.data.shards import resolve_shards

    train_yaml, _ = tiny_data(tmp_path)
    spec = load_train_config(str(train_yaml)).train_data["tones"]
    shards = resolve_shards(spec, tmp_path)
    first = identity.shards_identity(spec, shards, tmp_path)
    assert [entry["size"] for entry in first["files"].values()] == [p.stat().st_size for p in shards]
    os.utime(shards[0], ns=(0, shards[0].stat().st_mtime_ns + 1))
    assert identity.shards_identity(spec, shards, tmp_path) != first


def test_evaluation_only_settings_are_not_in_the_training_identity():
    base = TrainConfig().identity_dict()
    for change in ({"max_new_tokens": 3}, {"repetition_penalty": 1.2}, {"eval_crop_audio_length": 5.0},
                   {"eval_batch_size": 2}, {"merge_lora_for_eval": True}, {"max_bad_fraction": 0.2},
                   {"feature_cache": "memory"}):  # exact when deterministic
        assert TrainConfig(**change).identity_dict() == base, change
        assert TrainConfig(**change).evaluation_dict() != TrainConfig().evaluation_dict() or "feature_cache" in change
    assert TrainConfig(feature_cache="memory", deterministic=False).identity_dict() != TrainConfig(
        deterministic=False).identity_dict()
    assert TrainConfig(protocol="corrected").identity_dict() != base
    assert TrainConfig(learning_rate=2e-4).identity_dict() != base


# -- end to end -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return finished_tiny_run(tmp_path_factory.mktemp("identity"))


def _log_after(run_dir: Path, marker: str) -> str:
    return (run_dir / "log.txt").read_text().rsplit(marker, 1)[-1]


def test_an_evaluation_only_setting_re_evaluates_without_retraining(trained):
    root, train_yaml, eval_yaml, first = trained
    for change in ({"max_new_tokens": 2}, {"repetition_penalty": 1.3}, {"eval_crop_audio_length": 0.1}):
        again = run_inprocess(train_yaml, eval_yaml, root / "out", change)
        assert again.run_dir == first.run_dir and again.reused_training, change
        log = _log_after(again.run_dir, "reusing the finished training")
        assert "eval_tones: reusing the cached score" not in log and "eval_tones [Accuracy]" in log, change
    summary = json.loads((first.run_dir / "run_summary.json").read_text())
    assert (summary["steps"], summary["steps_this_run"], summary["max_steps"]) == (6, 0, 6)


def test_rewritten_shards_train_anew_in_their_own_directory(tmp_path):
    data = tmp_path / "data"
    train_yaml, eval_yaml = tiny_data(data)
    out = tmp_path / "out"
    before = run_inprocess(train_yaml, eval_yaml, out)  # first run on these shards: trains
    assert not before.reused_training
    for shard in sorted(data.glob("tones-00000*")):  # rewritten: same names, new modification times
        shard.write_bytes(shard.read_bytes())
    after = run_inprocess(train_yaml, eval_yaml, out)
    assert not after.reused_training
    assert after.run_dir != before.run_dir
    recorded = json.loads((after.run_dir / "run_identity.json").read_text())["identity"]["train_data"]["tones"]
    assert len(recorded["files"]) == 2


def test_turning_on_the_feature_cache_resumes_an_interrupted_run(trained, tmp_path):
    root, train_yaml, eval_yaml, first = trained
    output = tmp_path / "out"
    run_dir = interrupted_copy(first.run_dir, run_dir_of(output), 4)
    result = run_inprocess(train_yaml, eval_yaml, output, {"feature_cache": "memory"})
    assert result.run_dir == run_dir and not result.reused_training
    log = (run_dir / "log.txt").read_text()
    training_hash = json.loads((run_dir / "run_identity.json").read_text())["hash"]
    assert f"resuming training identity {training_hash[:12]} from {run_dir / 'checkpoint-4'}" in log
    assert [row.split(",")[0] for row in (run_dir / "train_log.csv").read_text().splitlines()[1:]] == [
        str(s) for s in range(1, 7)]
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert (summary["steps"], summary["steps_this_run"]) == (6, 2)


def test_demo_keeps_one_data_folder_per_seed(tmp_path):
    from lalmbench.demo import demo_data

    seed0 = demo_data(tmp_path / "seed-0", 0, train_examples=4, test_examples=2)
    shards = sorted((tmp_path / "seed-0").rglob("*.tar.gz"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert demo_data(tmp_path / "seed-0", 0, train_examples=4, test_examples=2) == seed0
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # reused, not rewritten: same training identity
    seed1 = demo_data(tmp_path / "seed-1", 1, train_examples=4, test_examples=2)
    assert seed1[0] != seed0[0]
    first = tmp_path / "seed-0" / "tones" / "tones-train-000000.tar.gz"
    assert first.read_bytes() != (tmp_path / "seed-1" / "tones" / "tones-train-000000.tar.gz").read_bytes()


def test_the_package_version_is_one_and_keys_the_training_identity():
    """Runs trained by a lalmbench whose numbers differ (0.1.1: the resampling filter rounds as the published
    one, and official draws the published loader's seed before step 1) must not be reused: the version is part
    of the training identity, and pyproject and the package agree on it."""
    import tomllib
    from pathlib import Path

    import lalmbench
    from lalmbench.config import TrainConfig
    from lalmbench.identity import training_identity

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == lalmbench.__version__ == "0.1.1"
    identity = training_identity("lalmbench.encoders.LogMelEncoder", None, TrainConfig(), {"name": "x"}, {}, Path("."))
    assert identity["lalmbench"] == lalmbench.__version__
