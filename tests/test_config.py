"""Train/eval configs in the published YAML format, overrides and error reporting."""

import pytest
import yaml

from lalmbench import metrics
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
    with pytest.raises(ConfigError, match="compile_mode: got 'fastest'; allowed: one of default, reduce-overhead"):
        TrainConfig.from_mapping({"compile_mode": "fastest"})
    with pytest.raises(ConfigError, match="length_bucket: got -8; allowed: an integer >= 0"):
        TrainConfig.from_mapping({"length_bucket": -8})
    fast = TrainConfig.from_mapping({"compile": True, "compile_mode": "reduce-overhead", "length_bucket": 64})
    assert (fast.compile_mode, fast.length_bucket) == ("reduce-overhead", 64)
    # decoding with merged LoRA changes evaluation only: same run identity (the score cache keys it)
    assert TrainConfig(merge_lora_for_eval=True).identity_dict() == TrainConfig().identity_dict()
    assert TrainConfig(length_bucket=64).identity_dict() != TrainConfig().identity_dict()


def _problems(mapping: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_mapping(mapping)
    return str(info.value).splitlines()[1:]


def test_every_setting_is_checked_at_once_with_field_value_and_allowed_range():
    # Each of these was accepted (or ended in a TypeError traceback) before the settings had rules.
    bad = {"save_total_limit": 0, "global_batch_size": "8", "device": "tpu", "repetition_penalty": 0,
           "max_grad_norm": -1, "eval_crop_audio_length": -5}
    assert _problems(bad) == [
        "  - save_total_limit: got 0; allowed: an integer >= 1",
        "  - global_batch_size: got '8' (text: write the number without quotes); allowed: an integer >= 1, or null",
        "  - device: got 'tpu'; allowed: cpu, cuda, cuda:N, mps, or null",
        "  - repetition_penalty: got 0; allowed: a number > 0",
        "  - max_grad_norm: got -1; allowed: a number > 0",
        "  - eval_crop_audio_length: got -5; allowed: a number > 0, or null",
    ]


@pytest.mark.parametrize("field, value, allowed", [
    ("deterministic", 1, "true or false"),  # strict: 1 is not true
    ("max_steps", 100.0, "an integer >= 1"),
    ("max_steps", True, "an integer >= 1"),
    ("learning_rate", float("nan"), "a number > 0"),
    ("lora_dropout", 1.0, "a number >= 0 and < 1"),
    ("max_bad_fraction", 1.5, "a number >= 0 and <= 1"),
    ("protocol", "fixed", "one of official, corrected"),
    ("feature_cache", "ssd", "one of off, memory, disk"),
    ("decoder_model_name", "", "a non-empty string"),
    ("sample_rate", 8, "an integer >= 1000"),
    ("num_training_workers", -1, "an integer >= 0, or null"),
])
def test_types_and_ranges(field, value, allowed):
    assert _problems({field: value}) == [f"  - {field}: got {value!r}; allowed: {allowed}"]


def test_valid_values_are_kept_and_integers_stand_for_numbers():
    config = TrainConfig.from_mapping({"learning_rate": 1, "device": "cuda:1", "eval_crop_audio_length": 10,
                                       "global_batch_size": None, "repetition_penalty": 1.2})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert (config.device, config.eval_crop_audio_length, config.repetition_penalty) == ("cuda:1", 10.0, 1.2)


def test_every_setting_has_a_rule_beyond_its_type():
    import dataclasses
    import typing

    from lalmbench.config import TRAIN_RULES

    hints = typing.get_type_hints(TrainConfig)
    unruled = [f.name for f in dataclasses.fields(TrainConfig)
               if f.name not in TRAIN_RULES and hints[f.name] is not bool and f.name != "train_data"]
    assert unruled == []
    assert not set(TRAIN_RULES) - set(TrainConfig.field_names())  # no rule for a setting that is gone


def test_unknown_settings_suggest_the_closest_name(tmp_path):
    assert _problems({"max_step": 3, "zzz": 1}) == [
        "  - unknown setting 'max_step'. Did you mean 'max_steps'?",
        "  - unknown setting 'zzz'. (every setting: `lalmbench run --help`)"]
    bad = {"train_data": {"A": {"data": "a.tar", "promt": "P", "prob": "2"}}}
    assert _problems(bad) == ["  - train_data.A: unknown dataset field 'promt'. Did you mean 'prompt'?",
                              "  - train_data.A.prob: got '2' (text: write the number without quotes); "
                              "allowed: a number > 0, or null"]


def test_eval_entries_are_checked_field_by_field(tmp_path):
    entry = {"data": {"data": ["a.tar"]}, "metric": "accuracy", "batch_size": 0, "num_workers": "2",
             "weight": -1, "metric_arg": {}}
    with pytest.raises(ConfigError) as info:
        load_eval_configs(_write(tmp_path / "e.yaml", {"e": entry}))
    assert str(info.value).splitlines()[1:] == [
        f"  - {tmp_path / 'e.yaml'}: e: unknown field 'metric_arg'. Did you mean 'metric_args' or 'metric'?",
        f"  - {tmp_path / 'e.yaml'}: e.batch_size: got 0; allowed: an integer >= 1",
        f"  - {tmp_path / 'e.yaml'}: e.num_workers: got '2' (text: write the number without quotes); "
        "allowed: an integer >= 0",
        f"  - {tmp_path / 'e.yaml'}: e.weight: got -1; allowed: a number >= 0",
        f"  - {tmp_path / 'e.yaml'}: e.metric: unknown metric 'accuracy'. Did you mean 'Accuracy'? "
        f"Available: {', '.join(metrics.available())}",
    ]


def test_every_builtin_config_passes_the_rules():
    from lalmbench.tasks import catalog

    for name in catalog.builtin_names("train"):
        load_train_config(name)
    for name in catalog.builtin_names("eval"):
        assert load_eval_configs(name)


def test_published_num_training_workers_sets_num_workers(tmp_path):
    published = load_train_config(_write(tmp_path / "single.yaml", {**TRAIN, "num_training_workers": 4}))
    assert (published.num_training_workers, published.num_workers) == (4, 4)
    # num_workers, when given (YAML or --args), wins over the published name
    assert load_train_config(str(tmp_path / "single.yaml"), {"num_workers": 0}).num_workers == 0
    both = load_train_config(_write(tmp_path / "both.yaml", {**TRAIN, "num_training_workers": 4, "num_workers": 1}))
    assert (both.num_training_workers, both.num_workers) == (4, 1)
    plain = load_train_config(_write(tmp_path / "plain.yaml", TRAIN))
    assert (plain.num_training_workers, plain.num_workers) == (None, 0)
    # decode worker processes (num_workers) change no result: not part of the run identity
    assert load_train_config(str(tmp_path / "single.yaml"), {"num_workers": 0}).identity_dict() == \
        published.identity_dict()
    # the published loader workers shape official's training order (data/official_stream.py): part of it there
    assert published.identity_dict()["data_order"] == {"stream": "published", "loader_workers": 4}
    assert plain.identity_dict()["data_order"] == {"stream": "published", "loader_workers": 0}
    corrected = {"protocol": "corrected"}
    assert load_train_config(str(tmp_path / "single.yaml"), corrected).identity_dict() == \
        load_train_config(str(tmp_path / "plain.yaml"), corrected).identity_dict()
    assert load_train_config("esc-50").num_workers == 4  # the published single configs set 4
