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
