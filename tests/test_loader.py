"""The loader: torch's DataLoader with spawned workers (fresh interpreters, never forks of a process whose
CUDA, tokenizer or OpenMP threads may hold locks), giving the very batches of a run without workers, so
losses, weights and scores match, and resume stays exact with workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from run_helpers import (FAST, SLOW_ENCODER, assert_same_run, cli_command, cli_env, kill_when, resume_copy, run_cli,
                         run_dir_of, run_inprocess, tiny_data)

# Notes, at every forward (the pre-run check, training, evaluation), the command lines of the run's children.
PEEKING_ENCODER = '''
import json
import os
from pathlib import Path
from lalmbench.encoders import logmel


def children(pid):
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


class PeekEncoder(logmel.LogMelEncoder):
    """The notes file comes from the environment: a file named in --model-args is part of the run's
    identity, and this one changes at every call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.notes = Path(os.environ["PEEK_NOTES"])

    def forward(self, audio, audio_attention_mask=None):
        lines = []
        for child in children(os.getpid()):
            try:
                with open(f"/proc/{child}/cmdline", "rb") as handle:
                    lines.append(handle.read().replace(b"\\0", b" ").decode().strip())
            except OSError:  # gone meanwhile
                pass
        with open(self.notes, "a") as handle:
            handle.write(json.dumps(lines) + "\\n")
        return super().forward(audio, audio_attention_mask)
'''

needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")


def _spawned(command_line: str) -> bool:
    return "from multiprocessing.spawn import spawn_main" in command_line


@needs_proc
def test_two_spawned_loader_workers_train_and_resume_exactly_as_none(tmp_path, monkeypatch, encoder_file):
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = encoder_file("peek_encoder", PEEKING_ENCODER)
    notes = {workers: tmp_path / f"children-{workers}.jsonl" for workers in (0, 2)}
    runs = {}
    for workers in (0, 2):
        monkeypatch.setenv("PEEK_NOTES", str(notes[workers]))
        runs[workers] = run_inprocess(train_yaml, eval_yaml, tmp_path / f"workers-{workers}",
                                      {"num_workers": workers}, encoder=encoder)

    # Every training forward (6 steps of 2 micro-batches) saw two workers, each a fresh interpreter
    # (spawn): a forked worker keeps the command line of its parent, here pytest's. None is left for
    # the evaluation; without workers there are none.
    seen = [json.loads(line) for line in notes[2].read_text().splitlines()]
    spawned = [sum(_spawned(line) for line in lines) for lines in seen]
    assert spawned.count(2) == 12 and set(spawned) == {0, 2}, spawned
    assert not any("pytest" in line for lines in seen for line in lines), seen
    without = [json.loads(line) for line in notes[0].read_text().splitlines()]
    assert len(without) == len(seen) and not any(_spawned(line) for lines in without for line in lines)

    plain, parallel = runs[0].run_dir, runs[2].run_dir
    assert_same_run(parallel, plain)

    # Stopped after checkpoint 2 and resumed with workers: the run without workers again.
    resumed = resume_copy(parallel, tmp_path / "resumed", 2, train_yaml, eval_yaml, {"num_workers": 2}, encoder=encoder)
    assert_same_run(resumed.run_dir, plain)


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@needs_proc
def test_sigkilled_run_with_workers_leaves_no_worker_behind_and_resumes_exactly(tmp_path, encoder_file):
    """Real CLI with 2 loader workers, SIGKILLed after checkpoint 2: its workers (and multiprocessing's
    helper) notice and exit; the same command resumes and ends as an uninterrupted run with workers."""
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = encoder_file("slow_encoder", SLOW_ENCODER)
    overrides = {**FAST, "max_steps": 8, "num_workers": 2}
    model_args = {"delay": 0.15}  # two encoder calls a step: time to see the workers before the kill
    reference = tmp_path / "reference"
    run_cli(cli_command(encoder, train_yaml, eval_yaml, reference, overrides, model_args), timeout=300)

    output = tmp_path / "interrupted"
    command = cli_command(encoder, train_yaml, eval_yaml, output, overrides, model_args)
    run_dir = run_dir_of(output, "slow_encoder")

    def workers_of(process) -> set[int]:
        helpers = _descendants(process.pid)
        command_lines = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in helpers]
        assert sum(_spawned(line) for line in command_lines) == 2, command_lines
        return helpers

    helpers = kill_when(command, (run_dir / "checkpoint-2" / "checkpoint.json").is_file, "checkpoint-2 appeared",
                        timeout=120, inspect=workers_of)
    deadline = time.monotonic() + 30  # a worker checks on its parent every 5 s when idle
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in helpers if _alive(pid)], "loader workers outlived the killed run"

    finished = run_cli(command, timeout=300)
    assert "resumed from" in finished.stderr
    assert_same_run(run_dir, run_dir_of(reference, "slow_encoder"))


UNGUARDED_SCRIPT = '''
from lalmbench.data.batches import BatchMaker
from lalmbench.data.examples import BadDataCounter

maker = BatchMaker(lambda dataset, text, eos: ([1], [2]), BadDataCounter(), workers=1)
list(maker.iterate([([], None)]))
'''


@pytest.mark.slow
def test_a_script_without_a_main_guard_is_told_what_to_do(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "a loader worker process stopped unexpectedly" in done.stderr
    assert 'put the call under `if __name__ == "__main__":`' in done.stderr
