"""Several processes: the batch plan, the rank split of the training stream, and real 2-process runs.

The exact check is `test_ddp_step_equals_one_process_step`: one Trainer step on the same 4 examples
gives the same loss and gradients with 1 process, with 2 accumulated micro-batches, and with 2 DDP
processes (gloo). The end-to-end runs launch `python -m torch.distributed.run --nproc-per-node 2 -m
lalmbench run ...` on the CPU (gloo over 127.0.0.1, one thread per process) and compare them with a
1-process run of the same global batch. Those two runs cannot match exactly: with two ranks each reads
its own half of the shards, so examples meet in another order and each step sees another set of 4.
The task is the synthetic tones task below with single-token labels, scored on the first generated
token (max_new_tokens 1), seed 42, 60 steps. Tolerances, and why:
  - accuracy within 0.25 (5 of the 20 test clips) and both at least 0.5 (best constant answer ~0.3);
  - mean loss of the last 30 steps within max(3 standard errors of the difference, 0.25 nats): the
    loss jumps from step to step (each step sees 4 examples), and another data order alone moves it
    that much: 1-process runs with seeds 1 and 2 end 0.65 nats apart (100 steps), and 2- minus
    1-process tail losses of one seed ranged from -0.37 to +0.14 nats (seeds 1, 2, 42; 60 or 100
    steps): no direction, data-order noise;
  - both runs learn: the tail loss is under a quarter of the first steps' loss.
These runs are deterministic, so the test is stable; a change of the model or data code can move
the numbers within the same noise.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lalmbench.config import TrainConfig, dump_yaml
from lalmbench.errors import ConfigError
from lalmbench.train import batch_plan

LABELS = ["red", "green", "yellow", "orange", "purple"]  # one token each in the tiny-random tokenizer
PROMPT = "Classify the tone."
TRAIN_SHARDS, PER_TRAIN_SHARD, TEST_SHARDS, PER_TEST_SHARD = 4, 16, 2, 10
# Protocol corrected: the tolerances below were measured on packed rows. Under official every micro-batch
# pads to its own longest frame block, so 2 x 2 and 1 x 4 examples are other computations on top of the
# other data order (measured at 60 steps: 1 process 0.45, 2 processes 0.90), more noise than these
# tolerances were set for; the process mechanics checked here are the same under both protocols.
RUN_ARGS = {"protocol": "corrected", "max_steps": 60, "save_steps": 20, "max_new_tokens": 1, "torch_num_threads": 1,
            "learning_rate": 3e-3, "warmup_steps": 5, "shuffle_buffer": 16, "sort_buffer": 8}
RUN_TIMEOUT = 150


# -- data ------------------------------------------------------------------------------------------------
def _write_tones(directory: Path, split: str, shards: int, per_shard: int, seed: int) -> list[Path]:
    import webdataset as wds

    from lalmbench.demo import TONE_CLASSES, _encode, _noise, _tone

    rng = np.random.default_rng(seed)
    paths = []
    for shard in range(shards):
        path = directory / f"tones-{split}-{shard:06d}.tar"
        with wds.TarWriter(str(path), mtime=0.0) as sink:
            for index in range(per_shard):
                label = LABELS[int(rng.integers(len(LABELS)))]
                seconds = float(rng.uniform(0.4, 0.8))
                audio = _tone(TONE_CLASSES[label], seconds, 16_000, rng) + _noise(int(seconds * 16_000), rng)
                key = f"{split}_{shard}_{index:03d}"
                sink.write({"__key__": key, "wav": _encode(audio, 16_000, "wav"),
                            "json": json.dumps({"label": label}).encode()})
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_data")
    train = _write_tones(root, "train", TRAIN_SHARDS, PER_TRAIN_SHARD, 1)
    test = _write_tones(root, "test", TEST_SHARDS, PER_TEST_SHARD, 2)
    train_yaml, eval_yaml = root / "train.yaml", root / "eval.yaml"
    train_yaml.write_text(dump_yaml({
        "decoder_model_name": "tiny-random",
        "train_data": {"tones": {"prompt": PROMPT, "data": [str(p) for p in train], "key": "label", "prob": 1}}}))
    eval_yaml.write_text(dump_yaml({"eval_tones": {
        "data": {"data": [str(p) for p in test], "key": "label", "prompt": PROMPT},
        "batch_size": 4, "num_workers": 0, "metric": "Accuracy", "metric_args": {}, "weight": 1}}))
    return {"root": root, "train": train, "test": test, "train_yaml": train_yaml, "eval_yaml": eval_yaml}


# -- unit tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("world, per_device, global_batch, expected", [
    (1, 4, None, (4, 4, 1)),
    (2, 4, None, (4, 2, 1)),
    (4, 4, None, (4, 1, 1)),
    (1, 2, None, (4, 2, 2)),   # a smaller per-device batch keeps the global 4 by accumulation
    (2, 1, None, (4, 1, 2)),
    (1, 1, None, (4, 1, 4)),
    (3, 4, 6, (6, 2, 1)),      # a larger global batch, chosen on purpose
    (2, 2, 8, (8, 2, 2)),
    (1, 4, 6, (6, 3, 2)),      # the micro-batch divides the per-rank share
])
def test_batch_plan(world, per_device, global_batch, expected):
    config = TrainConfig(per_device_train_batch_size=per_device, global_batch_size=global_batch)
    assert batch_plan(config, world) == expected
    total, micro, accumulation = batch_plan(config, world)
    assert micro * accumulation * world == total


def test_batch_plan_refuses_a_split_it_cannot_make():
    with pytest.raises(ConfigError, match="global_batch_size.*6"):
        batch_plan(TrainConfig(), 3)  # 4 examples over 3 processes: the message proposes 6


def _one_pass(shards: list[Path], rank: int, world: int) -> list[tuple[str, str]]:
    """(shard, key) of the examples one rank reads in the first pass over its dataset."""
    from lalmbench.config import DatasetSpec
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.data.mixture import TrainStream

    spec = DatasetSpec(name="tones", data=[str(p) for p in shards], key="label", prompt=PROMPT, prob=1)
    stream = TrainStream([spec], {"tones": shards}, 2, 42, lambda name, text: 1, BadDataCounter(),
                         rank=rank, world=world)
    seen = []
    for example in stream._dataset_examples(0):
        if example.ref.epoch > 0:
            break
        seen.append((example.ref.shard, example.ref.key))
    return seen


@pytest.mark.parametrize("which, world", [("train", 2), ("train", 3), ("test", 3)])
def test_train_stream_ranks_read_disjoint_parts_covering_all(data, which, world):
    # 4 shards over 2 ranks: 2 shards each; 4 over 3: 2/1/1 shards; 2 shards over 3 ranks: each rank
    # reads every shard and keeps the records whose index is its rank modulo 3.
    from lalmbench.data.examples import iter_records

    shards = data[which]
    everything = {(str(s), r.key) for s in shards for r in iter_records(s)}
    parts = [_one_pass(shards, rank, world) for rank in range(world)]
    for part in parts:
        assert part and len(part) == len(set(part))
    assert sum(len(p) for p in parts) == len(everything)
    assert set().union(*map(set, parts)) == everything


def test_plain_run_on_several_gpus_uses_one_and_says_how(monkeypatch):
    import logging

    from lalmbench.distributed import DistInfo
    from lalmbench.phases.preparation import _pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("lalmbench")
    logger.addHandler(handler)
    try:
        assert _pick_device(TrainConfig(), DistInfo()) == torch.device("cuda", 0)
        assert any("4 GPUs found; this run uses one" in m and "torchrun --nproc-per-node 4" in m for m in messages)
        messages.clear()
        # Under torchrun each rank takes its local GPU, also when the config names just "cuda".
        assert _pick_device(TrainConfig(), DistInfo(rank=3, world=4, local_rank=1)) == torch.device("cuda", 1)
        assert _pick_device(TrainConfig(device="cuda"), DistInfo(rank=3, world=4, local_rank=1)) == torch.device("cuda", 1)
        assert not messages
    finally:
        logger.removeHandler(handler)


# -- one optimizer step: DDP over 2 processes equals 1 process on the same 4 examples ---------------------
def _fixed_examples() -> dict:
    generator = torch.Generator().manual_seed(0)
    lengths = [16_000, 12_000, 8_000, 14_000]
    audio = torch.zeros(4, max(lengths))
    mask = torch.zeros(4, max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        audio[row, :length] = 0.3 * torch.randn(length, generator=generator)
        mask[row, :length] = 1
    return {"audio": audio, "audio_mask": mask, "prompt_ids": [[5, 6, 7]] * 4,
            "target_ids": [[40, 2], [41, 42, 2], [43, 2], [44, 45, 46, 2]]}  # unequal token counts


def _rows(batch: dict, rows: list[int]) -> dict:
    longest = int(batch["audio_mask"][rows].sum(-1).max())
    return {"audio": batch["audio"][rows, :longest], "audio_mask": batch["audio_mask"][rows, :longest],
            "prompt_ids": [batch["prompt_ids"][r] for r in rows], "target_ids": [batch["target_ids"][r] for r in rows]}


def _one_step(rank: int, world: int, per_device: int, run_dir: str) -> tuple[float, dict]:
    """Loss and the (synchronized, clipped) gradients of one Trainer step on the fixed 4 examples."""
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.distributed import DistInfo
    from lalmbench.encoders.contract import FrozenEncoder
    from lalmbench.encoders.logmel import LogMelEncoder
    from lalmbench.model.audio_llm import AudioLLM, add_lora
    from lalmbench.model.decoder import load_decoder
    from lalmbench.train import Trainer

    torch.manual_seed(0)
    config = TrainConfig(per_device_train_batch_size=per_device, lora_dropout=0.0, learning_rate=1e-2,
                         warmup_steps=0, max_steps=10)
    decoder, tokenizer = load_decoder("tiny-random", seed=0)
    # Packed rows (protocol corrected): a row's loss does not depend on its batch mates, so splitting the
    # batch changes nothing. Under official each micro-batch has its own frame block, as in the published system.
    model = AudioLLM(FrozenEncoder(LogMelEncoder()), add_lora(decoder, 8, 32, 0.0), tokenizer, protocol="corrected")
    trainer = Trainer(model, config, Path(run_dir), DistInfo(rank, world), torch.device("cpu"), None, None,
                      BadDataCounter(), "identity", show_progress=False)
    share = list(range(4))[rank * 4 // world:(rank + 1) * 4 // world]  # this rank's part of the global batch
    micro = [_rows(_fixed_examples(), share[i:i + trainer.micro_batch])
             for i in range(0, len(share), trainer.micro_batch)]
    assert len(micro) == trainer.accumulation
    gradients, optimizer_step = {}, trainer.optimizer.step

    def capture(*args, **kwargs):  # the gradients the optimizer is about to use
        gradients.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return optimizer_step(*args, **kwargs)

    trainer.optimizer.step = capture
    loss, _ = trainer._step(micro)
    return loss, gradients


def _ddp_worker(rank: int, world: int, port: int, run_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loss, gradients = _one_step(rank, world, 4, run_dir)
        torch.save({"loss": loss, "gradients": gradients}, Path(run_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_ddp_step_equals_one_process_step(tmp_path):
    # The global token mean over 2 ranks (DDP averages gradients; the loss is scaled by the world size)
    # and over 2 accumulated micro-batches must give the step one process takes on all 4 examples.
    import torch.multiprocessing as mp

    loss_one, gradients_one = _one_step(0, 1, 4, str(tmp_path))
    loss_accumulated, gradients_accumulated = _one_step(0, 1, 2, str(tmp_path))
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert loss_accumulated == pytest.approx(loss_one, rel=1e-5)
    for result in ranks:
        assert result["loss"] == pytest.approx(loss_one, rel=1e-5)
    # Gradients, not weights, are compared: Adam's first update is about lr * g / (|g| + eps), which
    # turns float-rounding differences of gradients near eps into visible weight differences.
    scale = max(float(g.abs().max()) for g in gradients_one.values())
    assert scale > 0 and set(gradients_accumulated) == set(gradients_one) == set(ranks[0]["gradients"])
    for name, value in gradients_one.items():
        torch.testing.assert_close(gradients_accumulated[name], value, rtol=1e-4, atol=1e-6 * scale)
        for result in ranks:
            torch.testing.assert_close(result["gradients"][name], value, rtol=1e-4, atol=1e-6 * scale)


# -- real runs -------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command(data, nproc: int, output: Path, args: dict) -> list[str]:
    launcher = [sys.executable, "-m", "lalmbench"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                    "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "lalmbench"]
    return launcher + ["run", "lalmbench.encoders.LogMelEncoder", str(data["train_yaml"]), str(data["eval_yaml"]),
                       "--args", json.dumps(args), "--output-dir", str(output), "--no-report"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    return env


def _run(data, nproc: int, output: Path, args: dict = RUN_ARGS) -> tuple[Path, str, float]:
    started = time.perf_counter()
    done = subprocess.run(_command(data, nproc, output, args), env=_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, f"{nproc}-process run failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    run_dir = output / "train" / "LogMelEncoder"
    assert run_dir.is_dir(), sorted(p.name for p in output.rglob("*"))
    return run_dir, done.stdout + done.stderr, seconds


def _predictions(run_dir: Path) -> list[dict]:
    with open(run_dir / "predictions_eval_tones.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    with open(run_dir / "train_log.csv", newline="") as handle:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(handle)]


def _score(run_dir: Path) -> float:
    rows = (run_dir / "scores.tsv").read_text().splitlines()
    return float(dict(line.split("\t")[:2] for line in rows[1:])["eval_tones"])


def _test_keys(data) -> list[str]:
    from lalmbench.data.examples import iter_records

    return [record.key for shard in data["test"] for record in iter_records(shard)]


def test_two_processes_match_one(data, tmp_path):
    two, two_log, two_seconds = _run(data, 2, tmp_path / "two")
    one, _, one_seconds = _run(data, 1, tmp_path / "one")
    print(f"wall time, whole run: 1 process {one_seconds:.1f} s, 2 processes {two_seconds:.1f} s")
    steps = RUN_ARGS["max_steps"]

    # How it was trained, recorded.
    for run_dir, world, micro in ((two, 2, 2), (one, 1, 4)):
        done = json.loads((run_dir / "training_complete.json").read_text())
        assert (done["world_size"], done["global_batch_size"], done["per_device_batch_size"],
                done["gradient_accumulation_steps"], done["steps"]) == (world, 4, micro, 1, steps)
        summary = json.loads((run_dir / "run_summary.json").read_text())
        assert (summary["world_size"], summary["train_world_size"], summary["global_batch_size"]) == (world, world, 4)

    # Every test example scored exactly once, in shard order.
    keys = _test_keys(data)
    assert len(keys) == TEST_SHARDS * PER_TEST_SHARD
    for run_dir in (two, one):
        predictions = _predictions(run_dir)
        assert [row["key"] for row in predictions] == keys
        assert json.loads((run_dir / "run_summary.json").read_text())["tasks"]["eval_tones"]["num_examples"] == len(keys)

    # Checkpoints written once: the last save_total_limit of them, no leftovers of a second writer.
    for run_dir in (two, one):
        names = sorted(p.name for p in run_dir.iterdir() if "checkpoint" in p.name)
        assert names == [f"checkpoint-{steps - RUN_ARGS['save_steps']}", f"checkpoint-{steps}"]
        assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
        assert [s for s, _ in _losses(run_dir)] == list(range(1, steps + 1))

    # Log lines from rank 0 only: each message once, on the console and in log.txt.
    for text in (two_log, (two / "log.txt").read_text()):
        assert text.count("global batch 4 = 2 process(es) x 2 example(s) x 1 accumulation step(s)") == 1
        assert text.count("saved ") == steps // RUN_ARGS["save_steps"]
        assert text.count("eval_tones [Accuracy]") == 1
    assert two_log.count("Results in ") == 1

    # Same quality within the tolerances explained at the top of this file.
    two_score, one_score = _score(two), _score(one)
    print(f"accuracy: 1 process {one_score:.3f}, 2 processes {two_score:.3f}")
    assert abs(two_score - one_score) <= 0.25, (two_score, one_score)
    assert min(two_score, one_score) >= 0.5, (two_score, one_score)
    two_losses, one_losses = [l for _, l in _losses(two)], [l for _, l in _losses(one)]
    two_tail, one_tail = np.asarray(two_losses[-30:]), np.asarray(one_losses[-30:])
    difference = abs(two_tail.mean() - one_tail.mean())
    standard_error = np.sqrt(two_tail.var(ddof=1) / len(two_tail) + one_tail.var(ddof=1) / len(one_tail))
    print(f"mean loss of the last 30 steps: 1 process {one_tail.mean():.4f}, 2 processes {two_tail.mean():.4f}, "
          f"difference {difference:.4f} (standard error {standard_error:.4f})")
    assert difference <= max(3 * standard_error, 0.25), (difference, standard_error)
    for losses, tail in ((two_losses, two_tail), (one_losses, one_tail)):
        assert tail.mean() < 0.25 * np.mean(losses[:3]), (losses[:3], tail.mean())


def test_accelerate_launch_runs_two_processes(data, tmp_path):
    # `accelerate launch --multi_gpu` starts torchrun; without GPUs the processes fall back on gloo.
    pytest.importorskip("accelerate")
    args = {**RUN_ARGS, "max_steps": 10, "save_steps": 10}
    command = _command(data, 1, tmp_path, args)
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()), "-m", "lalmbench"]
    done = subprocess.run(accelerate + command[3:], env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-6000:]
    run_dir = tmp_path / "train" / "LogMelEncoder"
    record = json.loads((run_dir / "training_complete.json").read_text())
    assert (record["world_size"], record["global_batch_size"], record["per_device_batch_size"]) == (2, 4, 2)
    assert [row["key"] for row in _predictions(run_dir)] == _test_keys(data)


def _descendants(pid: int) -> list[int]:
    """Child processes, recursively (from /proc: torchrun starts its workers in their own sessions)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def test_two_processes_report_the_bad_data_of_both(tmp_path):
    # Each process reads and decodes its own part of the data; the summary holds the totals.
    # Training: 2 shards of 8 records, one a process, r2 of each without a label. No shuffling (buffer 1)
    # and micro-batches of 2: after 3 steps each process consumed r0, r1, r3-r6, so it read r0-r6:
    # 7 seen, 1 skipped. Test set: 5 records, r1 holds NaN samples (header fine), r3 has no label; the
    # batches of the usable ones are dealt to the processes in turn, and the one that decodes r1 counts its
    # failure; the counts are gathered.
    from run_helpers import good_records, nan_wav, write_configs, write_shard

    root = tmp_path / "data"
    train = []
    for index in range(2):
        records = good_records(f"train{index}", 8, seed=index)
        records[2]["json"] = json.dumps({"colour": "red"}).encode()
        train.append(write_shard(root / f"train-{index}.tar", records))
    test_records = good_records("test", 5, seed=5)
    test_records[1]["wav"] = nan_wav()
    test_records[3]["json"] = json.dumps({"colour": "red"}).encode()
    train_yaml, eval_yaml = write_configs(root, {"tones": train}, [write_shard(root / "test.tar", test_records)])
    # (the hand count follows lalmbench's own stream, protocol corrected: one shard a process)
    args = {"decoder_model_name": "tiny-random", "max_steps": 3, "save_steps": 3, "shuffle_buffer": 1,
            "sort_buffer": 2, "max_new_tokens": 1, "torch_num_threads": 1, "lora_r": 2, "max_bad_fraction": 0.5,
            "protocol": "corrected"}
    run_dir, _, _ = _run({"train_yaml": train_yaml, "eval_yaml": eval_yaml}, 2, tmp_path / "out", args)

    per_rank = json.loads((run_dir / "checkpoint-3" / "data_state.json").read_text())["ranks"]
    for rank in per_rank:
        assert (rank["bad_data"]["tones"]["examples_seen"], rank["bad_data"]["tones"]["skipped"]) == (7, {"missing key": 1})
    trained = json.loads((run_dir / "training_complete.json").read_text())["bad_data"]["tones"]
    assert (trained["examples_seen"], trained["skipped"]) == (14, {"missing key": 2})
    bad = json.loads((run_dir / "run_summary.json").read_text())["bad_data"]
    assert bad["tones"] == trained
    assert (bad["eval_tones"]["examples_seen"], bad["eval_tones"]["skipped"]) == (
        5, {"missing key": 1, "undecodable audio": 1})
    assert [row["key"] for row in _predictions(run_dir)] == ["test_0000", "test_0002", "test_0004"]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc to find torchrun's workers")
def test_resume_a_two_process_checkpoint_with_one_process(data, tmp_path):
    args = {**RUN_ARGS, "max_steps": 100, "save_steps": 10}
    output = tmp_path / "out"
    run_dir = output / "train" / "LogMelEncoder"
    launcher = subprocess.Popen(_command(data, 2, output, args), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (run_dir / "checkpoint-10" / "checkpoint.json").is_file():
            assert launcher.poll() is None, "the 2-process run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.02)
    finally:
        for pid in _descendants(launcher.pid) + [launcher.pid]:  # the whole job, as a node failure would
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launcher.wait(timeout=30)
    assert not (run_dir / "training_complete.json").exists(), "killed too late: the run had finished"
    killed_at = max(int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit())
    assert killed_at < args["max_steps"]

    run_dir_again, log, _ = _run(data, 1, output, args)
    assert run_dir_again == run_dir
    assert "resuming a 2-process checkpoint with 1 processes" in log
    done = json.loads((run_dir / "training_complete.json").read_text())
    assert (done["world_size"], done["global_batch_size"], done["steps"]) == (1, 4, args["max_steps"])
    steps = [s for s, _ in _losses(run_dir)]
    assert steps == list(range(1, args["max_steps"] + 1))  # rows after the checkpoint were dropped, once
    # Bad-data counts carry over from both old ranks: each of the 4 x 16 training examples counted once,
    # though 4 x 100 were trained on.
    seen = json.loads((run_dir / "run_summary.json").read_text())["bad_data"]["tones"]["examples_seen"]
    assert seen == TRAIN_SHARDS * PER_TRAIN_SHARD, seen
    assert [row["key"] for row in _predictions(run_dir)] == _test_keys(data)


POISON_ENCODER = '''
from lalmbench.encoders import logmel


class PoisonEncoder(logmel.LogMelEncoder):
    """LogMelEncoder that fails on one training clip, identified by its exact length in samples."""

    def __init__(self, poison_samples: int = 0):
        super().__init__()
        self.poison_samples = poison_samples

    def forward(self, audio, audio_attention_mask=None):
        if audio_attention_mask is not None and bool((audio_attention_mask.sum(-1) == self.poison_samples).any()):
            raise RuntimeError("poisoned clip")
        return super().forward(audio, audio_attention_mask)
'''


def test_encoder_failing_on_one_process_stops_every_process(data, tmp_path):
    # The poisoned clip lives in one training shard, so exactly one of the two processes meets it; the
    # other must not wait for it in the gradient all-reduce: both stop, with a checkpoint, and the
    # message names the clip.
    import soundfile as sf

    from lalmbench.data.examples import iter_records

    victim = next(r for r in iter_records(data["train"][1]) if r.key == "train_1_005")
    samples = sf.info(io.BytesIO(victim.audio)).frames
    encoder = tmp_path / "poison_encoder.py"
    encoder.write_text(POISON_ENCODER)
    command = _command(data, 2, tmp_path / "out", {**RUN_ARGS, "max_steps": 40})
    command[command.index("lalmbench.encoders.LogMelEncoder")] = str(encoder)
    command += ["--model-args", json.dumps({"poison_samples": samples})]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "train_1_005" in output and "poisoned clip" in output
    assert "A checkpoint of step" in output
    run_dir = tmp_path / "out" / "train" / "poison_encoder"
    assert any((p / "checkpoint.json").is_file() for p in run_dir.glob("checkpoint-*"))
