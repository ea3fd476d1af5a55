"""Train/eval configs in the published YAML format, overrides and error reporting."""

import pytest
import yaml

from lalmbench.config import TrainConfig, load_eval_configs, load_train_config, parse_json_arg
from lalmbench.errors import ConfigError


def _write(path, obj):
    path.write_text(yaml.safe_dump(obj))
    return str(path)


TRAIN = {"max_steps": 50, "train_data": {"Tones": {"prompt": "Classify.", "data": ["/x/t-{0..1}.tar"],
                                                    "key": "label;labels", "prob": 2}}}


def test_protocol_defaults():
    config = TrainConfig()
    assert (config.learning_rate, config.weight_decay, config.warmup_steps, config.max_grad_norm) == (1e-4, 0.01, 200, 1.0)
    assert (config.per_device_train_batch_size, config.seed, config.max_steps) == (4, 42, 10_000)
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 32, 0.1)
    assert (config.shuffle_buffer, config.sort_buffer, config.crop_audio_length) == (256, 128, 30.0)
    assert config.deterministic and not config.bf16
    assert config.decoder_model_name == "HuggingFaceTB/SmolLM2-135M"
    assert (config.max_new_tokens, config.repetition_penalty) == (150, 1.05)


def test_published_train_yaml_and_override_precedence(tmp_path):
    path = _write(tmp_path / "mine.yaml", TRAIN)
    config = load_train_config(path, {"max_steps": 7, "bf16": True})
    assert config.config_name == "mine"
    assert config.max_steps == 7 and config.bf16  # --args over YAML
    spec = config.train_data["Tones"]
    assert (spec.prompt, spec.key, spec.prob, spec.data) == ("Classify.", "label;labels", 2.0, ["/x/t-{0..1}.tar"])


def test_every_problem_is_reported_at_once(tmp_path):
    bad = {"max_stepz": 1, "learning_rate": "fast", "train_data": {"A": {"data": [], "prob": -1}}}
    with pytest.raises(ConfigError) as info:
        load_train_config(_write(tmp_path / "bad.yaml", bad))
    message = str(info.value)
    for fragment in ("max_stepz", "learning_rate", "train_data.A.data", "train_data.A.prob"):
        assert fragment in message


def test_unknown_config_name_lists_builtins():
    with pytest.raises(ConfigError, match="Built-in train configs"):
        load_train_config("no-such-suite")


def test_eval_yaml(tmp_path):
    path = _write(tmp_path / "eval.yaml", {"eval_x": {"data": {"data": ["/x/a.tar"], "key": "label", "prompt": "P"},
                                                      "batch_size": 8, "metric": "mAP",
                                                      "metric_args": {"num_classes": 3}, "weight": 2}})
    (task,) = load_eval_configs(path)
    assert (task.name, task.metric, task.metric_args, task.batch_size, task.weight) == ("eval_x", "mAP", {"num_classes": 3}, 8, 2.0)
    with pytest.raises(ConfigError, match="unknown metric 'BLEU'"):
        load_eval_configs(_write(tmp_path / "e2.yaml", {"e": {"data": {"data": ["a"]}, "metric": "BLEU"}}))


def test_json_argument_errors_are_explained():
    assert parse_json_arg('{"a": 1}', "--args") == {"a": 1}
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_json_arg("{max_steps: 3}", "--args")
    with pytest.raises(ConfigError, match="JSON object"):
        parse_json_arg("[1]", "--model-args")


def test_speed_switches_are_checked_and_cuda_graphs_need_buckets():
    assert not TrainConfig().compile and TrainConfig().length_bucket == 0  # the default stays eager and exact
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_mapping({"compile": True, "compile_mode": "reduce-overhead"})
    assert "set length_bucket too" in str(info.value)
    with pytest.raises(ConfigError, match="compile_mode: expected one of default, reduce-overhead"):
        TrainConfig.from_mapping({"compile_mode": "fastest"})
    with pytest.raises(ConfigError, match="length_bucket: expected an integer >= 0, got -8"):
        TrainConfig.from_mapping({"length_bucket": -8})
    fast = TrainConfig.from_mapping({"compile": True, "compile_mode": "reduce-overhead", "length_bucket": 64})
    assert (fast.compile_mode, fast.length_bucket) == ("reduce-overhead", 64)
    # decoding with merged LoRA changes evaluation only: same run identity (the score cache keys it)
    assert TrainConfig(merge_lora_for_eval=True).identity_dict() == TrainConfig().identity_dict()
    assert TrainConfig(length_bucket=64).identity_dict() != TrainConfig().identity_dict()


def test_published_num_training_workers_sets_num_workers(tmp_path):
    published = load_train_config(_write(tmp_path / "single.yaml", {**TRAIN, "num_training_workers": 4}))
    assert (published.num_training_workers, published.num_workers) == (4, 4)
    # num_workers, when given (YAML or --args), wins over the published name
    assert load_train_config(str(tmp_path / "single.yaml"), {"num_workers": 0}).num_workers == 0
    both = load_train_config(_write(tmp_path / "both.yaml", {**TRAIN, "num_training_workers": 4, "num_workers": 1}))
    assert (both.num_training_workers, both.num_workers) == (4, 1)
    plain = load_train_config(_write(tmp_path / "plain.yaml", TRAIN))
    assert (plain.num_training_workers, plain.num_workers) == (None, 0)
    # worker processes do not change results: not part of the run identity
    assert published.identity_dict() == plain.identity_dict()
    assert load_train_config("esc-50").num_workers == 4  # the published single configs set 4
