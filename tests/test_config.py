"""Train/eval configs in the published YAML format, overrides and error reporting."""

import pytest
import yaml

from lalmbench import metrics
from lalmbench.config import TrainConfig, load_eval_configs, load_train_config
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


def test_speed_switches_are_checked_and_cuda_graphs_need_buckets():
    assert not TrainConfig().compile and TrainConfig().length_bucket == 0  # the default stays eager and exact
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_mapping({"compile": True, "compile_mode": "reduce-overhead"})
    assert "set length_bucket too" in str(info.value)
    with pytest.raises(ConfigError, match="compile_mode: got 'fastest'; input should be 'default', 'reduce-overhead'"):
        TrainConfig.from_mapping({"compile_mode": "fastest"})
    with pytest.raises(ConfigError, match="length_bucket: got -8; input should be greater than or equal to 0"):
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
    assert _problems(bad) == [  # in the order of the settings (pydantic's messages say what is allowed)
        "  - max_grad_norm: got -1; input should be greater than 0",
        "  - global_batch_size: got '8' (text: write the number without quotes); input should be a valid integer",
        "  - save_total_limit: got 0; input should be greater than or equal to 1",
        "  - eval_crop_audio_length: got -5; input should be greater than 0",
        "  - repetition_penalty: got 0; input should be greater than 0",
        "  - device: got 'tpu'; string should match pattern '^(cpu|cuda(:[0-9]+)?|mps)$'",
    ]


@pytest.mark.parametrize("field, value, allowed", [
    ("deterministic", 1, "input should be a valid boolean"),  # strict: 1 is not true
    ("max_steps", 100.0, "input should be a valid integer"),
    ("max_steps", True, "input should be a valid integer"),
    ("learning_rate", float("nan"), "input should be a finite number"),
    ("lora_dropout", 1.0, "input should be less than 1"),
    ("max_bad_fraction", 1.5, "input should be less than or equal to 1"),
    ("protocol", "fixed", "input should be 'official' or 'corrected'"),
    ("feature_cache", "ssd", "input should be 'off', 'memory' or 'disk'"),
    ("decoder_model_name", "", "string should have at least 1 character"),
    ("sample_rate", 8, "input should be greater than or equal to 1000"),
    ("num_training_workers", -1, "input should be greater than or equal to 0"),
])
def test_types_and_ranges(field, value, allowed):
    assert _problems({field: value}) == [f"  - {field}: got {value!r}; {allowed}"]


def test_valid_values_are_kept_and_integers_stand_for_numbers():
    config = TrainConfig.from_mapping({"learning_rate": 1, "device": "cuda:1", "eval_crop_audio_length": 10,
                                       "global_batch_size": None, "repetition_penalty": 1.2})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert (config.device, config.eval_crop_audio_length, config.repetition_penalty) == ("cuda:1", 10.0, 1.2)


def test_every_setting_has_a_rule_beyond_its_type():
    import typing

    # a constraint (Field(ge=...), min_length, pattern) or a fixed set of values (Literal), unless true/false
    unruled = [name for name, field in TrainConfig.model_fields.items()
               if not field.metadata and typing.get_origin(field.annotation) is not typing.Literal
               and field.annotation is not bool and name != "train_data"]
    assert unruled == []


def test_unknown_settings_suggest_the_closest_name(tmp_path):
    assert _problems({"max_step": 3, "zzz": 1}) == [
        "  - unknown setting 'max_step'. Did you mean 'max_steps'?",
        "  - unknown setting 'zzz'. (every setting: `lalmbench run --help`)"]
    bad = {"train_data": {"A": {"data": "a.tar", "promt": "P", "prob": "2"}}}
    assert _problems(bad) == ["  - train_data.A: unknown dataset field 'promt'. Did you mean 'prompt'?",
                              "  - train_data.A.prob: got '2' (text: write the number without quotes); "
                              "input should be a valid number"]
    assert _problems({"train_data": {"A": {"prompt": "P", "revison": "v1"}}}) == [
        "  - train_data.A: unknown dataset field 'revison'. Did you mean 'revision'?",
        "  - train_data.A.data: missing (required)"]


def test_eval_entries_are_checked_field_by_field(tmp_path):
    entry = {"data": {"data": ["a.tar"]}, "metric": "accuracy", "batch_size": 0, "num_workers": "2",
             "weight": -1, "metric_arg": {}}
    with pytest.raises(ConfigError) as info:
        load_eval_configs(_write(tmp_path / "e.yaml", {"e": entry}))
    assert str(info.value).splitlines()[1:] == [
        f"  - {tmp_path / 'e.yaml'}: e: unknown field 'metric_arg'. Did you mean 'metric_args' or 'metric'?",
        f"  - {tmp_path / 'e.yaml'}: e.metric: unknown metric 'accuracy'. Did you mean 'Accuracy'? "
        f"Available: {', '.join(metrics.available())}",
        f"  - {tmp_path / 'e.yaml'}: e.batch_size: got 0; input should be greater than or equal to 1",
        f"  - {tmp_path / 'e.yaml'}: e.num_workers: got '2' (text: write the number without quotes); "
        "input should be a valid integer",
        f"  - {tmp_path / 'e.yaml'}: e.weight: got -1; input should be greater than or equal to 0",
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


def test_identity_hashes_of_builtin_configs_are_pinned():
    """The training identity keys run directories: a change to how configs are built or dumped must not move
    it. These hashes were computed with the dataclass configs before they became pydantic models."""
    from lalmbench.identity import digest

    assert digest(TrainConfig().identity_dict()) == "52952bd8f036ebf7d3a5a09a44822b88645cb8d556e1d37afa6e5b765406beee"
    assert digest(TrainConfig().evaluation_dict()) == \
        "5bc50b4dc4ac5bbe627c865c6a40b61d15bc8f85468f857806199becaaff3015"
    pinned = {"task1": "b6991c5bd0df90f97df715b702eec9fb74b6a204242be1099cbf0b3bc06a2a86",
              "task2": "26cd719ac9334f34eb69401d666557dc076be1392a90d0ce4a17ce2b9ebf7668",
              "esc-50": "38cf760c05676f0315335785c5a78d2645f546dbb076f895be1d513ad2073c68"}
    assert {name: digest(load_train_config(name).identity_dict()) for name in pinned} == pinned
    tasks = {t.name: digest(t.model_dump()) for t in load_eval_configs("task1")}
    assert tasks["eval_esc-50"] == "ffe46dd76ffd2e0eedac554c7b8429ff423d04ccf60558337e33a36d9ad6cac7"


def test_a_name_key_inside_an_entry_is_refused_not_overwritten_by_the_key(tmp_path):
    """Datasets and test sets are named by their YAML key; a `name:` beside the other fields was an unknown
    field before the configs became pydantic models and must not be silently replaced by the key."""
    bad = {"train_data": {"A": {"name": "B", "prompt": "P", "data": "a.tar"}}}
    assert _problems(bad) == ["  - train_data: A: `name` is not a dataset field: a dataset is named by its key "
                              "('A'); remove `name: B` or rename the key"]
    entry = {"data": {"data": ["a.tar"], "name": "x"}, "metric": "Accuracy", "name": "y"}
    with pytest.raises(ConfigError) as info:
        load_eval_configs(_write(tmp_path / "e.yaml", {"e": entry}))
    where = tmp_path / "e.yaml"
    assert str(info.value).splitlines()[1:] == [
        f"  - {where}: e: `name` is not a field: a test set is named by its key ('e'); remove `name: y` or rename the key",
        f"  - {where}: e.data: `name` is not a field: a test set is named by its key ('e'); remove `name: x` or "
        "rename the key"]
