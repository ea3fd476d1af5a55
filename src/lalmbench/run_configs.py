"""A run's train and eval configs, resolved: loaded, EVAL defaulting to TRAIN, narrowed by `--tasks`, and
shown by `--print-config`.

    resolve_configs(TRAIN, EVAL, overrides, task_names) -> (TrainConfig, [EvalTaskConfig], eval name)
    configs_yaml(config, tasks)                          -> the two YAML documents --print-config prints

`--tasks a,b` picks datasets of a suite. A name picks a training dataset (a key of train_data) and a test
set (a key of the eval config) that name the same dataset: the catalog's name for it (`esc-50`), or the
key itself compared without case and without the `eval_` prefix of eval keys (`ESC-50`, `eval_esc-50` and
`esc-50` are one name). Every name must pick something; one that picks nothing stops the run with the
names there are (and a did-you-mean). The picked datasets are the run's:
- the training mixture keeps them with their own `prob` (mixture weights are relative to each other);
- the Overall averages the picked test sets by their weights;
- the train config's name becomes `<name>@<picked>` (`task1@esc-50,gtzan`, in the config's order), so
  the run directory, run_summary.json and the leaderboard say the run covers part of the suite.
The training mixture is part of the training identity, so a subset run never reuses a full-suite run
(nor the reverse). Picking every dataset changes nothing: the run is the full one.
"""

from __future__ import annotations

from pathlib import Path

from lalmbench.config import (EvalTaskConfig, TrainConfig, dump_yaml, load_eval_configs, load_train_config,
                              weight_problems)
from lalmbench.errors import ConfigError, did_you_mean

SUBSET_MARK = "@"  # task1@esc-50,gtzan: shell-safe in a path (no glob characters)
EVAL_PREFIX = "eval_"


def parse_task_names(text: str | None) -> list[str]:
    """`--tasks esc-50,gtzan` -> ["esc-50", "gtzan"] (spaces and empty items ignored, order and repeats kept out)."""
    if text is None:
        return []
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise ConfigError(f"--tasks names no dataset: {text!r}. Example: --tasks esc-50,gtzan "
                          "(`lalmbench tasks` lists the names)")
    return names


def _plain(name: str) -> str:
    name = name.strip().lower()
    return name[len(EVAL_PREFIX):] if name.startswith(EVAL_PREFIX) else name


def dataset_name(key: str, kind: str) -> str:
    """The name `--tasks` knows a train_data key (`kind` train) or an eval key (`kind` eval) by: the catalog's
    name for a built-in dataset (LibriSpeechGender -> librispeech-gender), else the key in lower case
    without `eval_`."""
    from lalmbench.tasks.catalog import load_catalog

    catalog = load_catalog()
    info = catalog.by_train_name(key) if kind == "train" else catalog.by_eval_name(key)
    return info.name if info is not None else _plain(key)


def select_tasks(config: TrainConfig, tasks: list[EvalTaskConfig],
                 names: list[str]) -> tuple[TrainConfig, list[EvalTaskConfig]]:
    """The configs narrowed to the datasets `names` pick (module docstring)."""
    train_names = {key: dataset_name(key, "train") for key in config.train_data}
    eval_names = {task.name: dataset_name(task.name, "eval") for task in tasks}
    known = list(dict.fromkeys([*train_names.values(), *eval_names.values()]))
    wanted = {}
    for name in names:
        plain = _plain(name)
        if plain not in known:
            raise ConfigError(f"--tasks: {name!r} is not a dataset of train config {config.config_name!r} or its "
                              f"eval config.{did_you_mean(plain, known)} Datasets there: {', '.join(known)}")
        wanted[plain] = None
    train_data = {key: spec for key, spec in config.train_data.items() if train_names[key] in wanted}
    picked_tasks = [task for task in tasks if eval_names[task.name] in wanted]
    if not train_data:
        raise ConfigError(f"--tasks {','.join(names)} picks no training dataset of {config.config_name!r} (it trains "
                          f"on {', '.join(dict.fromkeys(train_names.values()))}); training needs at least one")
    if not picked_tasks:
        raise ConfigError(f"--tasks {','.join(names)} picks no test set of the eval config (its test sets: "
                          f"{', '.join(eval_names.values())}); add one of them")
    zero_weights = weight_problems(picked_tasks, f"--tasks {','.join(names)}")
    if zero_weights:
        raise ConfigError(zero_weights[0])
    if len(train_data) == len(config.train_data) and len(picked_tasks) == len(tasks):
        return config, tasks
    picked = [name for name in known if name in wanted]
    subset_name = f"{config.config_name}{SUBSET_MARK}{','.join(picked)}"
    return config.model_copy(update={"train_data": train_data, "config_name": subset_name}), picked_tasks


def resolve_configs(train: str, eval: str | None, overrides: dict | None = None,
                    task_names: list[str] | None = None) -> tuple[TrainConfig, list[EvalTaskConfig], str]:
    """(train config with overrides, eval task configs, the eval config's name or path). EVAL defaults to
    TRAIN's built-in name; `task_names` narrow both (module docstring)."""
    config = load_train_config(train, overrides)
    if eval is None:
        if Path(train).is_file():
            raise ConfigError(f"TRAIN is a file ({train}); also name the EVAL config (a built-in name or YAML file)")
        eval = train
    tasks = load_eval_configs(eval)
    if task_names:
        config, tasks = select_tasks(config, tasks, task_names)
    return config, tasks, eval


def run_directory(output_dir: str | Path, config: TrainConfig, encoder_name: str) -> Path:
    """Where a run of `config` on the encoder named `encoder_name` goes: <output-dir>/<train config>/<encoder>
    (a run of another training identity already there sends this one to <encoder>-<hash8>, see phases.run_directory)."""
    return Path(output_dir) / Path(config.config_name).name / encoder_name


def configs_yaml(config: TrainConfig, tasks: list[EvalTaskConfig], limit: int | None = None,
                 run_dir: Path | None = None) -> str:
    """The resolved configs as two YAML documents in the published format, train first: each loads back
    as a train or eval config file (`lalmbench run ENCODER train.yaml eval.yaml`). `run_dir`, when given,
    is named in a comment (the directory the run would write)."""
    train_doc = f"# train config {config.config_name}, resolved (YAML, --args and flags applied)\n"
    if run_dir is not None:
        train_doc += (f"# run directory: {run_dir} ({run_dir.name}-<hash8> beside it if a run of another training "
                      "identity is there)\n")
        if limit is not None:
            train_doc += f"# --limit {limit} results: {partial_results_dir(run_dir, limit)}\n"
    eval_doc = "# eval config, resolved\n"
    if limit is not None:
        eval_doc += f"# --limit {limit}: only the first {limit} test examples of each test set are evaluated\n"
    return (train_doc + dump_yaml(config.model_dump()) + "---\n"
            + eval_doc + dump_yaml({task.name: task.model_dump() for task in tasks}))


# -- --limit: partial evaluations ---------------------------------------------------------------------------------
PARTIAL_DIR_PREFIX = "limit-"


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit must be a whole number of test examples, at least 1; got {limit!r}")


def partial_results_dir(run_dir: Path, limit: int) -> Path:
    """Where a `--limit` evaluation's files go: beside, never over, the run's full evaluation (scores.tsv,
    predictions, cached scores, run_summary.json, COMPLETED, report), so a partial score is never read
    or reused as a full one. Training stays in the run directory and is shared."""
    return run_dir / f"{PARTIAL_DIR_PREFIX}{limit}"
