"""Typed train and eval configurations, read from YAML in the published system's format.

Precedence, one rule everywhere: command line (`--args` JSON) over YAML over the defaults below.
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

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import pydantic
import yaml
from pydantic import Field

from lalmbench.errors import ConfigError, did_you_mean
from lalmbench.protocols import DEFAULT_PROTOCOL, PROTOCOLS  # the two named protocols (protocols.py)

DEFAULT_DECODER = "HuggingFaceTB/SmolLM2-135M"


@dataclass
class DatasetSpec:
    """One dataset: where its shards are and how an example becomes (prompt, target)."""

    data: list[str]
    """Shard patterns (brace expansion and globs); relative to the data home when repo_id is set."""
    prompt: str = ""
    """The instruction given to the decoder before the target."""
    key: str | None = None
    """JSON field(s) holding the target, `a;b;c`: the first present wins."""
    prob: float | None = None
    """Mixture weight; unset means proportional to the number of shards."""
    repo_id: str | None = None
    """Hub dataset repo the shards come from (None: local files)."""
    revision: str | None = None
    """Branch, tag or commit of repo_id to fetch the shards at (None: main); the run records the commit."""
    name: str = ""
    """Dataset name (the key of the YAML mapping)."""

    @classmethod
    def from_dict(cls, name: str, raw: Any, problems: list[str], where: str) -> "DatasetSpec | None":
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a mapping with data/prompt/key, got {type(raw).__name__}")
            return None
        allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        problems += unknown_field_problems(raw, allowed, "dataset field", f"allowed: {', '.join(allowed)}", f"{where}: ")
        raw = {k: v for k, v in raw.items() if k in allowed}
        if isinstance(raw.get("data"), str):  # one pattern may stand for a list of one
            raw["data"] = [raw["data"]]
        if "data" not in raw:
            problems.append(f"{where}.data: missing; a dataset needs its shard pattern(s)")
        values = validated_fields(cls, raw, f"{where}.", problems)
        return cls(name=name, **values) if "data" in values else None

    def to_dict(self) -> dict:
        out = {"data": list(self.data), "prompt": self.prompt, "key": self.key}
        if self.prob is not None:
            out["prob"] = self.prob
        if self.repo_id is not None:
            out["repo_id"] = self.repo_id
        if self.revision is not None:
            out["revision"] = self.revision
        return out


@dataclass
class TrainConfig:
    """Everything that shapes training. Defaults are the official protocol (docs/protocol.md)."""

    train_data: dict[str, DatasetSpec] = field(default_factory=dict)
    """The training mixture: dataset name -> DatasetSpec."""
    config_name: str = "default"
    """Name of the train config (YAML stem or built-in name); the run directory uses it."""
    protocol: str = DEFAULT_PROTOCOL
    """official: every number as the published system computes it (default); corrected: lalmbench's fixes
    (truly frozen encoder, padding-independent packing and evaluation, soxr resampling, stricter targets)."""
    decoder_model_name: str = DEFAULT_DECODER
    """Hub name, local directory, a .gguf file, or `tiny-random`."""
    max_steps: int = 10_000
    """Optimizer steps to train."""
    learning_rate: float = 1e-4
    """AdamW peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 200
    """Linear warm-up steps, then linear decay to 0 at max_steps."""
    max_grad_norm: float = 1.0
    """Gradient clipping (global L2 norm)."""
    per_device_train_batch_size: int = 4
    """Largest micro-batch on one device; below its share of the global batch, gradients accumulate."""
    global_batch_size: int | None = None
    """Examples per optimizer step over all ranks; None keeps the protocol's 4 (docs/multi_gpu.md)."""
    seed: int = 42
    """Seed for weights, data order and crops."""
    save_steps: int = 200
    """Write a checkpoint every this many steps (and at the end)."""
    save_total_limit: int = 2
    """Checkpoints kept (oldest removed first); the newest complete one is never removed."""
    logging_steps: int = 100
    """Write a line to the text log every this many steps (the CSV loss log has every step)."""
    crop_audio_length: float = 30.0
    """Training clips are randomly cropped to at most this many seconds."""
    eval_crop_audio_length: float | None = None
    """Evaluation clips are cut to their first this many seconds (None: whole clip, as published)."""
    sample_rate: int = 16_000
    """Sample rate the encoder receives."""
    shuffle_buffer: int = 256
    """Examples in the training shuffle buffer."""
    sort_buffer: int = 128
    """Examples sorted by length (audio seconds + text tokens, longest first) before batching."""
    num_workers: int = 0
    """Processes that decode and resample audio ahead of the training loop (0: in the main process)."""
    num_training_workers: int | None = None
    """The published configs' name for num_workers (their single-dataset train configs set 4). A YAML or
    --args that gives it without num_workers sets num_workers to it; num_workers, when given, wins."""
    deterministic: bool = True
    """Deterministic algorithms and fixed seeds (reproducible; the default)."""
    bf16: bool = False
    """bf16 autocast for the decoder and encoder (not bit-reproducible; faster on GPUs, measure on CPUs)."""
    tf32: bool = False
    """Allow TF32 matmuls on Ampere+ GPUs (faster, not bit-reproducible)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.1
    """LoRA dropout."""
    compile: bool = False
    """torch.compile the decoder body for training: fewer kernel launches; the first steps pay the compile.
    Follows the eager loss curve to float rounding when `deterministic` (dropout draws the eager masks)."""
    compile_mode: str = "default"
    """torch.compile mode: default, reduce-overhead (CUDA graphs; needs length_bucket), max-autotune,
    max-autotune-no-cudagraphs."""
    length_bucket: int = 0
    """Pad each training batch to a multiple of this many positions (0: to its longest row). Gives compiled
    graphs a few static shapes. Exact without LoRA dropout; with it, the masks are drawn over another shape."""
    merge_lora_for_eval: bool = False
    """Evaluation: fold LoRA into the base weights while decoding (one matmul per layer instead of three);
    the exact weights are restored after. Same answers up to float rounding."""
    target_logits_only: bool = True
    """Compute vocabulary logits only where a label exists (exact; saves memory). False: every position."""
    feature_cache: str = "off"
    """Encoder-feature cache: off, memory (this process) or disk (under cache_dir, shared by every run of the
    encoder), keyed by encoder identity + clip + its exact samples (so per crop); exact for deterministic,
    padding-independent encoders. See docs/speed.md."""
    max_bad_fraction: float = 0.01
    """Stop when more than this fraction of a dataset's distinct examples is unusable (each counted once)."""
    max_new_tokens: int = 150
    """Evaluation: longest generated answer."""
    repetition_penalty: float = 1.05
    """Evaluation: repetition penalty over generated tokens."""
    eval_batch_size: int | None = None
    """Evaluation: override every eval task's batch size (None: use each task's)."""
    data_home: str | None = None
    """Shard cache root (None: $LALMBENCH_DATA_HOME, $XARES_DATA_HOME, ./xares_data)."""
    cache_dir: str | None = None
    """Where `feature_cache: disk` stores encoder features, shared by every run of the same encoder (None:
    <data home>/feature_cache). Safe for several runs at once; clear it with `rm -r`."""
    torch_num_threads: int | None = None
    """CPU threads for torch (None: torch's default)."""
    device: str | None = None
    """cpu, cuda, cuda:N (None: cuda when available)."""

    # Settings that change neither the trained weights nor the scores (logging, workers, device, paths).
    _NOT_IN_IDENTITY = ("config_name", "logging_steps", "save_steps", "save_total_limit", "num_workers",
                        "num_training_workers",
                        "data_home", "cache_dir", "torch_num_threads", "device")
    # Settings that change the scores and not the trained weights: changing one re-evaluates, never retrains.
    EVALUATION_ONLY = ("max_new_tokens", "repetition_penalty", "eval_crop_audio_length", "eval_batch_size",
                       "merge_lora_for_eval", "max_bad_fraction")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, raw: dict, config_name: str = "default") -> "TrainConfig":
        """Build from a YAML mapping merged with overrides; every problem goes into one ConfigError."""
        problems: list[str] = []
        raw = dict(raw)
        known = cls.field_names()
        problems += unknown_field_problems(raw, known, "setting", "every setting: `lalmbench run --help`")
        train_data_raw = raw.pop("train_data", None) or {}
        if not isinstance(train_data_raw, dict):
            problems.append(f"train_data: expected a mapping name -> dataset, got {type(train_data_raw).__name__}")
            train_data_raw = {}
        specs = {}
        for name, spec in train_data_raw.items():
            parsed = DatasetSpec.from_dict(str(name), spec, problems, f"train_data.{name}")
            if parsed is not None:
                specs[str(name)] = parsed
        kwargs = validated_fields(cls, {k: v for k, v in raw.items() if k in known}, "", problems)
        kwargs.setdefault("config_name", config_name)
        if isinstance(kwargs.get("num_training_workers"), int) and "num_workers" not in kwargs:
            kwargs["num_workers"] = kwargs["num_training_workers"]
        config = cls(train_data=specs, **kwargs)
        problems.extend(config._check())
        if problems:
            raise ConfigError("invalid train config:\n  - " + "\n  - ".join(problems))
        return config

    def _check(self) -> list[str]:
        """Rules between settings; each setting's own type and range are in TRAIN_RULES."""
        problems = []
        if self.compile and self.compile_mode in ("reduce-overhead", "max-autotune") and not self.length_bucket:
            problems.append(f"compile_mode {self.compile_mode} records CUDA graphs, which need a few static shapes: "
                            f"set length_bucket too (e.g. 64)")
        return problems

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "train_data":
                value = {name: spec.to_dict() for name, spec in value.items()}
            out[f.name] = value
        return out

    def identity_dict(self) -> dict:
        """The settings the trained weights depend on (the training identity keys the run directory).

        The feature cache is left out when it is exact (deterministic runs: a hit returns what the encoder
        computed for the same samples), so turning it on for an interrupted run resumes that run.

        Under `official` the training order is the published loader's, which its number of loader workers
        (`num_training_workers`) shapes: that number is part of the identity there (`data_order`)."""
        left_out = self._NOT_IN_IDENTITY + self.EVALUATION_ONLY + (("feature_cache",) if self.deterministic else ())
        identity = {k: v for k, v in self.to_dict().items() if k not in left_out}
        if self.protocol == "official":
            identity["data_order"] = {"stream": "published", "loader_workers": self.num_training_workers or 0}
        return identity

    def evaluation_dict(self) -> dict:
        """The evaluation-only settings (part of each test set's evaluation identity)."""
        return {name: getattr(self, name) for name in self.EVALUATION_ONLY}


@dataclass
class EvalTaskConfig:
    """One test set: its shards, metric and weight in the Overall score."""

    name: str
    data: DatasetSpec
    metric: str
    metric_args: dict = field(default_factory=dict)
    batch_size: int = 32
    num_workers: int = 0
    weight: float = 1.0

    def to_dict(self) -> dict:
        return {"data": self.data.to_dict(), "metric": self.metric, "metric_args": dict(self.metric_args),
                "batch_size": self.batch_size, "num_workers": self.num_workers, "weight": self.weight}


# -- validation ------------------------------------------------------------------------------------------------
# A setting's type is its annotation above; these tables add the values it may take. The checks are
# pydantic's, strict: "8" is not 8, 1 is not true, 8.0 is not an integer; an integer may stand for a number.

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FEATURE_CACHE_MODES = ("off", "memory", "disk")

TRAIN_RULES: dict[str, Any] = {
    "config_name": Field(min_length=1),
    "protocol": Literal[PROTOCOLS],
    "decoder_model_name": Field(min_length=1),
    "max_steps": Field(ge=1),
    "learning_rate": Field(gt=0),
    "weight_decay": Field(ge=0),
    "warmup_steps": Field(ge=0),
    "max_grad_norm": Field(gt=0),  # 0 would zero every gradient, not switch clipping off
    "per_device_train_batch_size": Field(ge=1),
    "global_batch_size": Field(ge=1),
    "seed": Field(ge=0),
    "save_steps": Field(ge=1),
    "save_total_limit": Field(ge=1),  # the newest checkpoint is always kept: 0 cannot be honoured
    "logging_steps": Field(ge=1),
    "crop_audio_length": Field(gt=0),
    "eval_crop_audio_length": Field(gt=0),
    "sample_rate": Field(ge=1000),
    "shuffle_buffer": Field(ge=1),
    "sort_buffer": Field(ge=1),
    "num_workers": Field(ge=0),
    "num_training_workers": Field(ge=0),
    "lora_r": Field(ge=1),
    "lora_alpha": Field(gt=0),
    "lora_dropout": Field(ge=0, lt=1),
    "compile_mode": Literal[COMPILE_MODES],
    "length_bucket": Field(ge=0),
    "feature_cache": Literal[FEATURE_CACHE_MODES],
    "max_bad_fraction": Field(ge=0, le=1),
    "max_new_tokens": Field(ge=1),
    "repetition_penalty": Field(gt=0),  # generation divides logits by it
    "eval_batch_size": Field(ge=1),
    "data_home": Field(min_length=1),
    "cache_dir": Field(min_length=1),
    "torch_num_threads": Field(ge=1),
    "device": Field(pattern=r"^(cpu|cuda(:[0-9]+)?|mps)$", description="cpu, cuda, cuda:N, mps"),
}
DATASET_RULES: dict[str, Any] = {
    "data": Field(min_length=1),
    "prob": Field(gt=0),
    "repo_id": Field(min_length=1),
}
EVAL_TASK_RULES: dict[str, Any] = {
    "metric": Field(min_length=1),
    "batch_size": Field(ge=1),
    "num_workers": Field(ge=0),
    "weight": Field(ge=0),
}
_RULES = {TrainConfig: TRAIN_RULES, DatasetSpec: DATASET_RULES, EvalTaskConfig: EVAL_TASK_RULES}
_STRICT = pydantic.ConfigDict(strict=True, allow_inf_nan=False)


def unknown_field_problems(raw: dict, known: list[str], what: str, where_listed: str, where: str = "") -> list[str]:
    """One problem per unknown key, with the closest known name when one is close ("did you mean")."""
    problems = []
    for key in sorted(set(raw) - set(known), key=str):
        hint = did_you_mean(str(key), known) or f" ({where_listed})"
        problems.append(f"{where}unknown {what} {key!r}.{hint}")
    return problems


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


@functools.cache
def _field_check(owner: type, name: str) -> tuple[pydantic.TypeAdapter, str]:
    """(validator, allowed values in words) of one dataclass field: its annotation plus its rule."""
    annotation = typing.get_type_hints(owner)[name]
    rule = _RULES[owner].get(name)
    if isinstance(rule, pydantic.fields.FieldInfo):
        annotation = Annotated[annotation, rule]
    elif rule is not None:  # a Literal of choices replaces the plain str, optional where the field is
        annotation = typing.Optional[rule] if _is_optional(annotation) else rule
    return pydantic.TypeAdapter(annotation, config=_STRICT), _describe(annotation)


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}
_BOUNDS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
           (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<"))


def _describe(annotation: Any) -> str:
    """The values an annotation admits, in words: 'an integer >= 1, or null', 'one of off, memory, disk'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        base, *extras = args
        if _is_optional(base):
            inner = next(a for a in typing.get_args(base) if a is not type(None))
            return _describe(Annotated[(inner, *extras)]) + ", or null"
        words, bounds = _describe(base), []
        for extra in extras:
            if getattr(extra, "description", None):
                return extra.description
            for item in getattr(extra, "metadata", []):
                bounds += [f"{sign} {getattr(item, attribute)}" for kind, attribute, sign in _BOUNDS
                           if isinstance(item, kind)]
                if isinstance(item, annotated_types.MinLen) and item.min_length == 1:
                    words = words.replace("a ", "a non-empty ", 1)
        return " ".join([words, " and ".join(bounds)]) if bounds else words
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        words = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(words) + (", or null" if _is_optional(annotation) else "")
    if origin is list:
        return f"a list of {_describe(args[0]).replace('a ', '', 1)}s" if args else "a list"
    return _TYPE_WORDS.get(origin or annotation, getattr(annotation, "__name__", str(annotation)))


def validated_fields(owner: type, raw: dict, where: str, problems: list[str]) -> dict:
    """The entries of `raw` that pass their field's check; one problem per field that does not, naming
    the field, the value and what is allowed."""
    values = {}
    for name, value in raw.items():
        adapter, allowed = _field_check(owner, name)
        try:
            values[name] = adapter.validate_python(value)
        except pydantic.ValidationError:
            hint = ""
            if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
                hint = " (text: write the number without quotes)"
            problems.append(f"{where}{name}: got {value!r}{hint}; allowed: {allowed}")
    return values


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
    from lalmbench.errors import did_you_mean

    raise ConfigError(
        f"unknown {kind} config {name_or_path!r}: it is neither a built-in name nor a YAML file."
        f"{did_you_mean(name_or_path, names)} "
        f"Built-in {kind} configs: {', '.join(names) if names else '(none)'}; see `lalmbench tasks`."
    )


def parse_json_arg(text: str | None, option: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} is not valid JSON ({exc.msg} at column {exc.colno}): {text!r}. "
                          f"Example: {option} '{{\"max_steps\": 100}}'") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object like '{{\"key\": value}}', got {text!r}")
    return value


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
    from lalmbench import metrics

    problems: list[str] = []
    tasks = []
    allowed = [f.name for f in dataclasses.fields(EvalTaskConfig) if f.name != "name"]
    for name, entry in raw.items():
        here = f"{where}: {name}"
        if not isinstance(entry, dict):
            problems.append(f"{here}: expected a mapping, got {type(entry).__name__}")
            continue
        problems += unknown_field_problems(entry, allowed, "field", f"allowed: {', '.join(allowed)}", f"{here}: ")
        spec = DatasetSpec.from_dict(str(name), entry.get("data"), problems, f"{here}.data")
        scalars = {k: v for k, v in entry.items() if k in allowed and k != "data"}
        if scalars.get("metric_args", {}) is None:  # an empty YAML mapping reads as null
            scalars["metric_args"] = {}
        found = len(problems)
        values = validated_fields(EvalTaskConfig, scalars, f"{here}.", problems)
        metric = entry.get("metric")
        if metric not in metrics.available():
            problems.append(f"{here}.metric: unknown metric {metric!r}.{did_you_mean(str(metric), metrics.available())} "
                            f"Available: {', '.join(metrics.available())}")
        if spec is not None and len(problems) == found and "metric" in values:
            tasks.append(EvalTaskConfig(name=str(name), data=spec, **values))
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
