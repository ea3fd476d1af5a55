"""Run directories and seed groups, as `compare` and `leaderboard` read them.

A `RunRecord` is what one run directory says about itself: run_summary.json (encoder, protocol, per-task
metric, arguments, weight and score), run_identity.json (what the weights depend on, seed included) and
eval_config.yaml (how each test set is defined). A `RunGroup` is one or more runs of one identity that
differ only in their training seed; its score on a task is the mean over its runs.

Where groups come from (`read_group`):
- a run directory (it holds scores.tsv): a group of one;
- a seed-group directory written by `lalmbench run --seeds N` (it holds seed_group.json): its runs;
- any other directory: every run below it, which must share one identity except the seed;
- several paths at once: all their runs, under the same rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lalmbench.errors import LalmbenchError
from lalmbench.report.confidence import TaskSpec

SEED_GROUP_FILE = "seed_group.json"
UNRECORDED = "unrecorded"  # protocol of a run written before the setting existed


@dataclass
class RunRecord:
    run_dir: Path
    name: str  # the encoder's display name
    protocol: str  # "official", "corrected", or UNRECORDED
    seed: int | None
    identity: dict  # run_identity.json "identity" ({} when absent)
    tasks: dict[str, TaskSpec]  # eval task name -> metric, score, weight, metric arguments
    eval_config: dict  # eval task name -> its resolved eval config ({} when absent)
    completed: bool = True
    partial: dict | None = None  # {"limit": N}: evaluated on the first N test examples only (`run --limit`)
    summary: dict = field(default_factory=dict)  # run_summary.json

    def settings(self) -> dict[str, str]:
        """The training and evaluation settings its scores depend on, by name -> value as text; a setting the
        run did not record is absent. The seed is left out (groups and comparisons of seeds differ in it)."""
        found: dict[str, str] = {}
        train = self.identity.get("train") if isinstance(self.identity.get("train"), dict) else {}
        for name, value in train.items():
            if name not in ("seed", "train_data"):
                found[name] = _text(value)
        if train.get("train_data") is not None:
            found["training mixture"] = _text(train["train_data"])
        decoder = self.identity.get("decoder")
        if isinstance(decoder, dict) and decoder.get("name"):
            name = str(decoder["name"])
            if decoder.get("revision"):
                name += f"@{decoder['revision']}"
            elif isinstance(decoder.get("files"), (dict, str)):  # a local directory or file: its content
                name += f" (content {hashlib.sha256(_text(decoder['files']).encode()).hexdigest()[:12]})"
            found["decoder"] = name
        elif isinstance(decoder, str):
            found["decoder"] = decoder
        elif self.summary.get("decoder"):
            found["decoder"] = str(self.summary["decoder"])
        revisions = [r for r in self.summary.get("data_revisions") or [] if isinstance(r, dict) and r.get("repo_id")]
        if revisions:
            found["data revisions"] = "; ".join(sorted(
                f"{r['repo_id']}@{r.get('revision')}: {','.join(r.get('commits') or []) or 'unrecorded'}"
                + (f" (+{r['unrecorded_files']} unrecorded)" if r.get("commits") and r.get("unrecorded_files") else "")
                for r in revisions))
        if self.summary.get("global_batch_size") is not None:
            found["global batch size"] = _text(self.summary["global_batch_size"])
        for name, value in self.evaluation_settings().items():
            found[name] = _text(value)
        found["limit"] = "full test sets" if not self.partial else str(self.partial.get("limit"))
        return found

    def evaluation_settings(self) -> dict:
        """The evaluation-only settings (run_summary.json; older runs: the first cached score's identity)."""
        recorded = self.summary.get("evaluation_settings")
        if isinstance(recorded, dict):
            return recorded
        for cached in sorted((self.run_dir / "scores").glob("*.json")):
            settings = (_read_json(cached).get("identity") or {}).get("settings")
            if isinstance(settings, dict):
                return settings
        return {}

    def evaluated_on(self) -> str:
        return "full test sets" if not self.partial else f"the first {self.partial.get('limit')} test examples per task"

    def identity_without_seed(self) -> dict:
        """The run identity less what the training seed decides: the seed itself, and the weights of the
        `tiny-random` decoder (generated from the seed)."""
        identity = json.loads(json.dumps(self.identity, default=str))
        (identity.get("train") or {}).pop("seed", None)
        decoder = identity.get("decoder")
        if isinstance(decoder, dict) and decoder.get("name") == "tiny-random":
            decoder.pop("weights_sha256", None)
        return identity


@dataclass
class RunGroup:
    name: str
    source: str  # the path(s) it was read from
    runs: list[RunRecord]
    notes: list[str] = field(default_factory=list)

    @property
    def protocol(self) -> str:
        return self.runs[0].protocol

    @property
    def seeds(self) -> list[int | None]:
        return [run.seed for run in self.runs]

    @property
    def task_names(self) -> list[str]:
        """Tasks every run of the group has, in the first run's order."""
        return [t for t in self.runs[0].tasks if all(t in run.tasks for run in self.runs)]

    def spec(self, task: str) -> TaskSpec:
        return self.runs[0].tasks[task]

    def score(self, task: str) -> float:
        return sum(run.tasks[task].score for run in self.runs) / len(self.runs)

    def spread(self, task: str) -> float | None:
        """Sample standard deviation over the seeds (None for a single run)."""
        values = [run.tasks[task].score for run in self.runs]
        return statistics.stdev(values) if len(values) > 1 else None

    def describe(self) -> str:
        seeds = [s for s in self.seeds if s is not None]
        if len(self.runs) == 1:
            return f"{self.name} ({self.runs[0].run_dir})"
        shown = ", ".join(map(str, sorted(seeds))) if len(seeds) == len(self.runs) else "unrecorded"
        return f"{self.name} ({len(self.runs)} seeds: {shown}; {self.source})"


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LalmbenchError(f"{path} is not readable JSON ({exc}); the run directory is damaged") from exc
    return value if isinstance(value, dict) else {}


def read_record(run_dir: str | Path) -> RunRecord:
    """What a run directory says about itself; needs run_summary.json (written by `lalmbench run`)."""
    import yaml

    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "run_summary.json")
    if not summary.get("tasks"):
        raise LalmbenchError(f"{run_dir} has no run_summary.json with per-task results; pass run directories "
                             "written by a finished `lalmbench run` (<output_dir>/<train config>/<encoder>/)")
    identity = _read_json(run_dir / "run_identity.json").get("identity") or {}
    tasks = {}
    for task, info in summary["tasks"].items():
        score = info.get("score")
        if isinstance(score, (int, float)) and math.isfinite(score):
            tasks[task] = TaskSpec(task, str(info.get("metric")), float(score), float(info.get("weight", 1.0)),
                                   dict(info.get("metric_args") or {}))
    eval_config = {}
    if (run_dir / "eval_config.yaml").is_file():
        eval_config = yaml.safe_load((run_dir / "eval_config.yaml").read_text(encoding="utf-8")) or {}
    seed = (identity.get("train") or {}).get("seed")
    return RunRecord(run_dir=run_dir, name=str(summary.get("encoder_name") or run_dir.name),
                     protocol=str(summary.get("protocol") or UNRECORDED), seed=seed, identity=identity,
                     tasks=tasks, eval_config=eval_config, completed=(run_dir / "COMPLETED").exists(),
                     partial=summary.get("partial") if isinstance(summary.get("partial"), dict) else None,
                     summary=summary)


def _text(value) -> str:
    """A setting's value as text: numbers and strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


# Differences that make scores incomparable: another training budget, another decoder, other data.
DECISIVE_SETTINGS = ("max_steps", "decoder", "data revisions")
ALLOW_FLAG = "--allow-different-settings"


@dataclass
class SettingDifference:
    name: str
    values: dict[str, str]  # side or entry label -> value ("unrecorded" when the run did not record it)
    decisive: bool  # refused unless allowed (DECISIVE_SETTINGS, recorded by every run)

    def describe(self) -> str:
        return f"{self.name}: " + ", ".join(f"{label} {_short(value)}" for label, value in self.values.items())


def _short(value: str, limit: int = 60) -> str:
    """A long value (a training mixture) cut, with a hash of the whole so that two cut values still differ."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... (sha256 {hashlib.sha256(value.encode()).hexdigest()[:8]})"


def setting_differences(labelled: Sequence[tuple[str, RunRecord]]) -> list[SettingDifference]:
    """Every training and evaluation setting whose value differs between the runs, by name."""
    settings = [(label, record.settings()) for label, record in labelled]
    names = sorted({name for _, found in settings for name in found})
    differences = []
    for name in names:
        values = {label: found.get(name, "unrecorded") for label, found in settings}
        if len(set(values.values())) > 1:
            # A value not recorded (by an older run, or for files fetched by the published system) may be
            # the same: stated, never refused.
            recorded = (all(name in found for _, found in settings)
                        and not any("unrecorded" in value for value in values.values()))
            differences.append(SettingDifference(name, values, decisive=recorded and name in DECISIVE_SETTINGS))
    return differences


def check_settings(labelled: Sequence[tuple[str, RunRecord]], allow: bool, what: str) -> list[str]:
    """Lines stating the settings that differ between the runs (none when they all agree; `what`: how they
    are put together, "compared" or "ranked"); an error when a decisive one differs and `allow` is not given."""
    differences = setting_differences(labelled)
    if not differences:
        return []
    decisive = [d for d in differences if d.decisive]
    if decisive and not allow:
        listing = "; ".join(f"{d.name} ({', '.join(f'{k} {_short(v)}' for k, v in d.values.items())})"
                            for d in decisive)
        raise LalmbenchError(
            f"these runs were trained or scored with different {listing}. A different training budget, "
            "decoder or data revision changes the scores by itself, so the comparison would not measure the "
            f"encoders. Put together runs of the same settings, or pass {ALLOW_FLAG} to do it anyway (the output "
            "then says so).")
    lines = ["settings that differ: " + "; ".join(d.describe() for d in differences)]
    if decisive:
        lines.append(f"{what} with {ALLOW_FLAG} despite different {', '.join(d.name for d in decisive)}: the "
                     "score differences are partly these settings'")
    return lines


REPLACED = re.compile(r"^(?P<name>.+)\.replaced-(?P<when>\d{8}-\d{6})$")  # a run moved aside by `run --force`


def set_aside_reason(path: Path) -> str | None:
    """Why a directory (or the run it is part of) was moved aside by `run --force`; None when it was not.
    Such a run was replaced by a newer one of the same identity: ranking both would count it twice."""
    for part in (path, *path.parents):
        found = REPLACED.match(part.name)
        if found:
            replacement = part.with_name(found["name"])
            return (f"set aside by --force ({found['when']}); its replacement is {replacement}"
                    if replacement.exists() else f"set aside by --force ({found['when']})")
    return None


def run_dirs_in(path: Path) -> list[Path]:
    """The run directories a path stands for (see the module docstring)."""
    if (path / "scores.tsv").is_file():
        return [path]
    group_file = path / SEED_GROUP_FILE
    if group_file.is_file():
        members = _read_json(group_file).get("runs") or []
        found = [Path(os.path.normpath(path / member)) for member in members]  # a member may be ../<group>/<run>
        missing = [str(p) for p in found if not (p / "scores.tsv").is_file()]
        if missing:
            raise LalmbenchError(f"{group_file} lists run(s) that have no scores.tsv: {', '.join(missing)}; "
                                 "finish them with the same `lalmbench run --seeds` command")
        return found
    if path.is_dir():
        below = sorted(p.parent for p in path.rglob("scores.tsv"))
        if below:
            return below
    raise LalmbenchError(f"{path} is not a run directory (no scores.tsv in it or below it)")


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two nested dicts differ."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        name = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _differences(a[key], b[key], f"{name}.")
        elif a.get(key) != b.get(key):
            out.append(name)
    return out


def check_same_identity(runs: Sequence[RunRecord], what: str) -> None:
    """Refuse a group whose runs differ in anything but the seed (or repeat a seed)."""
    first = runs[0]
    for run in runs[1:]:
        if run.partial != first.partial:
            raise LalmbenchError(f"{what}: {run.run_dir} was evaluated on {run.evaluated_on()}, {first.run_dir} on "
                                 f"{first.evaluated_on()}; a group's runs must be scored on the same examples")
        if run.protocol != first.protocol:
            raise LalmbenchError(f"{what}: {run.run_dir} ran protocol {run.protocol}, {first.run_dir} ran "
                                 f"{first.protocol}; a group holds seeds of one identity only")
        if first.identity and run.identity:
            differ = _differences(first.identity_without_seed(), run.identity_without_seed())
            if differ:
                raise LalmbenchError(f"{what}: {run.run_dir} and {first.run_dir} differ in {', '.join(differ)}, not "
                                     "only in the seed; pass runs of one identity as a group")
    seeds = [run.seed for run in runs if run.seed is not None]
    if len(seeds) != len(set(seeds)):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        raise LalmbenchError(f"{what}: seed(s) {repeated} appear in more than one run; each seed counts once")


def read_group(paths: Sequence[str | Path], what: str = "group") -> RunGroup:
    """One group from one or more paths (a run, a seed-group directory, a directory of runs)."""
    run_dirs: list[Path] = []
    for path in paths:
        for run_dir in run_dirs_in(Path(path)):
            if run_dir.resolve() not in {d.resolve() for d in run_dirs}:
                run_dirs.append(run_dir)
    runs = [read_record(run_dir) for run_dir in run_dirs]
    check_same_identity(runs, what)
    notes = [f"{run.run_dir} is not marked COMPLETED" for run in runs if not run.completed]
    notes += [f"{run.run_dir} was {why}" for run in runs if (why := set_aside_reason(run.run_dir))]
    return RunGroup(name=runs[0].name, source=", ".join(str(p) for p in paths), runs=runs, notes=notes)
