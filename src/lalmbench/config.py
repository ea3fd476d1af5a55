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
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lalmbench.errors import ConfigError

DEFAULT_DECODER = "HuggingFaceTB/SmolLM2-135M"

# The two named protocols (README, "Protocols"). `official` reproduces the published system's numbers,
# its defects included; `corrected` is what lalmbench believes is right. Never mixed silently.
PROTOCOLS = ("official", "corrected")
DEFAULT_PROTOCOL = "official"


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
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            problems.append(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed - {'name'})}")
        data = raw.get("data")
        if isinstance(data, str):
            data = [data]
        if not data or not isinstance(data, list) or not all(isinstance(d, str) for d in data):
            problems.append(f"{where}.data: expected a shard pattern or a list of them, got {data!r}")
            data = []
        prob = raw.get("prob")
        if prob is not None and (not isinstance(prob, (int, float)) or prob <= 0):
            problems.append(f"{where}.prob: expected a positive number, got {prob!r}")
        key = raw.get("key")
        if key is not None and not isinstance(key, str):
            problems.append(f"{where}.key: expected a string like 'label;labels', got {key!r}")
        prompt = raw.get("prompt", "")
        if not isinstance(prompt, str):
            problems.append(f"{where}.prompt: expected a string, got {prompt!r}")
        return cls(data=list(data), prompt=prompt if isinstance(prompt, str) else "", key=key,
                   prob=float(prob) if isinstance(prob, (int, float)) else None,
                   repo_id=raw.get("repo_id"), name=name)

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
    """Everything that shapes training. Defaults are the official protocol (PROTOCOL.md)."""

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
    """Encoder-feature cache: off, memory or disk, keyed by encoder identity + clip + its exact samples (so per
    crop); exact for deterministic, padding-independent encoders. See docs/speed.md."""
    max_bad_fraction: float = 0.01
    """Stop when more than this fraction of a dataset's examples is unreadable."""
    max_new_tokens: int = 150
    """Evaluation: longest generated answer."""
    repetition_penalty: float = 1.05
    """Evaluation: repetition penalty over generated tokens."""
    eval_batch_size: int | None = None
    """Evaluation: override every eval task's batch size (None: use each task's)."""
    data_home: str | None = None
    """Shard cache root (None: $LALMBENCH_DATA_HOME, $XARES_DATA_HOME, ./xares_data)."""
    torch_num_threads: int | None = None
    """CPU threads for torch (None: torch's default)."""
    device: str | None = None
    """cpu, cuda, cuda:N (None: cuda when available)."""

    # Fields that change results; everything else (logging, workers, device) does not.
    _NOT_IN_IDENTITY = ("config_name", "logging_steps", "save_steps", "save_total_limit", "num_workers",
                        "num_training_workers",
                        "data_home", "torch_num_threads", "device", "eval_batch_size",
                        "merge_lora_for_eval")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, raw: dict, config_name: str = "default") -> "TrainConfig":
        problems: list[str] = []
        raw = dict(raw)
        known = set(cls.field_names())
        unknown = sorted(k for k in raw if k not in known)
        if unknown:
            problems.append(f"unknown train field(s) {unknown}; see `lalmbench run --help` for the list")
        train_data_raw = raw.pop("train_data", None) or {}
        if not isinstance(train_data_raw, dict):
            problems.append(f"train_data: expected a mapping name -> dataset, got {type(train_data_raw).__name__}")
            train_data_raw = {}
        specs = {}
        for name, spec in train_data_raw.items():
            parsed = DatasetSpec.from_dict(str(name), spec, problems, f"train_data.{name}")
            if parsed is not None:
                specs[str(name)] = parsed
        kwargs = {}
        defaults = cls()
        for name in known - {"train_data"}:
            if name not in raw:
                continue
            value = raw[name]
            default = getattr(defaults, name)
            kwargs[name] = _coerce(name, value, default, problems)
        kwargs.setdefault("config_name", config_name)
        if isinstance(kwargs.get("num_training_workers"), int) and "num_workers" not in kwargs:
            kwargs["num_workers"] = kwargs["num_training_workers"]
        config = cls(train_data=specs, **kwargs)
        problems.extend(config._check())
        if problems:
            raise ConfigError("invalid train config:\n  - " + "\n  - ".join(problems))
        return config

    def _check(self) -> list[str]:
        problems = []
        positive_ints = ["max_steps", "per_device_train_batch_size", "save_steps", "logging_steps",
                         "shuffle_buffer", "sort_buffer", "lora_r", "max_new_tokens", "sample_rate"]
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name}: expected a positive integer, got {value!r}")
        for name in ("learning_rate", "crop_audio_length"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}: expected a positive number, got {getattr(self, name)!r}")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps: expected >= 0, got {self.warmup_steps}")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout: expected 0 <= p < 1, got {self.lora_dropout}")
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.feature_cache not in ("off", "memory", "disk"):
            problems.append(f"feature_cache: expected off, memory or disk, got {self.feature_cache!r}")
        if not 0 <= self.max_bad_fraction <= 1:
            problems.append(f"max_bad_fraction: expected a fraction in [0, 1], got {self.max_bad_fraction}")
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        if self.compile_mode not in modes:
            problems.append(f"compile_mode: expected one of {', '.join(modes)}, got {self.compile_mode!r}")
        if not isinstance(self.length_bucket, int) or self.length_bucket < 0:
            problems.append(f"length_bucket: expected an integer >= 0, got {self.length_bucket!r}")
        elif self.compile and self.compile_mode in ("reduce-overhead", "max-autotune") and not self.length_bucket:
            problems.append(f"compile_mode {self.compile_mode} records CUDA graphs, which need a few static shapes: "
                            f"set length_bucket too (e.g. 64)")
        workers = self.num_training_workers
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
            problems.append(f"num_training_workers: expected an integer >= 0, got {workers!r}")
        if self.num_workers < 0:
            problems.append(f"num_workers: expected >= 0, got {self.num_workers}")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            problems.append(f"global_batch_size: expected a positive integer, got {self.global_batch_size}")
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
        """The fields that change trained weights or scores (used to key the run directory)."""
        return {k: v for k, v in self.to_dict().items() if k not in self._NOT_IN_IDENTITY}


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


def _coerce(name: str, value: Any, default: Any, problems: list[str]) -> Any:
    """Check a scalar override against the type of its default (ints may stand for floats)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            problems.append(f"{name}: expected true or false, got {value!r}")
            return default
        return value
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{name}: expected an integer, got {value!r}")
            return default
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{name}: expected a number, got {value!r}")
            return default
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        problems.append(f"{name}: expected a string, got {value!r}")
        return default
    return value


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
        f"unknown {kind} config {name_or_path!r}: it is neither a built-in name nor a YAML file. "
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
    allowed = {"data", "metric", "metric_args", "batch_size", "num_workers", "weight"}
    for name, entry in raw.items():
        here = f"{where}: {name}"
        if not isinstance(entry, dict):
            problems.append(f"{here}: expected a mapping, got {type(entry).__name__}")
            continue
        unknown = sorted(set(entry) - allowed)
        if unknown:
            problems.append(f"{here}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
        spec = DatasetSpec.from_dict(str(name), entry.get("data"), problems, f"{here}.data")
        metric = entry.get("metric")
        if metric not in metrics.available():
            problems.append(f"{here}.metric: unknown metric {metric!r}; available: {metrics.available()}")
        batch_size = entry.get("batch_size", 32)
        if not isinstance(batch_size, int) or batch_size < 1:
            problems.append(f"{here}.batch_size: expected a positive integer, got {batch_size!r}")
        weight = entry.get("weight", 1)
        if not isinstance(weight, (int, float)) or weight < 0:
            problems.append(f"{here}.weight: expected a number >= 0, got {weight!r}")
        metric_args = entry.get("metric_args") or {}
        if not isinstance(metric_args, dict):
            problems.append(f"{here}.metric_args: expected a mapping, got {metric_args!r}")
            metric_args = {}
        if spec is not None and not problems:
            tasks.append(EvalTaskConfig(name=str(name), data=spec, metric=metric, metric_args=dict(metric_args),
                                        batch_size=batch_size, num_workers=int(entry.get("num_workers", 0) or 0),
                                        weight=float(weight)))
    if problems:
        raise ConfigError("invalid eval config:\n  - " + "\n  - ".join(problems))
    return tasks


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)
