"""The catalog of built-in train and eval configs shipped as package data.

Train configs live in `tasks/train/<name>.yaml`, eval configs in `tasks/eval/<name>.yaml`, both in the
published XARES-LLM format (config.py reads them). `tasks/catalog.yaml` says what each dataset is
(domain, task type, metric, number of classes, suites) and which configs belong to it; it is checked
against the config YAMLs when loaded, so a catalog that disagrees with the configs fails loudly.

Suites: task1, task2 and all are the published ones (their YAMLs equal the published system's). `extended`
is opt-in and never a default: task1 plus the datasets the published configs lack (`new: true`).

    builtin_names(kind)            names of the built-in train or eval configs
    builtin_config_path(kind, n)   the YAML of a built-in config (None when not built in)
    load_catalog()                 the validated Catalog (suites + datasets), cached
    Catalog.resolve(name)          a suite or dataset name -> its train/eval config names and datasets
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lalmbench.errors import ConfigError, did_you_mean

_ROOT = Path(__file__).resolve().parent
CATALOG_PATH = _ROOT / "catalog.yaml"

DOMAINS = ("speech", "sound", "music")
TASK_TYPES = ("single-label", "multi-label", "counting", "asr", "caption")
PUBLISHED_SUITES = ("task1", "task2", "all")
OPT_IN_SUITES = ("extended",)
SUITES = PUBLISHED_SUITES + OPT_IN_SUITES


def builtin_names(kind: str) -> list[str]:
    folder = _ROOT / kind
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def builtin_config_path(kind: str, name: str) -> Path | None:
    if kind not in ("train", "eval"):
        raise ValueError(f"kind must be train or eval, got {kind!r}")
    path = _ROOT / kind / f"{name}.yaml"
    return path if path.is_file() else None


@dataclass(frozen=True)
class DatasetInfo:
    """One built-in dataset (one training mixture entry and one test set)."""

    name: str
    """Lowercase catalog name; also the name of its single-dataset train and eval configs."""
    title: str
    """Human-readable name."""
    train_name: str
    """Its key in a train config's train_data (e.g. ESC-50)."""
    eval_name: str
    """Its key in an eval config (e.g. eval_esc-50)."""
    domain: str
    """speech, sound or music."""
    task_type: str
    """single-label, multi-label, counting, asr or caption."""
    metric: str
    """Metric of its test set (same as in its eval config)."""
    num_classes: int | None
    """Size of the label set where known (None for open-ended tasks or unknown)."""
    suites: tuple[str, ...]
    """Suites that include it."""
    train_config: str
    """Built-in train config of this dataset alone."""
    eval_config: str
    """Built-in eval config of this dataset alone."""
    new: bool = False
    """True for tasks that the published configs do not define (LibriSpeech gender, NSynth pitch); these
    belong only to the opt-in suite `extended`."""
    notes: str = ""
    """Where the target comes from when it is not obvious."""


@dataclass(frozen=True)
class SuiteInfo:
    """A named set of datasets trained together (one train config) and scored together (one eval config)."""

    name: str
    description: str
    train_config: str
    eval_config: str

    @property
    def published(self) -> bool:
        """True for the published system's suites; False for opt-in ones like `extended`."""
        return self.name in PUBLISHED_SUITES


@dataclass(frozen=True)
class Resolved:
    """What a name given to `lalmbench tasks` / `download` stands for."""

    name: str
    train_config: str
    eval_config: str
    datasets: tuple[DatasetInfo, ...]


@dataclass(frozen=True)
class Catalog:
    suites: dict[str, SuiteInfo]
    datasets: dict[str, DatasetInfo]

    def names(self) -> list[str]:
        """Every name `resolve` accepts: suites first, then datasets."""
        return list(self.suites) + list(self.datasets)

    def suite_datasets(self, suite: str) -> list[DatasetInfo]:
        return [d for d in self.datasets.values() if suite in d.suites]

    def by_train_name(self, train_name: str) -> DatasetInfo | None:
        return next((d for d in self.datasets.values() if d.train_name == train_name), None)

    def by_eval_name(self, eval_name: str) -> DatasetInfo | None:
        return next((d for d in self.datasets.values() if d.eval_name == eval_name), None)

    def resolve(self, name: str) -> Resolved:
        key = name.strip().lower()
        if key in self.suites:
            suite = self.suites[key]
            return Resolved(key, suite.train_config, suite.eval_config, tuple(self.suite_datasets(key)))
        if key in self.datasets:
            info = self.datasets[key]
            return Resolved(key, info.train_config, info.eval_config, (info,))
        raise ConfigError(f"unknown suite or task {name!r}.{did_you_mean(name, [*self.suites, *self.datasets])} "
                          f"Suites: {', '.join(self.suites)}. "
                          f"Tasks: {', '.join(self.datasets)}.")


def _load_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read built-in catalog file {path}: {exc}") from exc


def _parse_dataset(name: str, raw: Any, problems: list[str]) -> DatasetInfo | None:
    where = f"datasets.{name}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping, got {type(raw).__name__}")
        return None
    required = ("title", "train_name", "eval_name", "domain", "task_type", "metric", "suites",
                "train_config", "eval_config")
    optional = ("num_classes", "new", "notes")
    missing = [k for k in required if k not in raw]
    if missing:
        problems.append(f"{where}: missing field(s) {missing}")
        return None
    unknown = sorted(set(raw) - set(required) - set(optional))
    if unknown:
        problems.append(f"{where}: unknown field(s) {unknown}; allowed: {sorted(required + optional)}")
    if name != name.lower():
        problems.append(f"{where}: dataset names are lowercase, got {name!r}")
    if raw["domain"] not in DOMAINS:
        problems.append(f"{where}.domain: expected one of {list(DOMAINS)}, got {raw['domain']!r}")
    if raw["task_type"] not in TASK_TYPES:
        problems.append(f"{where}.task_type: expected one of {list(TASK_TYPES)}, got {raw['task_type']!r}")
    num_classes = raw.get("num_classes")
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 2):
        problems.append(f"{where}.num_classes: expected an integer >= 2 or null, got {num_classes!r}")
    suites = raw["suites"]
    if not isinstance(suites, list) or not all(s in SUITES for s in suites):
        problems.append(f"{where}.suites: expected a list drawn from {list(SUITES)}, got {suites!r}")
        suites = []
    elif raw.get("new", False):
        if suites != ["extended"]:
            problems.append(f"{where}.suites: a dataset the published configs lack (new: true) belongs only to "
                            f"the opt-in suite 'extended', got {suites!r}")
    elif "all" not in suites:
        problems.append(f"{where}.suites: every published dataset belongs to suite 'all', got {suites!r}")
    elif ("task1" in suites) != ("extended" in suites):
        problems.append(f"{where}.suites: suite 'extended' is task1 plus the new datasets, so a published "
                        f"dataset is in both task1 and extended or in neither, got {suites!r}")
    return DatasetInfo(name=name, title=str(raw["title"]), train_name=str(raw["train_name"]),
                       eval_name=str(raw["eval_name"]), domain=raw["domain"], task_type=raw["task_type"],
                       metric=str(raw["metric"]), num_classes=num_classes, suites=tuple(suites),
                       train_config=str(raw["train_config"]), eval_config=str(raw["eval_config"]),
                       new=bool(raw.get("new", False)), notes=str(raw.get("notes") or ""))


def _check_against_configs(suites: dict[str, SuiteInfo], datasets: dict[str, DatasetInfo],
                           problems: list[str]) -> None:
    """The catalog must agree with the config YAMLs: names, metrics, suite membership, mAP classes."""
    cache: dict[tuple[str, str], Any] = {}

    def config(kind: str, name: str) -> dict | None:
        if (kind, name) not in cache:
            path = builtin_config_path(kind, name)
            if path is None:
                problems.append(f"built-in {kind} config {name!r} (named in {CATALOG_PATH.name}) does not exist "
                                f"in {_ROOT / kind}")
                cache[(kind, name)] = None
            else:
                raw = _load_yaml(path)
                cache[(kind, name)] = raw if isinstance(raw, dict) else {}
        return cache[(kind, name)]

    for info in datasets.values():
        train = config("train", info.train_config)
        if train is not None and list((train.get("train_data") or {})) != [info.train_name]:
            problems.append(f"train/{info.train_config}.yaml: expected exactly train_data.{info.train_name}, "
                            f"got {list((train.get('train_data') or {}))}")
        evals = config("eval", info.eval_config)
        if evals is not None:
            if list(evals) != [info.eval_name]:
                problems.append(f"eval/{info.eval_config}.yaml: expected exactly {info.eval_name}, got {list(evals)}")
            entry = evals.get(info.eval_name) or {}
            if entry.get("metric") != info.metric:
                problems.append(f"{info.name}: catalog metric {info.metric!r} but eval config says "
                                f"{entry.get('metric')!r}")
            map_classes = (entry.get("metric_args") or {}).get("num_classes")
            if info.metric == "mAP" and map_classes != info.num_classes:
                problems.append(f"{info.name}: num_classes {info.num_classes} but mAP metric_args.num_classes "
                                f"is {map_classes}")
    for suite in suites.values():
        expected = [d for d in datasets.values() if suite.name in d.suites]
        train = config("train", suite.train_config)
        if train is not None:
            got = sorted(train.get("train_data") or {})
            if got != sorted(d.train_name for d in expected):
                problems.append(f"suite {suite.name}: train/{suite.train_config}.yaml has {got}, catalog says "
                                f"{sorted(d.train_name for d in expected)}")
        evals = config("eval", suite.eval_config)
        if evals is not None and sorted(evals) != sorted(d.eval_name for d in expected):
            problems.append(f"suite {suite.name}: eval/{suite.eval_config}.yaml has {sorted(evals)}, catalog "
                            f"says {sorted(d.eval_name for d in expected)}")


def parse_catalog(raw: Any, check_configs: bool = True) -> Catalog:
    """Validate a parsed catalog.yaml; every problem is reported at once (ConfigError)."""
    problems: list[str] = []
    if not isinstance(raw, dict) or set(raw) != {"suites", "datasets"}:
        raise ConfigError(f"{CATALOG_PATH}: expected a mapping with exactly 'suites' and 'datasets'")
    suites: dict[str, SuiteInfo] = {}
    for name, entry in (raw["suites"] or {}).items():
        if name not in SUITES:
            problems.append(f"suites.{name}: unknown suite; expected one of {list(SUITES)}")
        if not isinstance(entry, dict) or not {"train_config", "eval_config"} <= set(entry):
            problems.append(f"suites.{name}: expected a mapping with train_config and eval_config")
            continue
        suites[name] = SuiteInfo(name, str(entry.get("description", "")), str(entry["train_config"]),
                                 str(entry["eval_config"]))
    datasets: dict[str, DatasetInfo] = {}
    train_names: set[str] = set()
    for name, entry in (raw["datasets"] or {}).items():
        info = _parse_dataset(str(name), entry, problems)
        if info is None:
            continue
        if info.train_name in train_names:
            problems.append(f"datasets.{name}: train_name {info.train_name!r} is used twice")
        train_names.add(info.train_name)
        if name in suites:
            problems.append(f"datasets.{name}: a dataset cannot share its name with a suite")
        datasets[str(name)] = info
    if check_configs and not problems:
        _check_against_configs(suites, datasets, problems)
    if problems:
        raise ConfigError(f"invalid task catalog {CATALOG_PATH}:\n  - " + "\n  - ".join(problems))
    return Catalog(suites=suites, datasets=datasets)


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """The built-in catalog, validated against the built-in configs (cached after the first call)."""
    return parse_catalog(_load_yaml(CATALOG_PATH))
