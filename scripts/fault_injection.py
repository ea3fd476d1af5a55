"""Kill a small run at random moments, resume it, and check that it ends as an uninterrupted run ends.

    python scripts/fault_injection.py [--trials 20] [--seed 0] [--steps 60] [--save-steps 10]
                                      [--report fault_report.json] [--keep DIR]

Everything happens on this machine. A small synthetic suite (the demo's four tasks, shrunk) is served by
the loopback hub stand-in (tests/hub_server.py, throttled so that fetching the shards takes a few
seconds) and named in YAML configs by `repo_id`, so each run really downloads its data through
huggingface_hub (HF_ENDPOINT points at the stand-in). Each run is the real command line,
`python -m lalmbench run LogMelEncoder train.yaml eval.yaml`, with its own data home and output folder.

1. A reference run goes uninterrupted; the script watches its files and times its phases: the download
   (the hub client's folder in the data home appears .. every shard is in place), every training step
   (a row of train_log.csv, which is written each step), every checkpoint (the temporary
   `.checkpoint-N.*.tmp` folder the trainer builds .. `checkpoint-N` in place) and evaluation
   (training_complete.json .. scores.tsv).
2. Each trial starts from nothing (fresh data home and output folder), starts the same command in a
   process group of its own and SIGKILLs the group at a moment drawn (seeded) for one of four phases,
   in turn: mid-download, mid-step, mid-checkpoint, mid-evaluation. The moment is found by watching
   the files, not by the clock alone, so a loaded machine moves the kill with the run:
     download    a fraction of the reference download time after the download folder appears
     step        a fraction of a reference step after row s of train_log.csv (s not a checkpoint step:
                 the process is computing step s + 1)
     checkpoint  up to half the reference checkpoint write time after `.checkpoint-N.*.tmp` appears
     evaluation  a fraction of the reference evaluation time after training_complete.json appears
   The phase the files show just before the kill is recorded beside the one aimed at.
3. The same command then runs again (at most --max-resumes times) until it ends with exit status 0.

"Identical" means all of these hold between the trial's run directory and the reference's:
  - scores.tsv is the same, byte for byte;
  - the same predictions_<task>.csv files, each the same byte for byte;
  - final_weights.pt has the same tensor names and every tensor is torch.equal to the reference's;
  - train_log.csv has the same (step, loss) rows: one per step 1..max_steps, losses as written;
  - run_summary.json reports the same bad-data account and the same number of steps.
Timings (the elapsed column, seconds in run_summary.json) are left out: they differ between any two runs.

The script prints a line per trial and a closing `N of M identical`, writes a JSON report (--report), and
exits 0 only when every trial ended identical. Temporary folders are removed at the end unless --keep
names a folder to work in; every process it started is killed when it stops early.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the loopback hub stand-in lives with the tests

from hub_server import HubServer  # noqa: E402

PHASES = ("download", "step", "checkpoint", "evaluation")
HUB_REPO = "fault-injection/demo-suite"
ENCODER = "lalmbench.encoders.LogMelEncoder"
POLL_SECONDS = 0.001  # checkpoints of the tiny model are written in tens of milliseconds
DOWNLOAD_DIR = Path(".cache") / "huggingface"  # made by hf_hub_download(local_dir=data home) before its first byte


@dataclass
class Setting:
    """Size of the run under test; the defaults take a few minutes per 20 trials on 2 CPU cores."""

    steps: int = 60
    save_steps: int = 10
    train_examples: int = 24
    """Training examples per demo task (4 tasks, 2 shards each)."""
    test_examples: int = 8
    bytes_per_second: int = 600_000
    """The stand-in hub's rate per connection (the client fetches up to 4 files at once)."""
    num_workers: int = 0
    """Decoding processes of the run (0: in the training process)."""
    seed: int = 0
    """Seed of the kill moments (the run's own seed stays the default)."""
    max_resumes: int = 3
    phases: tuple[str, ...] = PHASES
    """The phases the trials aim at, in turn."""
    run_timeout: float = 300.0
    """Seconds one process of the run may take before the script gives up on it."""


@dataclass
class Suite:
    """The prepared data and configs, shared by every run."""

    hub_root: Path
    train_yaml: Path
    eval_yaml: Path
    shard_paths: list[str]
    """Shard paths below the data home (= paths in the hub repo)."""


@dataclass
class Timeline:
    """When things appeared during one run (seconds from its start)."""

    download_started: float | None = None
    download_done: float | None = None
    steps: dict[int, float] = field(default_factory=dict)
    checkpoint_started: dict[int, float] = field(default_factory=dict)
    checkpoint_done: dict[int, float] = field(default_factory=dict)
    training_complete: float | None = None
    scores_written: float | None = None
    exited: float | None = None


@dataclass
class Trial:
    number: int
    """1 to --trials; the folder is trial-<number>."""
    aimed_phase: str
    detail: str
    """What the kill waits for: the step, checkpoint or fraction."""
    killed_at: float | None = None
    """Seconds after the start of the killed process."""
    observed_phase: str | None = None
    resumes: int = 0
    resumed: str = ""
    """How the first rerun went on, from its log: from checkpoint-N, from the start, training reused."""
    exit_codes: list[int] = field(default_factory=list)
    identical: bool = False
    differences: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    """Temporary files of a killed process still there at the end (reported, not part of "identical")."""
    seconds: float = 0.0


# -- preparation ------------------------------------------------------------------------------------------------
def prepare_suite(root: Path, setting: Setting) -> Suite:
    """Demo shards (shrunk) put into a stand-in hub repo, and YAMLs that name them by repo_id."""
    from lalmbench.demo import write_demo_data

    local = root / "written"
    training = {"decoder_model_name": "tiny-random", "max_steps": setting.steps, "save_steps": setting.save_steps,
                "save_total_limit": 2, "warmup_steps": 5, "logging_steps": 10, "shuffle_buffer": 8,
                "sort_buffer": 4, "per_device_train_batch_size": 4, "num_workers": setting.num_workers,
                "torch_num_threads": 1}
    train_yaml, eval_yaml, _ = write_demo_data(local, seed=0, train_examples=setting.train_examples,
                                               test_examples=setting.test_examples, training=training)
    hub_root = root / "hub"
    shard_paths = []
    for shard in sorted(local.rglob("*.tar.gz")):
        relative = shard.relative_to(local).as_posix()
        target = hub_root / HUB_REPO / "main" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shard, target)
        shard_paths.append(relative)

    def to_hub(spec: dict) -> dict:
        spec = dict(spec)
        spec["data"] = [Path(pattern).relative_to(local).as_posix() for pattern in spec["data"]]
        spec["repo_id"] = HUB_REPO
        return spec

    train = yaml.safe_load(train_yaml.read_text())
    train["train_data"] = {name: to_hub(spec) for name, spec in train["train_data"].items()}
    evaluation = yaml.safe_load(eval_yaml.read_text())
    for task in evaluation.values():
        task["data"] = to_hub(task["data"])
    configs = root / "configs"
    configs.mkdir()
    (configs / "train.yaml").write_text(yaml.safe_dump(train, sort_keys=False))
    (configs / "eval.yaml").write_text(yaml.safe_dump(evaluation, sort_keys=False))
    shutil.rmtree(local)
    return Suite(hub_root, configs / "train.yaml", configs / "eval.yaml", shard_paths)


def run_command(suite: Suite, output: Path) -> list[str]:
    return [sys.executable, "-m", "lalmbench", "run", ENCODER, str(suite.train_yaml), str(suite.eval_yaml),
            "--output-dir", str(output), "--no-report"]


def run_environment(hub: HubServer, data_home: Path, hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "LALMBENCH_DATA_HOME",
                        "XARES_DATA_HOME", "CUDA_VISIBLE_DEVICES")}
    env.update({"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(hf_home), "LALMBENCH_DATA_HOME": str(data_home),
                "HF_HUB_DISABLE_TELEMETRY": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")]))})
    return env


# -- watching a run ---------------------------------------------------------------------------------------------
class RunFiles:
    """What one run has written so far, read from its data home and output folder."""

    def __init__(self, data_home: Path, output: Path, suite: Suite, setting: Setting):
        self.data_home, self.output, self.suite, self.setting = data_home, output, suite, setting
        self._run_dir: Path | None = None
        self._log_size, self._rows = -1, 0

    @property
    def run_dir(self) -> Path | None:
        """output/<config>/<encoder>: the folder holding run_identity.json (found once it exists)."""
        if self._run_dir is None:
            found = sorted(self.output.glob("*/*/run_identity.json"))
            self._run_dir = found[0].parent if found else None
        return self._run_dir

    def download_started(self) -> bool:
        return (self.data_home / DOWNLOAD_DIR).is_dir()

    def download_done(self) -> bool:
        return all((self.data_home / path).is_file() for path in self.suite.shard_paths)

    def logged_steps(self) -> int:
        """Rows of train_log.csv (0 before it exists); re-counted only when the file grows or shrinks."""
        run_dir = self.run_dir
        if run_dir is None:
            return 0
        try:
            size = (run_dir / "train_log.csv").stat().st_size
        except FileNotFoundError:
            return 0
        if size != self._log_size:
            text = (run_dir / "train_log.csv").read_text()
            complete = text[:text.rfind("\n") + 1].splitlines()  # a row being written counts once whole
            self._rows, self._log_size = max(0, len(complete) - 1), size
        return self._rows

    def checkpoint_being_written(self) -> int | None:
        """N when a `.checkpoint-N.*.tmp` folder exists (the trainer is writing checkpoint N)."""
        run_dir = self.run_dir
        if run_dir is None:
            return None
        try:
            with os.scandir(run_dir) as entries:
                for entry in entries:
                    if entry.name.startswith(".checkpoint-") and entry.name.endswith(".tmp"):
                        return int(entry.name.split(".")[1].split("-")[1])
        except (FileNotFoundError, ValueError):
            return None
        return None

    def checkpoint_done(self, step: int) -> bool:
        run_dir = self.run_dir
        return run_dir is not None and (run_dir / f"checkpoint-{step}" / "checkpoint.json").is_file()

    def exists(self, name: str) -> bool:
        run_dir = self.run_dir
        return run_dir is not None and (run_dir / name).is_file()

    def phase(self) -> str:
        """The phase the files show now."""
        if self.exists("scores.tsv"):
            return "writing results"
        if self.exists("training_complete.json"):
            return "evaluation"
        if self.checkpoint_being_written() is not None:
            return "checkpoint"
        rows = self.logged_steps()
        if rows >= self.setting.steps:
            return "final weights"
        if rows > 0 or (self.run_dir is not None and self.download_done()):
            return "step"
        if self.download_started() and not self.download_done():
            return "download"
        return "start-up" if not self.download_started() else "model set-up"


def watch(process: subprocess.Popen, files: RunFiles, started: float) -> Timeline:
    """Poll `files` until `process` ends, noting when each thing first appeared."""
    timeline = Timeline()
    pending_checkpoint: int | None = None
    while True:
        running = process.poll() is None
        now = time.monotonic() - started
        if timeline.download_started is None and files.download_started():
            timeline.download_started = now
        if timeline.download_started is not None and timeline.download_done is None and files.download_done():
            timeline.download_done = now
        rows = files.logged_steps()
        for step in range(len(timeline.steps) + 1, rows + 1):
            timeline.steps[step] = now
        writing = files.checkpoint_being_written()
        if writing is not None and writing not in timeline.checkpoint_started:
            timeline.checkpoint_started[writing] = now
            pending_checkpoint = writing
        if pending_checkpoint is not None and files.checkpoint_done(pending_checkpoint):
            timeline.checkpoint_done[pending_checkpoint] = now
            pending_checkpoint = None
        if timeline.training_complete is None and files.exists("training_complete.json"):
            timeline.training_complete = now
        if timeline.scores_written is None and files.exists("scores.tsv"):
            timeline.scores_written = now
        if not running:
            timeline.exited = now
            return timeline
        time.sleep(POLL_SECONDS)


# -- processes --------------------------------------------------------------------------------------------------
class Processes:
    """The run processes this script started; each in a session (process group) of its own."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def start(self, command: list[str], env: dict, log: Path) -> subprocess.Popen:
        with open(log, "ab") as sink:
            process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=log.parent)
        self.live.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL the process group (the run and any decoding processes it started)."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        self.live.remove(process)

    def finish(self, process: subprocess.Popen, timeout: float) -> int:
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(process)
            return -signal.SIGKILL
        try:
            os.killpg(process.pid, signal.SIGKILL)  # anything it left behind in its group
        except ProcessLookupError:
            pass
        self.live.remove(process)
        return code

    def kill_all(self) -> None:
        for process in list(self.live):
            self.kill(process)


# -- the kill moments -------------------------------------------------------------------------------------------
@dataclass
class KillPlan:
    phase: str
    wait_for: int | None
    """Step whose row (step phase) or checkpoint whose folder (checkpoint phase) starts the delay."""
    delay: float
    """Seconds to wait after that."""

    def describe(self) -> str:
        if self.phase == "step":
            return f"in step {self.wait_for + 1}, {self.delay * 1000:.0f} ms after step {self.wait_for}'s row"
        if self.phase == "checkpoint":
            return f"{self.delay * 1000:.1f} ms into checkpoint-{self.wait_for}"
        start = "the download folder appeared" if self.phase == "download" else "training_complete.json"
        return f"{self.delay:.2f} s after {start}"


def plan_kills(count: int, seed: int, reference: Timeline, setting: Setting) -> list[KillPlan]:
    """`count` moments, the setting's phases in turn, each drawn within the reference run's duration of it."""
    rng = random.Random(seed)
    download = reference.download_done - reference.download_started
    step_times = sorted(reference.steps.items())
    # A step's length: the gaps between rows that hold no checkpoint (the median, against stalls).
    gaps = sorted(b[1] - a[1] for a, b in zip(step_times, step_times[1:]) if a[0] % setting.save_steps)
    step = gaps[len(gaps) // 2]
    writes = sorted(reference.checkpoint_done[n] - reference.checkpoint_started[n]
                    for n in reference.checkpoint_done if n in reference.checkpoint_started)
    write = writes[len(writes) // 2] if writes else 0.0  # tens of ms: the first half hits it more surely
    evaluation = reference.scores_written - reference.training_complete
    plans = []
    for index in range(count):
        phase = setting.phases[index % len(setting.phases)]
        if phase == "download":
            plans.append(KillPlan(phase, None, rng.uniform(0.05, 0.9) * download))
        elif phase == "step":
            candidates = [s for s in range(1, setting.steps) if s % setting.save_steps]
            plans.append(KillPlan(phase, rng.choice(candidates), rng.uniform(0.1, 0.9) * step))
        elif phase == "checkpoint":
            saved = list(range(setting.save_steps, setting.steps + 1, setting.save_steps))
            if setting.steps % setting.save_steps:
                saved.append(setting.steps)  # the last step always saves
            plans.append(KillPlan(phase, rng.choice(saved), rng.uniform(0.0, 0.5) * write))
        else:
            plans.append(KillPlan(phase, None, rng.uniform(0.05, 0.9) * evaluation))
    return plans


def wait_and_kill(process: subprocess.Popen, files: RunFiles, plan: KillPlan, processes: Processes,
                  started: float, timeout: float) -> tuple[float | None, str | None]:
    """Wait for the plan's moment, note the phase the files show, SIGKILL. (None, None): it ended first."""
    deadline = time.monotonic() + timeout

    def reached() -> bool:
        if plan.phase == "download":
            return files.download_started()
        if plan.phase == "step":
            return files.logged_steps() >= plan.wait_for
        if plan.phase == "checkpoint":
            return files.checkpoint_being_written() == plan.wait_for or files.checkpoint_done(plan.wait_for)
        return files.exists("training_complete.json")

    while not reached():
        if process.poll() is not None or time.monotonic() > deadline:
            return None, None
        time.sleep(POLL_SECONDS)
    if plan.delay:
        time.sleep(plan.delay)
    if process.poll() is not None:
        return None, None
    phase = files.phase()
    moment = time.monotonic() - started
    processes.kill(process)
    return moment, phase


# -- comparing --------------------------------------------------------------------------------------------------
def step_losses(run_dir: Path) -> list[tuple[str, str]]:
    with open(run_dir / "train_log.csv", newline="") as handle:
        return [(row["step"], row["loss"]) for row in csv.DictReader(handle)]


def differences(reference: Path, run_dir: Path | None) -> list[str]:
    """What differs between two finished run directories (empty: identical, as the docstring defines it)."""
    import torch

    if run_dir is None:
        return ["no run directory"]
    out = []
    for name in ("scores.tsv", "final_weights.pt", "train_log.csv", "run_summary.json"):
        if not (run_dir / name).is_file():
            out.append(f"{name} missing")
    if out:
        return out
    if (run_dir / "scores.tsv").read_bytes() != (reference / "scores.tsv").read_bytes():
        out.append("scores.tsv")
    expected = sorted(p.name for p in reference.glob("predictions_*.csv"))
    found = sorted(p.name for p in run_dir.glob("predictions_*.csv"))
    if found != expected:
        out.append(f"prediction files {found} (reference {expected})")
    out += [name for name in expected if name in found and
            (run_dir / name).read_bytes() != (reference / name).read_bytes()]
    weights, reference_weights = torch.load(run_dir / "final_weights.pt"), torch.load(reference / "final_weights.pt")
    if sorted(weights) != sorted(reference_weights):
        out.append("final_weights.pt tensor names")
    else:
        unequal = [name for name in weights if not torch.equal(weights[name], reference_weights[name])]
        if unequal:
            out.append(f"final_weights.pt: {len(unequal)} tensors differ, first {unequal[0]}")
    losses, reference_losses = step_losses(run_dir), step_losses(reference)
    if losses != reference_losses:
        steps = [step for step, _ in losses]
        if steps != [step for step, _ in reference_losses]:
            out.append(f"train_log.csv steps: {len(steps)} rows, {len(set(steps))} distinct "
                       f"(reference {len(reference_losses)})")
        else:
            first = next(s for (s, a), (_, b) in zip(losses, reference_losses) if a != b)
            out.append(f"train_log.csv loss from step {first}")
    summary, reference_summary = (json.loads((d / "run_summary.json").read_text()) for d in (run_dir, reference))
    if summary.get("steps") != reference_summary.get("steps"):
        out.append(f"run_summary.json steps {summary.get('steps')} (reference {reference_summary.get('steps')})")
    bad, reference_bad = summary.get("bad_data", {}), reference_summary.get("bad_data", {})
    unequal = sorted(name for name in set(bad) | set(reference_bad) if bad.get(name) != reference_bad.get(name))
    if unequal:
        out.append("run_summary.json bad_data of " + ", ".join(
            f"{name} ({'missing' if name not in bad else 'extra' if name not in reference_bad else 'counts'})"
            for name in unequal))
    return out


def leftovers(data_home: Path, run_dir: Path | None) -> list[str]:
    """Temporary files a killed process left and no later run removed (not part of "identical")."""
    found = [f"data home: {p.relative_to(data_home)}" for p in (data_home / DOWNLOAD_DIR).rglob("*.incomplete")]
    if run_dir is not None:
        found += [f"run directory: {p.relative_to(run_dir)}" for p in run_dir.rglob(".*.tmp")]
    return sorted(found)


# -- the experiment ---------------------------------------------------------------------------------------------
def how_resumed(log_text: str) -> str:
    """What the run's log says the first rerun did (the text after the first resume mark)."""
    _, _, rerun = log_text.partition("=== resume 1 ===")
    rerun = rerun.partition("=== resume 2 ===")[0]
    cached = rerun.count("reusing the cached score")
    scores = f", {cached} cached score(s) reused" if cached else ""
    if "reusing the finished training" in rerun:
        return "training reused" + scores
    found = re.search(r"resumed from \S*?(checkpoint-\d+)", rerun)
    return (f"from {found.group(1)}" if found else "from the start") + scores


class Experiment:
    def __init__(self, work: Path, setting: Setting, hub: HubServer, suite: Suite, processes: Processes,
                 say=print, keep_trials: bool = False):
        self.work, self.setting, self.hub, self.suite, self.processes, self.say = (
            work, setting, hub, suite, processes, say)
        self.keep_trials = keep_trials
        """Keep the folders of identical trials too (others are always kept)."""

    def _folders(self, name: str) -> tuple[Path, Path, dict]:
        folder = self.work / name
        folder.mkdir()
        data_home, output = folder / "data_home", folder / "output"
        return folder, output, run_environment(self.hub, data_home, folder / "hf_home")

    def reference(self) -> tuple[Path, Timeline]:
        folder, output, env = self._folders("reference")
        files = RunFiles(Path(env["LALMBENCH_DATA_HOME"]), output, self.suite, self.setting)
        started = time.monotonic()
        process = self.processes.start(run_command(self.suite, output), env, folder / "run.log")
        timeline = watch(process, files, started)
        code = self.processes.finish(process, self.setting.run_timeout)
        if code != 0 or files.run_dir is None:
            raise SystemExit(f"the reference run failed (exit status {code}); its output:\n"
                             + (folder / "run.log").read_text()[-4000:])
        missing = [name for name, value in (("download", timeline.download_done), ("steps", timeline.steps),
                                            ("checkpoints", timeline.checkpoint_done),
                                            ("evaluation", timeline.scores_written)) if not value]
        if missing:
            raise SystemExit(f"the reference run's phases were not all seen ({', '.join(missing)}); "
                             f"its files are in {folder}")
        return files.run_dir, timeline

    def trial(self, number: int, plan: KillPlan, reference: Path) -> Trial:
        trial = Trial(number, plan.phase, plan.describe())
        folder, output, env = self._folders(f"trial-{number:02d}")
        files = RunFiles(Path(env["LALMBENCH_DATA_HOME"]), output, self.suite, self.setting)
        command = run_command(self.suite, output)
        clock = time.monotonic()
        process = self.processes.start(command, env, folder / "run.log")
        trial.killed_at, trial.observed_phase = wait_and_kill(process, files, plan, self.processes, clock,
                                                              self.setting.run_timeout)
        if trial.killed_at is None:  # it ended (or stalled) before the moment came
            trial.exit_codes.append(self.processes.finish(process, self.setting.run_timeout))
        else:
            trial.exit_codes.append(-signal.SIGKILL)
        while trial.exit_codes[-1] != 0 and trial.resumes < self.setting.max_resumes:
            trial.resumes += 1
            with open(folder / "run.log", "ab") as log:
                log.write(f"\n=== resume {trial.resumes} ===\n".encode())
            process = self.processes.start(command, env, folder / "run.log")
            trial.exit_codes.append(self.processes.finish(process, self.setting.run_timeout))
        if trial.exit_codes[-1] != 0:
            tail = (folder / "run.log").read_text(errors="replace").strip().splitlines()[-1:]
            trial.differences = [f"did not finish after {trial.resumes} resume(s): {' '.join(tail)}"]
        else:
            trial.differences = differences(reference, files.run_dir)
        trial.leftovers = leftovers(files.data_home, files.run_dir)
        trial.resumed = how_resumed((folder / "run.log").read_text(errors="replace")) if trial.resumes else ""
        trial.identical = not trial.differences
        trial.seconds = time.monotonic() - clock
        return trial

    def run(self, trials: int) -> tuple[Timeline, list[Trial]]:
        reference, timeline = self.reference()
        self.say(f"reference run: download {timeline.download_done - timeline.download_started:.2f} s, "
                 f"{len(timeline.steps)} steps by {timeline.steps[max(timeline.steps)]:.1f} s, checkpoints "
                 f"{sorted(timeline.checkpoint_done)}, evaluation "
                 f"{timeline.scores_written - timeline.training_complete:.2f} s, {timeline.exited:.1f} s in all")
        results = []
        for number, plan in enumerate(plan_kills(trials, self.setting.seed, timeline, self.setting), 1):
            trial = self.trial(number, plan, reference)
            results.append(trial)
            killed = (f"killed at {trial.killed_at:6.2f} s in {trial.observed_phase}" if trial.killed_at is not None
                      else "not killed (ended first)")
            self.say(f"trial {number:2d}  aimed {plan.phase:<10}  {killed:<38}  resumes {trial.resumes} "
                     f"({trial.resumed or '-'})  identical "
                     f"{'yes' if trial.identical else 'no: ' + '; '.join(trial.differences)}  [{plan.describe()}]")
            if trial.leftovers:
                self.say(f"          left behind: {', '.join(trial.leftovers)}")
            if trial.identical and not self.keep_trials:
                shutil.rmtree(self.work / f"trial-{number:02d}", ignore_errors=True)
        return timeline, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=Setting.seed, help="seed of the kill moments")
    parser.add_argument("--steps", type=int, default=Setting.steps)
    parser.add_argument("--save-steps", type=int, default=Setting.save_steps)
    parser.add_argument("--train-examples", type=int, default=Setting.train_examples, help="per demo task")
    parser.add_argument("--test-examples", type=int, default=Setting.test_examples, help="per demo task")
    parser.add_argument("--bytes-per-second", type=int, default=Setting.bytes_per_second,
                        help="the stand-in hub's rate per connection")
    parser.add_argument("--num-workers", type=int, default=Setting.num_workers, help="the run's decoding processes")
    parser.add_argument("--max-resumes", type=int, default=Setting.max_resumes)
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES),
                        help="phases to aim at, in turn (default: all four)")
    parser.add_argument("--report", default="fault_report.json", help="JSON report to write")
    parser.add_argument("--keep", default=None, metavar="DIR",
                        help="work in DIR and keep every run there (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    setting = Setting(steps=args.steps, save_steps=args.save_steps, train_examples=args.train_examples,
                      test_examples=args.test_examples, bytes_per_second=args.bytes_per_second,
                      num_workers=args.num_workers, seed=args.seed, max_resumes=args.max_resumes,
                      phases=tuple(args.phases))
    report, _ = run_experiment(setting, args.trials, Path(args.keep) if args.keep else None)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.report}")
    return 0 if report["identical"] == report["trials"] else 1


def run_experiment(setting: Setting, trials: int, keep: Path | None = None, say=print) -> tuple[dict, list[Trial]]:
    """Prepare, run the reference and the trials; returns the JSON report and the trials."""
    started = time.monotonic()
    work = keep or Path(tempfile.mkdtemp(prefix="lalmbench-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    processes = Processes()
    try:
        suite = prepare_suite(work, setting)
        with HubServer(suite.hub_root) as hub:
            hub.bytes_per_second = setting.bytes_per_second
            experiment = Experiment(work, setting, hub, suite, processes, say, keep_trials=keep is not None)
            timeline, results = experiment.run(trials)
    finally:
        processes.kill_all()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    identical = sum(t.identical for t in results)
    hits = {phase: sum(t.aimed_phase == phase == t.observed_phase for t in results) for phase in setting.phases}
    aimed = {phase: sum(t.aimed_phase == phase for t in results) for phase in setting.phases}
    say("killed in the phase aimed at: " + ", ".join(f"{phase} {hits[phase]} of {aimed[phase]}" for phase in aimed)
        + f"; not killed: {sum(t.killed_at is None for t in results)}; temporary files left: "
        f"{sum(bool(t.leftovers) for t in results)} trial(s)")
    say(f"{identical} of {len(results)} identical")
    report = {"trials": len(results), "identical": identical, "phase_hits": hits, "setting": asdict(setting),
              "seconds": round(time.monotonic() - started, 1), "reference": asdict(timeline),
              "results": [asdict(t) for t in results]}
    return report, results


if __name__ == "__main__":
    sys.exit(main())
