"""Thread counts follow the cores this process may use (lalmbench.threads)."""

import os
import subprocess
import sys

import torch

from lalmbench import threads


def _cgroup_v2(tmp_path, text):
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def test_cgroup_v2_quota_is_read(tmp_path):
    assert threads.cgroup_cpu_limit(_cgroup_v2(tmp_path, "150000 100000\n")) == 1.5


def test_cgroup_v2_without_quota(tmp_path):
    assert threads.cgroup_cpu_limit(_cgroup_v2(tmp_path, "max 100000\n")) is None


def test_cgroup_v1_quota_is_read(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == 0.5


def test_cgroup_v1_unlimited(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) is None


def test_usable_cpus_takes_the_smaller_of_affinity_and_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "_affinity_cpus", lambda: 8)
    assert threads.usable_cpus(_cgroup_v2(tmp_path, "250000 100000")) == 3  # 2.5 CPUs -> 3 threads
    assert threads.usable_cpus(_cgroup_v2(tmp_path, "10000 100000")) == 1  # a tenth of a CPU -> 1
    assert threads.usable_cpus(_cgroup_v2(tmp_path, "max 100000")) == 8
    monkeypatch.setattr(threads, "_affinity_cpus", lambda: 2)
    assert threads.usable_cpus(_cgroup_v2(tmp_path, "400000 100000")) == 2


def test_configure_threads_sets_torch(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
        assert threads.configure_threads(None) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_affinity_limits_threads_in_a_fresh_process():
    """Under taskset-like affinity of one core, a run's torch pool has one thread."""
    if not hasattr(os, "sched_setaffinity"):
        return
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from lalmbench.threads import configure_threads; import torch; "
            "configure_threads(None); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_cli_asks_openmp_to_sleep_while_waiting():
    code = ("import os, sys; from lalmbench import cli; cli.main(['tasks', 'nonexistent-suite-name']); "
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split()[-2:] == ["PASSIVE", "False"]  # set, and before torch was imported
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    code = "from lalmbench.threads import prefer_sleeping_waits; import os; prefer_sleeping_waits(); print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "ACTIVE"  # the user's own choice stays
