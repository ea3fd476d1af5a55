"""Typed train and eval configurations, read from YAML in the published system's format.

The configs are pydantic models: each field carries its type, its allowed values (`Field` constraints,
validators beside it) and its one-line doc (the attribute docstring under it, which is also its
`lalmbench run --help` text). Validation is strict: "8" is not 8, 1 is not true, 8.0 is not an integer;
an integer may stand for a number.

Precedence, one rule everywhere: command line (`--args`, flags) over YAML over the defaults below.
Every problem of a config is collected and reported at once (ConfigError), not only the first.

Train YAML (published format)::

    max_steps: 100000                    # any TrainConfig field may appear at the top level
    train_data:
      ESC-50: {prompt: ..., data: [ESC-50/train/esc50_fold_{1..4}_0000000.tar.gz],
               key: "label;labels", prob: 0.5, repo_id: mispeech/xares_llm_data}

Eval YAML (published format)::

    eval_esc-50:
      data: {data: [...], key: ..., prompt: ..., repo_id: ...}
      batch_size: 4
      num_workers: 0
      metric: Accuracy
      metric_args: {}
      weight: 1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lalmbench.errors import ConfigError, did_you_mean
from lalmbench.protocols import DEFAULT_PROTOCOL, PROTOCOLS  # the two named protocols (protocols.py)

DEFAULT_DECODER = "HuggingFaceTB/SmolLM2-135M"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FEATURE_CACHE_MODES = ("off", "memory", "disk")

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, use_attribute_docstrings=True)


def _unset(value: Any) -> bool:
    return value is None


class DatasetSpec(BaseModel):
    """One dataset: where its shards are and how an example becomes (prompt, target)."""

    model_config = STRICT

    data: list[str] = Field(min_length=1)
    """Shard patterns (brace expansion and globs); relative to the data home when repo_id is set."""
    prompt: str = ""
    """The instruction given to the decoder before the target."""
    key: str | None = None
    """JSON field(s) holding the target, `a;b;c`: the first present wins."""
    prob: float | None = Field(None, gt=0, exclude_if=_unset)
    """Mixture weight; unset means proportional to the number of shards."""
    repo_id: str | None = Field(None, min_length=1, exclude_if=_unset)
    """Hub dataset repo the shards come from (None: local files)."""
    revision: str | None = Field(None, exclude_if=_unset)
    """Branch, tag or commit of repo_id to fetch the shards at (None: main); the run records the commit."""
    name: str = Field("", exclude=True)
    """Dataset name: the key of the YAML mapping, which sets it."""

    @field_validator("data", mode="before")
    @classmethod
    def one_pattern_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class TrainConfig(BaseModel):
    """Everything that shapes training. Defaults are the official protocol (docs/protocol.md)."""

    model_config = STRICT

    train_data: dict[str, DatasetSpec] = {}
    """The training mixture: dataset name -> DatasetSpec."""
    config_name: str = Field("default", min_length=1)
    """Name of the train config (YAML stem or built-in name); the run directory uses it."""
    protocol: Literal[PROTOCOLS] = DEFAULT_PROTOCOL
    """official: every number as the published system computes it (default); corrected: lalmbench's fixes
    (truly frozen encoder, padding-independent packing and evaluation, soxr resampling, stricter targets)."""
    decoder_model_name: str = Field(DEFAULT_DECODER, min_length=1)
    """Hub name, local directory, a .gguf file, or `tiny-random`."""
    max_steps: int = Field(10_000, ge=1)
    """Optimizer steps to train."""
    learning_rate: float = Field(1e-4, gt=0)
    """AdamW peak learning rate."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = Field(200, ge=0)
    """Linear warm-up steps, then linear decay to 0 at max_steps."""
    max_grad_norm: float = Field(1.0, gt=0)  # 0 would zero every gradient, not switch clipping off
    """Gradient clipping (global L2 norm)."""
    per_device_train_batch_size: int = Field(4, ge=1)
    """Largest micro-batch on one device; below its share of the global batch, gradients accumulate."""
    global_batch_size: int | None = Field(None, ge=1)
    """Examples per optimizer step over all ranks; None keeps the protocol's 4 (docs/multi_gpu.md)."""
    seed: int = Field(42, ge=0)
    """Seed for weights, data order and crops."""
    save_steps: int = Field(200, ge=1)
    """Write a checkpoint every this many steps (and at the end)."""
    save_total_limit: int = Field(2, ge=1)  # the newest checkpoint is always kept: 0 cannot be honoured
    """Checkpoints kept (oldest removed first); the newest complete one is never removed."""
    logging_steps: int = Field(100, ge=1)
    """Write a line to the text log every this many steps (the CSV loss log has every step)."""
    crop_audio_length: float = Field(30.0, gt=0)
    """Training clips are randomly cropped to at most this many seconds."""
    eval_crop_audio_length: float | None = Field(None, gt=0)
    """Evaluation clips are cut to their first this many seconds (None: whole clip, as published)."""
    sample_rate: int = Field(16_000, ge=1000)
    """Sample rate the encoder receives."""
    shuffle_buffer: int = Field(256, ge=1)
    """Examples in the training shuffle buffer."""
    sort_buffer: int = Field(128, ge=1)
    """Examples sorted by length (audio seconds + text tokens, longest first) before batching."""
    num_workers: int = Field(0, ge=0)
    """Processes that decode and resample audio ahead of the training loop (0: in the main process)."""
    num_training_workers: int | None = Field(None, ge=0)
    """The published configs' name for num_workers (their single-dataset train configs set 4). A YAML or
    --args that gives it without num_workers sets num_workers to it; num_workers, when given, wins."""
    deterministic: bool = True
    """Deterministic algorithms and fixed seeds (reproducible; the default)."""
    bf16: bool = False
    """bf16 autocast for the decoder and encoder (not bit-reproducible; faster on GPUs, measure on CPUs)."""
    tf32: bool = False
    """Allow TF32 matmuls on Ampere+ GPUs (faster, not bit-reproducible)."""
    lora_r: int = Field(8, ge=1)
    """LoRA rank."""
    lora_alpha: int = Field(32, gt=0)
    """LoRA alpha."""
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    """LoRA dropout."""
    compile: bool = False
    """torch.compile the decoder body for training: fewer kernel launches; the first steps pay the compile.
    Follows the eager loss curve to float rounding when `deterministic` (dropout draws the eager masks)."""
    compile_mode: Literal[COMPILE_MODES] = "default"
    """torch.compile mode: default, reduce-overhead (CUDA graphs; needs length_bucket), max-autotune,
    max-autotune-no-cudagraphs."""
    length_bucket: int = Field(0, ge=0)
    """Pad each training batch to a multiple of this many positions (0: to its longest row). Gives compiled
    graphs a few static shapes. Exact without LoRA dropout; with it, the masks are drawn over another shape."""
    merge_lora_for_eval: bool = False
    """Evaluation: fold LoRA into the base weights while decoding (one matmul per layer instead of three);
    the exact weights are restored after. Same answers up to float rounding."""
    target_logits_only: bool = True
    """Compute vocabulary logits only where a label exists (exact; saves memory). False: every position."""
    feature_cache: Literal[FEATURE_CACHE_MODES] = "off"
    """Encoder-feature cache: off, memory (this process) or disk (under cache_dir, shared by every run of the
    encoder), keyed by encoder identity + clip + its exact samples (so per crop); exact for deterministic,
    padding-independent encoders. See docs/speed.md."""
    max_bad_fraction: float = Field(0.01, ge=0, le=1)
    """Stop when more than this fraction of a dataset's distinct examples is unusable (each counted once)."""
    max_new_tokens: int = Field(150, ge=1)
    """Evaluation: longest generated answer."""
    repetition_penalty: float = Field(1.05, gt=0)  # generation divides logits by it
    """Evaluation: repetition penalty over generated tokens."""
    eval_batch_size: int | None = Field(None, ge=1)
    """Evaluation: override every eval task's batch size (None: use each task's)."""
    data_home: str | None = Field(None, min_length=1)
    """Shard cache root (None: $LALMBENCH_DATA_HOME, $XARES_DATA_HOME, ./xares_data)."""
    cache_dir: str | None = Field(None, min_length=1)
    """Where `feature_cache: disk` stores encoder features, shared by every run of the same encoder (None:
    <data home>/feature_cache). Safe for several runs at once; clear it with `rm -r`."""
    torch_num_threads: int | None = Field(None, ge=1)
    """CPU threads for torch (None: torch's default)."""
    device: str | None = Field(None, pattern=r"^(cpu|cuda(:[0-9]+)?|mps)$")
    """cpu, cuda, cuda:N, mps (None: cuda when available)."""

    # Settings that change neither the trained weights nor the scores (logging, workers, device, paths).
    NOT_IN_IDENTITY: ClassVar[tuple[str, ...]] = (
        "config_name", "logging_steps", "save_steps", "save_total_limit", "num_workers", "num_training_workers",
        "data_home", "cache_dir", "torch_num_threads", "device")
    # Settings that change the scores and not the trained weights: changing one re-evaluates, never retrains.
    EVALUATION_ONLY: ClassVar[tuple[str, ...]] = (
        "max_new_tokens", "repetition_penalty", "eval_crop_audio_length", "eval_batch_size", "merge_lora_for_eval",
        "max_bad_fraction")

    @field_validator("train_data", mode="before")
    @classmethod
    def datasets_named_by_key(cls, value: Any) -> Any:
        """Each dataset's name is its key; an empty `train_data:` reads as null."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            return value
        for name, spec in value.items():
            if isinstance(spec, dict) and "name" in spec:
                raise ValueError(f"{name}: `name` is not a dataset field: a dataset is named by its key "
                                 f"({str(name)!r}); remove `name: {spec['name']}` or rename the key")
        return {str(name): {**spec, "name": str(name)} if isinstance(spec, dict) else spec
                for name, spec in value.items()}

    @model_validator(mode="after")
    def settings_together(self) -> "TrainConfig":
        """Rules between settings; each setting's own type and range are beside it above."""
        if self.compile and self.compile_mode in ("reduce-overhead", "max-autotune") and not self.length_bucket:
            raise ValueError(f"compile_mode {self.compile_mode} records CUDA graphs, which need a few static "
                             f"shapes: set length_bucket too (e.g. 64)")
        if self.num_training_workers is not None and "num_workers" not in self.model_fields_set:
            self.num_workers = self.num_training_workers
        return self

    @classmethod
    def from_mapping(cls, raw: dict, config_name: str = "default") -> "TrainConfig":
        """Build from a YAML mapping merged with overrides; every problem goes into one ConfigError."""
        try:
            return cls.model_validate({"config_name": config_name, **raw})
        except pydantic.ValidationError as error:
            raise ConfigError("invalid train config:\n  - " + "\n  - ".join(config_problems(error, cls))) from None

    def identity_dict(self) -> dict:
        """The settings the trained weights depend on (the training identity keys the run directory).

        The feature cache is left out when it is exact (deterministic runs: a hit returns what the encoder
        computed for the same samples), so turning it on for an interrupted run resumes that run.

        Under `official` the training order is the published loader's, which its number of loader workers
        (`num_training_workers`) shapes: that number is part of the identity there (`data_order`)."""
        left_out = self.NOT_IN_IDENTITY + self.EVALUATION_ONLY + (("feature_cache",) if self.deterministic else ())
        identity = self.model_dump(exclude=set(left_out))
        if self.protocol == "official":
            identity["data_order"] = {"stream": "published", "loader_workers": self.num_training_workers or 0}
        return identity

    def evaluation_dict(self) -> dict:
        """The evaluation-only settings (part of each test set's evaluation identity)."""
        return {name: getattr(self, name) for name in self.EVALUATION_ONLY}


class EvalTaskConfig(BaseModel):
    """One test set: its shards, metric and weight in the Overall score."""

    model_config = STRICT

    name: str = Field(exclude=True)
    """Test set name: the key of the eval YAML mapping, which sets it."""
    data: DatasetSpec
    """The test set's shards and how an example becomes (prompt, target)."""
    metric: str
    """Metric name (`lalmbench.metrics.available()`)."""
    metric_args: dict = {}
    """Keyword arguments of the metric."""
    batch_size: int = Field(32, ge=1)
    """Test examples decoded together."""
    num_workers: int = Field(0, ge=0)
    """Processes that decode test audio ahead of evaluation."""
    weight: float = Field(1.0, ge=0)
    """Weight of this test set's score in the Overall (a weighted mean)."""

    @field_validator("metric_args", mode="before")
    @classmethod
    def empty_is_null(cls, value: Any) -> Any:
        return {} if value is None else value  # an empty YAML mapping reads as null

    @field_validator("metric")
    @classmethod
    def registered_metric(cls, value: str) -> str:
        from lalmbench import metrics

        if value not in metrics.available():
            raise ValueError(f"unknown metric {value!r}.{did_you_mean(value, metrics.available())} "
                             f"Available: {', '.join(metrics.available())}")
        return value


# How an unknown key is named, and where the allowed ones are listed, per model.
_KEY_WORDS = {TrainConfig: ("setting", "every setting: `lalmbench run --help`"),
              DatasetSpec: ("dataset field", None), EvalTaskConfig: ("field", None)}


def config_problems(error: pydantic.ValidationError, model: type[BaseModel], where: str = "") -> list[str]:
    """One line per problem pydantic found in a mapping validated as `model`: the key (dotted after `where`),
    the value given and what is allowed; an unknown key with the closest known one ("did you mean")."""
    # kept by hand: str(ValidationError) has no did-you-mean and no file, and spends three lines per problem
    problems = []
    for problem in sorted(error.errors(include_url=False), key=lambda p: p["type"] != "extra_forbidden"):
        loc = [str(part) for part in problem["loc"]]
        path = ".".join([where] * bool(where) + loc)
        if problem["type"] == "extra_forbidden":
            owner = model if len(loc) == 1 else DatasetSpec  # the only model nested in the others
            known = [name for name in owner.model_fields if name != "name"]
            what, listed = _KEY_WORDS[owner]
            parent = ".".join([where] * bool(where) + loc[:-1])
            hint = did_you_mean(loc[-1], known) or f" ({listed or 'allowed: ' + ', '.join(known)})"
            problems.append(f"{parent + ': ' if parent else ''}unknown {what} {loc[-1]!r}.{hint}")
        elif problem["type"] == "value_error":  # our own validators' messages name the value
            problems.append(f"{path + ': ' if path else ''}{problem['ctx']['error']}")
        elif problem["type"] == "missing":
            problems.append(f"{path}: missing (required)")
        else:
            value = problem["input"]
            hint = ""
            if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
                hint = " (text: write the number without quotes)"
            problems.append(f"{path}: got {value!r}{hint}; {problem['msg'][0].lower()}{problem['msg'][1:]}")
    return problems


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc


def resolve_config_path(kind: str, name_or_path: str) -> Path:
    """A built-in suite/dataset name or a YAML file -> the YAML path. `kind` is train or eval."""
    from lalmbench.tasks import catalog

    builtin = catalog.builtin_config_path(kind, name_or_path)
    if builtin is not None:
        return builtin
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = catalog.builtin_names(kind)
    raise ConfigError(
        f"unknown {kind} config {name_or_path!r}: it is neither a built-in name nor a YAML file."
        f"{did_you_mean(name_or_path, names)} "
        f"Built-in {kind} configs: {', '.join(names) if names else '(none)'}; see `lalmbench tasks`."
    )


def load_train_config(name_or_path: str, overrides: dict | None = None) -> TrainConfig:
    path = resolve_config_path("train", name_or_path)
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a train config must be a mapping with train_data, got {type(raw).__name__}")
    merged = {**raw, **(overrides or {})}
    name = name_or_path if not Path(name_or_path).is_file() else path.stem
    config = TrainConfig.from_mapping(merged, config_name=merged.get("config_name", name))
    if not config.train_data:
        raise ConfigError(f"{path}: train_data is empty; a train config needs at least one dataset")
    return config


def load_eval_configs(name_or_path: str, overrides: dict | None = None) -> list[EvalTaskConfig]:
    path = resolve_config_path("eval", name_or_path)
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: an eval config must map eval names to {{data, metric, ...}}")
    return eval_configs_from_mapping(raw, str(path))


def eval_configs_from_mapping(raw: dict, where: str = "eval config") -> list[EvalTaskConfig]:
    """Every test set of an eval mapping (name -> entry), each named by its key; every problem in one ConfigError."""
    problems: list[str] = []
    tasks = []
    for name, entry in raw.items():
        if isinstance(entry, dict):
            for part, fields in (("", entry), (".data", entry.get("data"))):
                if isinstance(fields, dict) and "name" in fields:
                    problems.append(f"{where}: {name}{part}: `name` is not a field: a test set is named by its key "
                                    f"({str(name)!r}); remove `name: {fields['name']}` or rename the key")
            entry = {**entry, "name": str(name)}
            if isinstance(entry.get("data"), dict):
                entry["data"] = {**entry["data"], "name": str(name)}
        try:
            tasks.append(EvalTaskConfig.model_validate(entry))
        except pydantic.ValidationError as error:
            problems += config_problems(error, EvalTaskConfig, f"{where}: {name}")
    if not problems:
        problems += weight_problems(tasks, where)
    if problems:
        raise ConfigError("invalid eval config:\n  - " + "\n  - ".join(problems))
    return tasks


def weight_problems(tasks: list[EvalTaskConfig], where: str = "eval config") -> list[str]:
    """Overall is the weighted mean of the test sets' scores: with every weight 0 it is 0/0, so such a
    config is refused rather than scored as nan."""
    if not tasks or any(task.weight > 0 for task in tasks):
        return []
    return [f"{where}: every test set has weight 0 ({', '.join(t.name for t in tasks)}), so the Overall score "
            "(their weighted mean) is undefined; give at least one a weight > 0 (weight: 1 is the default)"]


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)
