"""The README's shell blocks and the `--help` examples run as written, and the paths they point to are real.

Every command line of every ```bash block in README.md is read (continuation lines joined, comments
kept apart) and sorted by what it needs:

- runnable here as written: `cp`, `lalmbench tasks`, `lalmbench demo --data-only ...`, `lalmbench check ...`,
  and every `lalmbench run` line (with `--print-config`, which loads no encoder and touches no data, the
  configs and the run directory it names are checked without training);
- the real challenge data, so not run: `lalmbench download`, `run` without `--print-config`; their run
  directories come from `--print-config` all the same;
- follow-ups (`report`, `leaderboard`, `compare`): every path they name must be a run directory the
  block's `run` lines write (a glob must match one); a path a comment on a `run` line names must be the
  directory that line writes.

The commands run in a temporary working directory (the README's relative paths land there; `examples/`
is linked in): that directory is the only thing substituted. The slow test also runs the synthetic-data
block fully (shards, a 300-step training, the report), then checks every follow-up path exists on disk.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lalmbench.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FOLLOW_UPS = ("report", "leaderboard", "compare")
NEEDS_THE_HUB = ("download",)
SLOW_HERE = ("check",)  # about 10 s of encoder checks: in the slow test
BUILT_IN_DATA = re.compile(r"^(task1|task2|all|extended|[a-z0-9][a-z0-9_.-]*)$")


class Command:
    def __init__(self, text: str, comment: str, block: int):
        self.text, self.comment, self.block = text, comment, block
        self.argv = shlex.split(text)

    @property
    def lalmbench(self) -> list[str] | None:
        return self.argv[1:] if self.argv and self.argv[0] == "lalmbench" else None

    def __repr__(self):
        return f"README block {self.block}: {self.text}"


def _split_comment(line: str) -> tuple[str, str]:
    """(command, comment): the comment starts at a `#` outside quotes that follows whitespace."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1:].strip()
    return line.rstrip(), ""


def readme_commands() -> list[Command]:
    commands = []
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    for number, block in enumerate(blocks, 1):
        pending, comments = "", []
        for raw in block.splitlines():
            text, comment = _split_comment(raw)
            comments += [comment] if comment else []
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            text = (pending + text).strip()
            try:
                shlex.split(text)
            except ValueError:  # a quoted argument goes on over the next line (bash reads on)
                pending = text + "\n"
                continue
            pending = ""
            if text:
                commands.append(Command(text, " ".join(comments), number))
            comments = []
    return commands


def help_examples() -> list[str]:
    """Every `lalmbench ...` example line in the --help text of every command."""
    parser = build_parser()
    texts = [parser.format_help()]
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    texts += [sub.format_help() for sub in subparsers.choices.values()]
    lines = [line.strip() for text in texts for line in text.splitlines()]
    return [line for line in lines if line.startswith("lalmbench ") and "[" not in line and "..." not in line]


def inline_help_commands() -> list[str]:
    """`lalmbench <cmd> --help` spans in the README's prose."""
    return sorted(set(re.findall(r"`(lalmbench [a-z-]+ --help)`", README.read_text(encoding="utf-8"))))


def _paths_in(comment: str) -> list[str]:
    return re.findall(r"((?:[\w.-]+/)+)", comment)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The README's working directory: a fresh one, with the repository's examples/ beside it."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    for name in ("LALMBENCH_DATA_HOME", "XARES_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing here may reach for the hub
    return tmp_path


def _run(argv: list[str], capsys) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, f"lalmbench {' '.join(argv)} exited {code}:\n{captured.err[-3000:]}"
    return captured.out


def _run_program(argv: list[str], workdir: Path) -> str:
    """The installed `lalmbench` program, as a user runs it: training in a process of its own (the
    entry point sets the thread waits before torch loads; in this process torch is already loaded)."""
    program = Path(sys.executable).with_name("lalmbench")
    done = subprocess.run([str(program), *argv], cwd=workdir, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"lalmbench {' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def _run_directory(command: Command, capsys) -> str:
    """The run directory a README `run` line writes, from its --print-config (nothing trained or loaded)."""
    out = _run(command.lalmbench + ["--print-config"], capsys)
    match = re.search(r"^# run directory: (\S+)", out, flags=re.M)
    assert match, f"{command}: --print-config names no run directory:\n{out[:500]}"
    return match.group(1)


def _check_block(commands: list[Command], capsys, workdir: Path, full: bool) -> dict[str, str]:
    """Run a README block's commands as this test can; returns {run directory: command} of its run lines."""
    run_dirs: dict[str, str] = {}
    for command in commands:
        args = command.lalmbench
        if command.argv[0] == "cp":
            shutil.copyfile(workdir / command.argv[1], workdir / command.argv[2])
        elif command.argv[0] in (".", "make"):
            continue  # the environment itself (make demo: its run directory is checked in the slow test)
        elif args is None:
            pytest.fail(f"{command}: not a command this test knows how to run; teach it")
        elif args[0] == "run":
            run_dir = _run_directory(command, capsys)
            if "--model-args" in args:  # the encoder takes them (--print-config does not build it)
                from lalmbench.config_flags import parse_mapping_arg
                from lalmbench.encoders.loading import load_encoder

                load_encoder(args[1], parse_mapping_arg(args[args.index("--model-args") + 1], "--model-args"))
            if "--seeds" in args:
                run_dir += "-seeds"
            for path in _paths_in(command.comment):
                if "_runs/" in path or path.startswith("runs/"):
                    assert path.rstrip("/") == run_dir, f"{command}: the comment says {path}, the run writes {run_dir}"
            run_dirs[run_dir] = command.text
            if full and "--seeds" not in args and all(not BUILT_IN_DATA.match(a) or a.endswith(".yaml")
                                                       for a in args[2:4] if not a.startswith("-")):
                _run_program(args, workdir)  # synthetic data: train and evaluate for real
                assert (workdir / run_dir / "scores.tsv").is_file() and (workdir / run_dir / "report.html").is_file()
        elif args[0] in FOLLOW_UPS:
            paths = [a for a in args[1:] if not a.startswith("-")]
            for path in paths:
                matched = [d for d in run_dirs if fnmatch.fnmatch(d, path) or d == path]
                assert matched, (f"{command}: {path} is not a run directory any `run` line of its block writes "
                                 f"({sorted(run_dirs)})")
            if full:
                for path in paths:
                    assert (workdir / path).is_dir(), f"{command}: {path} does not exist after the block ran"
                _run(args, capsys)
        elif args[0] in NEEDS_THE_HUB:
            continue
        elif args[0] in SLOW_HERE and not full:
            continue
        elif args[0] == "demo" and "--data-only" not in args:
            continue  # a full demo: the slow test
        else:
            _run(args, capsys)
            if args[0] == "demo":  # --data-only: the files its line names
                for path in _paths_in(command.comment + " ") + re.findall(r"[\w.-]+/[\w.-]+\.yaml", command.comment):
                    assert (workdir / path).exists(), f"{command}: {path} was not written"
    return run_dirs


def test_readme_is_read_as_the_test_expects():
    commands = readme_commands()
    texts = [c.text for c in commands]
    assert "lalmbench tasks" in texts and "cp examples/encoders/logmel_encoder.py my_encoder.py" in texts
    assert any(c.lalmbench and c.lalmbench[0] == "compare" for c in commands)
    joined = next(c for c in commands if "--model-args" in c.text and "--output-dir runs" in c.text)
    assert joined.lalmbench[:3] == ["run", "my_encoder.py", "task1"]  # the continuation line was joined
    assert {c.lalmbench[0] for c in commands if c.lalmbench} >= {"check", "tasks", "download", "run", "leaderboard",
                                                                 "compare", "report", "demo"}


def test_readme_blocks_run_as_written_and_their_paths_are_the_runs(workdir, capsys, monkeypatch):
    """Fast: everything but training, the encoder checks and the hub; the synthetic data is written small."""
    from lalmbench import demo

    real = demo.write_demo_data
    monkeypatch.setattr(demo, "write_demo_data",  # 4 + 2 examples a task instead of 480 + 48: same files
                        lambda directory, seed=0, *a, **k: real(directory, seed, train_examples=4, test_examples=2))
    by_block: dict[int, list[Command]] = {}
    for command in readme_commands():
        by_block.setdefault(command.block, []).append(command)
    seen = {}
    for commands in by_block.values():
        seen.update(_check_block(commands, capsys, workdir, full=False))
    assert "lalmbench_runs/task1/my_encoder" in seen and "runs/task1/my_encoder" in seen
    assert "lalmbench_runs/train/LogMelEncoder" in seen
    assert (workdir / "my_encoder.py").is_file()
    assert (workdir / "demo_data" / "train.yaml").is_file() and (workdir / "demo_data" / "eval.yaml").is_file()


def test_help_examples_run_as_written(workdir, capsys):
    shutil.copyfile(ROOT / "examples" / "encoders" / "logmel_encoder.py", workdir / "my_encoder.py")
    examples = help_examples()
    assert any("--args" in line for line in examples) and len(examples) >= 2
    for line in examples:
        argv = shlex.split(line)[1:]
        if argv[0] == "run":
            argv += ["--print-config"]  # as written, resolved without training
        _run(argv, capsys)
    commands = inline_help_commands()
    assert "lalmbench run --help" in commands
    for line in commands:
        with pytest.raises(SystemExit) as exit_:
            main(shlex.split(line)[1:])
        assert exit_.value.code == 0


@pytest.mark.slow
def test_readme_blocks_run_fully_where_no_real_data_is_needed(workdir, capsys):
    """The synthetic-data block as written (shards, 300 steps, the report; about 70 s on a busy 2-core CPU),
    the encoder check, then every follow-up path of every block that could run exists on disk."""
    by_block: dict[int, list[Command]] = {}
    for command in readme_commands():
        by_block.setdefault(command.block, []).append(command)
    for commands in by_block.values():
        needs_data = any(c.lalmbench and c.lalmbench[0] == "run" and BUILT_IN_DATA.match(c.lalmbench[2])
                         and not c.lalmbench[2].endswith(".yaml") for c in commands)
        _check_block(commands, capsys, workdir, full=not needs_data)
        if needs_data:  # the encoder check still runs as written
            for command in commands:
                if command.argv[0] == "cp" or (command.lalmbench and command.lalmbench[0] == "check"):
                    if command.argv[0] == "cp":
                        shutil.copyfile(workdir / command.argv[1], workdir / command.argv[2])
                    else:
                        _run(command.lalmbench, capsys)
    assert (workdir / "lalmbench_runs" / "train" / "LogMelEncoder" / "report.html").is_file()


def test_make_demo_run_directory_is_the_one_the_readme_names(tmp_path):
    """`make demo` runs `lalmbench demo`: its run goes to <output-dir>/runs/<train config>/<encoder>, the
    train config named after the train.yaml the demo writes and the encoder after LogMelEncoder's class.
    (The full demo takes minutes; the slow test above trains on the same YAMLs.)"""
    from lalmbench.config import load_train_config
    from lalmbench.demo import write_demo_data
    from lalmbench.encoders.loading import encoder_display_name
    from lalmbench.run_configs import run_directory

    assert "$(VENV)/bin/lalmbench demo\n" in (ROOT / "Makefile").read_text()
    assert build_parser().parse_args(["demo"]).output_dir == "demo_output"
    train_yaml, _, _ = write_demo_data(tmp_path, 0, train_examples=2, test_examples=2)
    config = load_train_config(str(train_yaml))
    expected = run_directory(Path("demo_output") / "runs", config, encoder_display_name("lalmbench.encoders.LogMelEncoder"))
    assert expected.as_posix() == "demo_output/runs/train/LogMelEncoder"
    assert f"{expected.as_posix()}/" in README.read_text(encoding="utf-8")
