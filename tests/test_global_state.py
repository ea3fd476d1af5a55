"""Importing lalmbench, or calling it as a library, leaves the process as it found it: the umask is never
touched at import, and a library call puts back the warnings filters, logger levels, environment variables
and huggingface_hub constants it changed for its own duration. Only the CLI entry point configures the
process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest


def _python(code: str, umask: int | None = None) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=120, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


# -- the umask ---------------------------------------------------------------------------------------------
def test_importing_lalmbench_never_sets_the_umask():
    # os.umask can only be read by setting it: a set to 0, however short, lets a file another thread creates
    # at that moment be world-writable. Every module that writes files is imported with os.umask watched.
    out = _python("""
        import os
        calls = []
        real = os.umask
        os.umask = lambda mask: (calls.append(oct(mask)), real(mask))[1]
        import lalmbench.io_utils, lalmbench.model.feature_cache, lalmbench.runner, lalmbench.cli  # noqa
        print(calls)
    """)
    assert out == "[]"


def test_files_get_the_umask_of_the_moment_read_without_setting_it(tmp_path):
    out = _python(f"""
        import os
        from lalmbench.io_utils import atomic_write_text, current_umask
        calls = []
        real = os.umask
        os.umask = lambda mask: (calls.append(oct(mask)), real(mask))[1]
        before = current_umask()
        atomic_write_text({str(tmp_path / 'a.txt')!r}, "a")
        print(oct(before), calls)
    """, umask=0o027)
    assert out == "0o27 []"  # read from /proc/self/status, os.umask never called
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_without_proc_the_umask_is_read_once_and_put_back(monkeypatch):
    from lalmbench import io_utils

    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    monkeypatch.setattr(io_utils, "_umask_without_proc", None)
    previous = os.umask(0o022)
    try:
        os.umask(0o027)
        assert io_utils.current_umask() == 0o027
        assert io_utils.current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # put back
    finally:
        os.umask(previous)


# -- library calls put back what they change ---------------------------------------------------------------
def _process_state() -> dict:
    import logging
    import warnings

    import torch
    from huggingface_hub import constants

    ours = logging.getLogger("lalmbench")
    return {"filters": list(warnings.filters),
            "lalmbench logger": (ours.level, list(ours.handlers), ours.propagate),
            "transformers logger level": logging.getLogger("transformers").level,  # its handler is its own
            "environment": {name: os.environ.get(name) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_VERBOSITY")},
            "hub_offline": constants.HF_HUB_OFFLINE,
            "torch": (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                      torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.get_num_threads()),
            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


@pytest.fixture
def hub_unreachable(monkeypatch):
    """HF_HUB_OFFLINE unset and a hub that does not answer: lalmbench switches huggingface_hub offline."""
    from huggingface_hub import constants

    from lalmbench import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    monkeypatch.setattr(hub, "_probed", {})


def test_a_run_leaves_the_process_as_it_found_it(tmp_path, hub_unreachable):
    from run_helpers import run_inprocess, tiny_data

    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    before = _process_state()
    assert before["torch"][0] is False  # the run turns deterministic algorithms on, for itself only
    result = run_inprocess(train_yaml, eval_yaml, tmp_path / "out")
    assert (result.run_dir / "COMPLETED").is_file()
    assert "does not answer" in (result.run_dir / "log.txt").read_text()  # it did switch offline, for the run
    assert _process_state() == before


def test_a_run_on_another_rank_puts_back_its_silence():
    # Ranks other than 0 silence warnings and the transformers logger for the run (distributed.py).
    from lalmbench.distributed import _quiet_third_party
    from lalmbench.process_state import restored_process_state

    before = _process_state()
    with restored_process_state():
        _quiet_third_party()
        assert _process_state() != before
    assert _process_state() == before


@pytest.mark.slow  # 30-60 s on 2 busy cores: two bench paths at tiny sizes
def test_bench_leaves_the_process_as_it_found_it(tmp_path, hub_unreachable):
    from lalmbench.bench import PATHS, TINY, run_bench

    before = _process_state()
    paths = [path for path in PATHS if path[0] in ("naive", "target_logits")]
    run_bench(TINY, "cpu", tmp_path / "bench.json", paths=paths, compile_paths=False, measured_steps=1,
              echo=lambda line: None)
    assert _process_state() == before


def test_check_leaves_the_process_as_it_found_it(hub_unreachable):
    from lalmbench.encoders.check import run_checks

    before = _process_state()
    report = run_checks("lalmbench.encoders.LogMelEncoder")
    assert report.results and _process_state() == before


def test_demo_leaves_the_process_as_it_found_it(tmp_path, monkeypatch, hub_unreachable):
    from huggingface_hub import constants

    from lalmbench import demo, runner

    seen = []  # the demo needs no hub: offline for its run, and only for it (data and run left out: slow)
    monkeypatch.setattr(demo, "demo_data", lambda directory, seed: (directory / "train.yaml",
                                                                    directory / "eval.yaml", {}))
    monkeypatch.setattr(runner, "run", lambda *args, **kwargs: seen.append(
        (os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE)))
    before = _process_state()
    assert demo.demo_command(str(tmp_path / "demo")) == 0
    assert seen == [("1", False)] and _process_state() == before
