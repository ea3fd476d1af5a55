"""One failing process stops every process of a run, within seconds, with the failing process's message.

Two gloo processes on 127.0.0.1, one of which raises. Without the failure watch (distributed.py) the
others wait in their next collective: on GPUs (NCCL) until the collective timeout, because NCCL does
not notice a peer that has gone; with gloo until the failed process has exited, which may never happen
when something in it hangs (the `hang` cases). Either way the survivors never said why.

- The mechanism, with a bare script (no model): launched as two nodes or a batch scheduler start
  processes, without torchrun, so no launcher ends the survivors for them.
- Each stage of a real run under torchrun (tiny-random decoder, 2 steps, 8 training clips): the
  encoder file `stage_failing_encoder.py` makes process 1 (or 0 where only process 0 works: writing
  checkpoints, or scores) raise while preparing, training, checkpointing, evaluating or scoring.

The time from the failure to every process's exit is printed (`-s` shows it): 2.5-3 s for the bare
script and 3.5-5 s for a run under torchrun, on a 2-core machine busy with other jobs (load 9), where a
Python process that imported torch alone takes 1.5-4 s to exit. Each test takes 12-35 s there, most of
it two processes importing torch and transformers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from lalmbench.distributed import EXIT_GRACE_SECONDS, PEER_FAILED_EXIT_STATUS
from run_helpers import write_configs
from test_distributed import PROMPT, _env, _free_port, _write_tones

HERE = Path(__file__).parent
STOP_SECONDS = 20.0  # failure -> every process gone; measured 3-8 s on a loaded 2-core machine
SCRIPT_TIMEOUT = 90
RUN_TIMEOUT = 180


# -- the mechanism, with a bare script ---------------------------------------------------------------------
JOB = '''
import sys, threading, time
from pathlib import Path

from lalmbench.distributed import barrier, init_distributed, stops_every_process_on_failure, wait_for_main

failing, hang, mark = int(sys.argv[1]), sys.argv[2] == "hang", Path(sys.argv[3])


@stops_every_process_on_failure
def job():
    info = init_distributed("cpu")
    barrier(info)
    if info.rank == failing:
        if hang:  # a thread that never ends: this process cannot exit by itself
            threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()
        mark.write_text(repr(time.time()))
        raise RuntimeError(f"process {info.rank} gives up")
    wait_for_main(info)
    barrier(info)  # the survivors wait here for the failed process


job()
print("threads left:", sorted(t.name for t in threading.enumerate()), flush=True)
'''


def _launch_script(script: Path, failing: int, hang: bool, mark: Path) -> list[tuple[int, float, str]]:
    """Both processes as `torchrun --nnodes 2` on two machines, or `srun`, would start them: no agent
    that ends the others when one exits. Returns each process's (status, time it ended, its output)."""
    env = {**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    processes = [subprocess.Popen([sys.executable, str(script), str(failing), "hang" if hang else "-", str(mark)],
                                  env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for rank in range(2)]
    ended: list = [None, None]

    def wait(rank: int) -> None:
        out, err = processes[rank].communicate()
        ended[rank] = (processes[rank].returncode, time.time(), err + out)

    waiters = [threading.Thread(target=wait, args=(rank,)) for rank in range(2)]
    for waiter in waiters:
        waiter.start()
    deadline = time.monotonic() + SCRIPT_TIMEOUT
    for waiter in waiters:
        waiter.join(max(0.0, deadline - time.monotonic()))
    still_running = [rank for rank, process in enumerate(processes) if process.poll() is None]
    for rank in still_running:
        processes[rank].kill()
    for waiter in waiters:
        waiter.join()
    assert not still_running, f"process(es) {still_running} still ran after {SCRIPT_TIMEOUT} s: {ended}"
    return ended


@pytest.mark.parametrize("failing, hang", [(1, False), (0, False), (1, True)])
def test_a_failing_process_stops_the_other(tmp_path, failing, hang):
    # Process 0 also hosts the rendezvous store here (no torchrun agent), so its failure is covered too.
    script, mark = tmp_path / "job.py", tmp_path / "failed_at"
    script.write_text(JOB)
    ended = _launch_script(script, failing, hang, mark)
    survivor = 1 - failing
    (failed_status, failed_end, failed_text), (survivor_status, survivor_end, survivor_text) = ended[failing], ended[survivor]
    assert mark.is_file(), ended
    failed_at = float(mark.read_text())
    print(f"failing process {failing}{' (hung)' if hang else ''}: process {survivor} gone "
          f"{survivor_end - failed_at:.1f} s after the failure, process {failing} {failed_end - failed_at:.1f} s")
    assert survivor_status == PEER_FAILED_EXIT_STATUS, survivor_text
    assert failed_status != 0, failed_text
    assert re.search(rf"process {failing} failed: RuntimeError: process {failing} gives up \(at job.py:\d+ in job\); "
                     rf"stopping process {survivor} of 2", survivor_text), survivor_text
    assert f"RuntimeError: process {failing} gives up" in failed_text
    assert survivor_end - failed_at < STOP_SECONDS
    if hang:  # it ends itself once its report has been read and EXIT_GRACE_SECONDS have passed
        assert f"process {failing} is still running {EXIT_GRACE_SECONDS:g} s after its failure" in failed_text
        assert EXIT_GRACE_SECONDS <= failed_end - failed_at < EXIT_GRACE_SECONDS + STOP_SECONDS
    else:
        assert failed_end - failed_at < STOP_SECONDS


def test_a_good_run_leaves_nothing_watching(tmp_path):
    # Nobody fails: both exit 0, the watch thread is gone, and nothing complains about the store going
    # away as process 0 (its host here) exits first.
    script = tmp_path / "job.py"
    script.write_text(JOB)
    ended = _launch_script(script, 2, False, tmp_path / "unused")  # no process 2: no one fails
    for status, _, text in ended:
        assert status == 0, text
        assert "threads left: ['MainThread']" in text
        assert "rendezvous store" not in text and "failed" not in text, text


# -- process 0 killed while the others wait for its downloads ---------------------------------------------------
KILLED_MAIN = '''
import os, signal, sys, time
from pathlib import Path

from lalmbench.distributed import barrier, init_distributed, stops_every_process_on_failure, wait_for_main

mark = Path(sys.argv[1])


@stops_every_process_on_failure
def job():
    info = init_distributed("cpu")
    barrier(info)
    if info.rank == 0:  # killed while downloading: no report, no exit handler
        time.sleep(1.0)
        mark.write_text(repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)
    wait_for_main(info)


job()
'''
MAIN_SILENCE = 3.0  # LALMBENCH_MAIN_SILENCE_SECONDS for the test (default 60)


@pytest.mark.parametrize("store_host", ["launcher", pytest.param("process 0", marks=pytest.mark.slow)])  # 15-20 s each
def test_the_others_stop_when_process_0_is_killed_during_its_downloads(tmp_path, store_host):
    # Under torchrun the rendezvous store belongs to the launcher's agent and outlives process 0: the others
    # used to wait for its "done" without limit. Without torchrun process 0 hosts the store and takes it along.
    import torch.distributed as dist

    script, mark = tmp_path / "job.py", tmp_path / "killed_at"
    script.write_text(KILLED_MAIN)
    port, extra, agent_store = _free_port(), {"LALMBENCH_MAIN_SILENCE_SECONDS": str(MAIN_SILENCE)}, None
    if store_host == "launcher":  # this test plays the agent: it hosts the store, as torchrun's agent does
        agent_store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                                    timeout=timedelta(seconds=60))
        extra["TORCHELASTIC_USE_AGENT_STORE"] = "True"
    env = {**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", **extra}
    processes = [subprocess.Popen([sys.executable, str(script), str(mark)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}) for rank in range(2)]
    try:
        out, err = processes[1].communicate(timeout=SCRIPT_TIMEOUT)
        ended = time.time()
    finally:
        for process in processes:
            process.kill()
            process.communicate()
    del agent_store
    waited = ended - float(mark.read_text())
    print(f"store held by {store_host}: process 1 stopped {waited:.1f} s after process 0 was killed")
    assert processes[1].returncode not in (0, None), err
    text = err + out
    if store_host == "launcher":
        assert f"process 0 has given no sign of life for {MAIN_SILENCE:g} s while process 1 waits" in text, text
        assert "LALMBENCH_MAIN_SILENCE_SECONDS" in text
        assert MAIN_SILENCE <= waited < MAIN_SILENCE + STOP_SECONDS
    else:
        assert "process 1 lost the rendezvous store while waiting for process 0" in text, text
        assert waited < STOP_SECONDS


def test_a_slow_process_0_is_waited_for_as_long_as_it_lives(monkeypatch):
    # Process 0's downloads may take hours: its heartbeat, not a time limit, keeps the others waiting.
    import torch.distributed as dist

    from lalmbench.distributed import DistInfo, FailureWatch

    monkeypatch.setenv("LALMBENCH_MAIN_SILENCE_SECONDS", "1")
    port = _free_port()
    host = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=30))

    def watch(rank: int) -> FailureWatch:
        stores = tuple(dist.TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False,
                                     timeout=timedelta(seconds=30)) for _ in range(2))
        return FailureWatch(DistInfo(rank, 2), stores, "slow-main")

    main, other = watch(0), watch(1)
    main._thread.start()  # its heartbeat
    done = threading.Timer(3.5, main.wait_for_main)  # process 0 is done after three and a half silences
    done.start()
    started = time.monotonic()
    try:
        other.wait_for_main()
        waited = time.monotonic() - started
    finally:
        done.join()
        main._closing.set()
        main._thread.join()
        del host
    assert 3.5 <= waited < 10


def test_collective_timeout_default_and_setting(monkeypatch):
    from lalmbench.distributed import _timeout

    monkeypatch.delenv("LALMBENCH_DIST_TIMEOUT_MINUTES", raising=False)
    assert _timeout() == timedelta(minutes=30)
    monkeypatch.setenv("LALMBENCH_DIST_TIMEOUT_MINUTES", "2.5")
    assert _timeout() == timedelta(seconds=150)


# -- every stage of a real run, under torchrun -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stop_data")
    train = _write_tones(root, "train", 2, 4, 1)
    test = _write_tones(root, "test", 1, 4, 2)
    return write_configs(root, {"tones": train}, test, prompt=PROMPT, batch_size=2, prob=1,  # a test batch each
                         train_settings={"decoder_model_name": "tiny-random"})


RUN_ARGS = {"max_steps": 2, "save_steps": 1, "max_new_tokens": 1, "torch_num_threads": 1, "lora_r": 2,
            "shuffle_buffer": 1, "sort_buffer": 2}


# Two stages run in the default suite (a failure in training on process 1, in scoring on process 0); the
# other three take 7-14 s each on 2 cores and run with `-m slow`.
@pytest.mark.parametrize("stage, failing, after", [
    pytest.param("prepare", 1, 0, marks=pytest.mark.slow),     # building the encoder, before any data is read
    ("train", 1, 1),                                           # the data stream, in the second step
    pytest.param("checkpoint", 0, 0, marks=pytest.mark.slow),  # process 0 writes the first checkpoint; 1 waits
    pytest.param("evaluate", 1, 0, marks=pytest.mark.slow),    # answering the test set
    ("score", 0, 0),        # process 0 scores; process 1 has scored and waits for the end of the run
])
def test_every_stage_of_a_run_stops_both_processes(tiny_data, tmp_path, stage, failing, after):
    train_yaml, eval_yaml = tiny_data
    mark, logs, output = tmp_path / "failed_at", tmp_path / "logs", tmp_path / "out"
    model_args = {"stage": stage, "rank": failing, "after": after, "mark": str(mark)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), "--redirects", "3", "--log-dir", str(logs), "-m", "lalmbench",
               "run", str(HERE / "stage_failing_encoder.py"), str(train_yaml), str(eval_yaml),
               "--args", json.dumps(RUN_ARGS), "--model-args", json.dumps(model_args), "--output-dir", str(output),
               "--no-report"]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    ended = time.time()
    launcher = done.stdout + done.stderr
    assert done.returncode != 0, launcher[-3000:]
    assert mark.is_file(), f"the injected failure did not happen:\n{launcher[-3000:]}"
    stopped = ended - float(mark.read_text())
    print(f"stage {stage}, failing process {failing}: every process gone {stopped:.1f} s after the failure")
    assert stopped < STOP_SECONDS

    survivor = 1 - failing
    survivor_text = "".join(p.read_text() for p in logs.rglob(f"attempt_0/{survivor}/std*.log"))
    failed_text = "".join(p.read_text() for p in logs.rglob(f"attempt_0/{failing}/std*.log"))
    message = f"injected failure at stage {stage} on process {failing}"
    assert message in failed_text
    said = f"process {failing} failed: "
    assert said in survivor_text and message in survivor_text.split(said, 1)[1].splitlines()[0], survivor_text[-3000:]
    assert f"stopping process {survivor} of 2" in survivor_text
    # torchrun's summary names the failed process as the root cause, with its message.
    root_cause = launcher.split("Root Cause (first observed failure):", 1)[1]
    assert re.search(rf"rank\s*: {failing} \(local_rank: {failing}\)", root_cause) and message in root_cause, (
        launcher[-3000:])
    # Process 0 also writes what happened to process 1 into the run's log.
    run_log = output / "train" / "stage_failing_encoder" / "log.txt"
    if failing == 1 and run_log.is_file():
        assert f"process 1 failed: RuntimeError: {message}" in run_log.read_text()
