"""The training loop: AdamW, warm-up + linear decay, clipping, checkpoints and resume.

One optimizer step consumes the global batch (4 by default): `accumulation` micro-batches on each of
`world` ranks. The loss of a step is the mean over every target token of the global batch, the same
number one process computes on the whole batch, so scores stay comparable across world sizes.

Checkpoints are directories `checkpoint-<step>` in the run directory, built under a temporary name and
renamed into place, each ending with a `checkpoint.json` marker: trainable weights (LoRA + projector;
under protocol official also the encoder buffers its train-mode forwards update, BatchNorm statistics),
optimizer, scheduler, RNG states and every rank's data position. Resuming from one continues the exact
run: in deterministic mode the final weights equal those of an uninterrupted run. Every file of a checkpoint
holds tensors and plain values only (JSON, or torch files read with weights_only=True, `load_tensor_file`),
so resuming a run directory someone else wrote cannot run code.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import pickle
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lalmbench.config import TrainConfig
from lalmbench.data.batches import DataPosition, stream_batches
from lalmbench.data.examples import BadDataCounter, ExampleRef
from lalmbench.distributed import DistInfo, all_sum, barrier, gather_objects
from lalmbench.errors import CheckpointError, ConfigError, EncoderFailure, EncoderFailureOnRanks, EncoderRuntimeError
from lalmbench.io_utils import atomic_directory, atomic_write_text
from lalmbench.progress import Progress, format_duration
from lalmbench.threads import configure_threads

log = logging.getLogger("lalmbench")

CHECKPOINT_MARKER = "checkpoint.json"
# Written into each marker. 2: every file of a checkpoint loads with torch.load(weights_only=True), the random
# states stored as tensors and plain values. Markers without it (format 1) come with an rng.pt of numpy arrays
# and Python tuples that only full unpickling reads, which could run code: such checkpoints are not read.
CHECKPOINT_FORMAT = 2
START_ANEW = ("To train this run again from the start, rerun the command with --force (the run directory is set "
              "aside as <name>.replaced-<time>; nothing is deleted).")
TRAIN_LOG_HEADER = ["step", "loss", "learning_rate", "grad_norm", "elapsed_seconds"]


def configure_determinism(config: TrainConfig) -> None:
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    configure_threads(config.torch_num_threads)  # the usable cores, not the machine's (lalmbench.threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # Strict: an operation without a deterministic kernel raises (the runner names it and the setting
        # that allows it) instead of warning while the run goes on claiming to be reproducible.
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
    allow_tf32 = bool(config.tf32) and not config.deterministic
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


_NO_DETERMINISTIC_KERNEL = " does not have a deterministic implementation"


def nondeterministic_operation(exc: BaseException | None) -> str | None:
    """The operation torch names in its 'X does not have a deterministic implementation' error, found
    anywhere in the chain of `exc` (encoder errors arrive wrapped, other processes' as text), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        before, found, _ = str(exc).partition(_NO_DETERMINISTIC_KERNEL)
        if found and before.split():
            return before.split()[-1]
        exc = exc.__cause__ or exc.__context__
    return None


PROTOCOL_GLOBAL_BATCH = 4  # the published single-GPU setup: 4 examples per optimizer step


def batch_plan(config: TrainConfig, world: int) -> tuple[int, int, int]:
    """(global batch, per-device micro-batch, accumulation steps) for `world` ranks.

    The global batch is `global_batch_size` when set, else the protocol's 4, whatever the world size;
    `per_device_train_batch_size` only caps the micro-batch (smaller means gradient accumulation).
    """
    global_batch = config.global_batch_size or PROTOCOL_GLOBAL_BATCH
    if global_batch % world:
        raise ConfigError(
            f"the global batch of {global_batch} cannot be split over {world} processes. Keep the protocol's "
            f"batch with a world size dividing it, or choose a larger global batch on purpose with "
            f"--args '{{\"global_batch_size\": {world * math.ceil(global_batch / world)}}}' (recorded in the run).")
    per_rank = global_batch // world
    micro = min(per_rank, config.per_device_train_batch_size)
    while per_rank % micro:
        micro -= 1
    return global_batch, micro, per_rank // micro


def make_optimizer(model: torch.nn.Module, config: TrainConfig):
    from transformers import get_linear_schedule_with_warmup  # here: a heavy import, loaded with the decoder anyway

    # As the published (Hugging Face Trainer) setup: no weight decay on biases and norm weights.
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    # The published schedule: linear warmup to learning_rate, then linear decay to 0 at max_steps.
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps)
    return optimizer, scheduler


def _rng_state() -> dict:
    """This process's random states as tensors and plain values only (no numpy array, no tuple), so that the
    file holding them loads with torch.load(weights_only=True)."""
    version, python_state, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {"torch": torch.random.get_rng_state(),
             "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                        "gauss_next": gauss_next},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_tensor_file(path: Path, map_location=None):
    """What a torch file in a run directory holds, read with torch.load(weights_only=True): tensors and plain
    values only, never other objects, whose unpickling could run code from a file someone else wrote or
    altered. CheckpointError naming the file when it holds anything else or is damaged."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values ({_refused_object(str(exc))}); it is not "
            f"read, since unpickling them could run code. It is damaged, was altered, or was not written by "
            f"lalmbench. {START_ANEW}") from None
    except Exception as exc:  # garbage makes the loader fail in many ways (IndexError, RuntimeError, EOFError, ...)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}: {first_line}); it is damaged or "
                              f"incomplete. {START_ANEW}") from None


def _refused_object(message: str) -> str:
    """The part of torch's weights_only refusal that names what it refused (not its advice to load the file
    unsafely)."""
    for line in message.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().removeprefix("WeightsUnpickler error: ").split(" Please use")[0].rstrip(". ")
    return "refused by torch's weights-only loader"


def _read_checkpoint_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path} cannot be read as JSON ({type(exc).__name__}: {exc}); it is damaged or "
                              f"was altered. {START_ANEW}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds a JSON {type(value).__name__}, not the mapping lalmbench writes; it "
                              f"is damaged or was altered. {START_ANEW}")
    return value


def _json_safe(obj):
    if isinstance(obj, ExampleRef):
        return obj.__dict__
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (marker present), oldest first."""
    found = []
    for path in run_dir.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / CHECKPOINT_MARKER).is_file():
            found.append((int(suffix), path))
    return sorted(found)


@dataclass
class TrainState:
    step: int = 0
    elapsed: float = 0.0
    losses: list = field(default_factory=list)


class Trainer:
    """Runs optimizer steps over a stream of (micro-batch, data snapshot) pairs on one rank.

    `counter` is the one the stream counts into; the batch maker counts decode failures into its own when
    it hands a batch out. Both get ahead of the steps: the stream feeds workers that decode batches ahead,
    and a step that fails has already taken its batches. So after each step the bad data behind it is
    taken from its data position (`batches.DataPosition`): the stream's counts when it produced the
    step's last batch, the decode failures of the batches handed out, and `bad_data`, the two together
    (judged for every batch, `batches.stream_batches`). Checkpoints keep both parts; a run resumed from
    one restores them, reads again from that position and counts nothing twice.
    """

    def __init__(self, model, config: TrainConfig, run_dir: Path, dist_info: DistInfo, device: torch.device,
                 stream, batch_maker, counter: BadDataCounter, identity: str, show_progress: bool = True):
        self.model, self.config, self.run_dir = model, config, Path(run_dir)
        self.dist, self.device = dist_info, device
        self.stream, self.batch_maker, self.counter = stream, batch_maker, counter
        self.identity = identity
        self.show_progress = show_progress and dist_info.is_main
        self.global_batch, self.micro_batch, self.accumulation = batch_plan(config, dist_info.world)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = make_optimizer(model, config)
        self.ddp_model = model
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False)
        self.state = TrainState()
        self._snapshot = None  # data position after the last step
        # Bad data behind the batches of the steps so far (class docstring): read, failed, both.
        # (no batch maker: a caller that hands batches to _step itself, as the DDP-equivalence test does)
        failed = batch_maker.counter.copy() if batch_maker is not None else BadDataCounter()
        self._read, self._failed = counter.copy(), failed
        self.bad_data = DataPosition(None, self._read, self._failed).account()

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        step = self.state.step
        data_states = gather_objects(self.dist, {"stream": _json_safe(self._snapshot),
                                                 "bad_data": self.bad_data.as_dict(),
                                                 "read_bad_data": self._read.as_dict(),
                                                 "failed_bad_data": self._failed.as_dict()})
        rng_states = gather_objects(self.dist, _rng_state())  # each rank's own (dropout differs per rank)
        path = self.run_dir / f"checkpoint-{step}"
        if self.dist.is_main:
            with atomic_directory(path) as tmp:
                torch.save(self.model.trainable_state_dict(), tmp / "trainable.pt")
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
                torch.save(rng_states if self.dist.enabled else rng_states[0], tmp / "rng.pt")
                (tmp / "data_state.json").write_text(json.dumps({"ranks": data_states}))
                (tmp / CHECKPOINT_MARKER).write_text(json.dumps({
                    "format": CHECKPOINT_FORMAT, "step": step, "elapsed_seconds": self.state.elapsed,
                    "identity": self.identity, "world_size": self.dist.world,
                    "global_batch_size": self.global_batch}, indent=2))
            self._prune_checkpoints()
            log.info("saved %s", path)
        barrier(self.dist)
        return path

    def _prune_checkpoints(self) -> None:
        complete = list_checkpoints(self.run_dir)
        keep = max(1, self.config.save_total_limit)  # the checkpoint just written is never removed
        for _, old in complete[: max(0, len(complete) - keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: Path) -> None:
        """Continue from checkpoint `path`. Every file is read as tensors and plain values only
        (load_tensor_file, JSON): a run directory someone else wrote cannot run code here."""
        marker = _read_checkpoint_json(path / CHECKPOINT_MARKER)
        if marker.get("format") != CHECKPOINT_FORMAT:
            written = (f"by an older lalmbench (its random state {path / 'rng.pt'} can only be read by full "
                       f"unpickling, which could run code; a run you made yourself can be finished with the "
                       f"version that started it)" if "format" not in marker
                       else f"in checkpoint format {marker['format']!r}, not the format {CHECKPOINT_FORMAT} this "
                            f"lalmbench reads")
            raise CheckpointError(f"{path} was written {written}; it is not read. {START_ANEW}")
        if marker.get("global_batch_size", self.global_batch) != self.global_batch:
            raise ConfigError(f"{path} was trained with a global batch of {marker['global_batch_size']}, this run "
                              f"uses {self.global_batch}; resume with the same global batch or start anew with --force")
        try:
            self._load_checkpoint_files(path, marker)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{path} does not hold what a resume needs ({type(exc).__name__}: {exc}); it is "
                                  f"damaged or was altered. {START_ANEW}") from exc

    def _load_checkpoint_files(self, path: Path, marker: dict) -> None:
        self.model.load_trainable_state_dict(load_tensor_file(path / "trainable.pt", map_location=self.device))
        self.optimizer.load_state_dict(load_tensor_file(path / "optimizer.pt", map_location=self.device))
        self.scheduler.load_state_dict(load_tensor_file(path / "scheduler.pt"))
        data = _read_checkpoint_json(path / "data_state.json")["ranks"]
        saved_world = marker.get("world_size", 1)
        if saved_world == self.dist.world:
            mine = data[self.dist.rank]
            self.stream.load_state_dict(mine["stream"])
            self._restore_bad_data([mine])
            rng = load_tensor_file(path / "rng.pt")
            _set_rng_state(rng[self.dist.rank] if isinstance(rng, list) else rng)
        else:
            # Another world size: data positions are per rank and cannot be carried over; the data order
            # restarts from a seed derived from the step (weights, optimizer and schedule continue).
            log.warning("resuming a %d-process checkpoint with %d processes: data order is re-seeded at step %d",
                        saved_world, self.dist.world, marker["step"])
            self.stream.reseed(marker["step"])
            if self.dist.is_main:  # the old ranks' bad-data counts go on in rank 0's
                self._restore_bad_data(data)
        self._read, self._failed = self.counter.copy(), self.batch_maker.counter.copy()
        self.bad_data = DataPosition(None, self._read, self._failed).account()
        self.state.step = int(marker["step"])
        self.state.elapsed = float(marker.get("elapsed_seconds", 0.0))
        self._truncate_train_log(self.state.step)
        log.info("resumed from %s (step %d of %d)", path, self.state.step, self.config.max_steps)

    def _restore_bad_data(self, entries: list[dict]) -> None:
        """Saved ranks' counts go on in the stream's and the batch maker's counters, each in its own, so
        the resumed run judges as the run it continues (a checkpoint that kept only the sum gives it to
        the stream)."""
        for entry in entries:
            self.counter.merge(BadDataCounter.from_dict(entry.get("read_bad_data", entry["bad_data"])))
            self.batch_maker.counter.merge(BadDataCounter.from_dict(entry.get("failed_bad_data", {})))

    def _truncate_train_log(self, step: int) -> None:
        path = self.run_dir / "train_log.csv"
        if not self.dist.is_main or not path.is_file():
            return
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle)]
        kept = [TRAIN_LOG_HEADER] + [row for row in rows[1:]  # whole rows up to the checkpoint's step
                                     if len(row) == len(TRAIN_LOG_HEADER) and row[0].isdigit() and int(row[0]) <= step]
        atomic_write_text(path, "".join(",".join(row) + "\n" for row in kept))

    # -- the loop ---------------------------------------------------------------------------------------------
    def _micro_batches(self) -> Iterator[tuple[dict, DataPosition]]:
        """(micro-batch, data position after it); stops the run when the bad-data account is over the limit."""
        return stream_batches(self.stream, self.batch_maker, self.config.max_bad_fraction)

    def _step(self, micro_batches: list[dict]) -> tuple[float, float]:
        tokens = sum(len(t) for b in micro_batches for t in b["target_ids"])
        total_tokens = all_sum(self.dist, tokens, self.device)
        # DDP averages gradients over ranks; scaling by world makes the result the global token mean.
        normalizer = total_tokens / self.dist.world
        loss_value = 0.0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)
        for index, batch in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            sync = self.ddp_model.no_sync() if (self.dist.enabled and not last) else nullcontext()
            failure = None
            with sync, autocast:
                try:
                    loss = self.ddp_model(batch, normalizer=normalizer)
                except EncoderFailure as caught:
                    failure = caught
            self._agree_on_failure(failure)
            loss.backward()
            loss_value += float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return all_sum(self.dist, loss_value, self.device) / self.dist.world, float(grad_norm)

    def _agree_on_failure(self, failure: "EncoderFailure | None") -> None:
        """Raise on every rank when the encoder failed on any: one rank alone would leave the others
        waiting in the gradient all-reduce. Every rank learns every failed rank's clips."""
        if not self.dist.enabled:
            if failure is not None:
                raise failure
            return
        if all_sum(self.dist, 0.0 if failure is None else 1.0, self.device) == 0:
            return
        reports = gather_objects(self.dist, None if failure is None else str(failure))
        raise EncoderFailureOnRanks([f"process {rank}: {text}" for rank, text in enumerate(reports) if text])

    def train(self) -> TrainState:
        config = self.config
        log_path = self.run_dir / "train_log.csv"
        if self.dist.is_main and (self.state.step == 0 or not log_path.is_file()):
            # From the start: rows of an earlier attempt (killed before its first checkpoint) go. A resumed
            # run's log was cut to its checkpoint's step in load_checkpoint.
            atomic_write_text(log_path, ",".join(TRAIN_LOG_HEADER) + "\n")
        log_file = open(log_path, "a", newline="") if self.dist.is_main else None
        board = open_tensorboard(self.run_dir, self.state.step) if self.dist.is_main else None
        # A live bar on a terminal; elsewhere only the step lines below, which carry the time left (progress.py).
        progress = Progress("train", config.max_steps, "step", initial=self.state.step, enabled=self.show_progress)
        self.model.train()
        self._snapshot = self._snapshot or self.stream.snapshot()
        micro = self._micro_batches()
        start = time.perf_counter() - self.state.elapsed
        session_first_step, estimate_clock = self.state.step, None
        try:
            while self.state.step < config.max_steps:
                batches, position = [], None
                for _ in range(self.accumulation):
                    batch, position = next(micro)
                    batches.append(batch)
                # Under protocol official a step's encoder forwards update BatchNorm statistics; a failed
                # step must not leave them in the checkpoint saved for step N.
                encoder_before = self.model.encoder.copy_mutable_state()
                try:
                    loss, grad_norm = self._step(batches)
                except EncoderFailure as failure:
                    self.model.encoder.load_mutable_state(encoder_before)
                    self.optimizer.zero_grad(set_to_none=True)
                    self.save_checkpoint()
                    raise EncoderRuntimeError(
                        f"the encoder failed at step {self.state.step + 1}: {failure}. A checkpoint of step "
                        f"{self.state.step} was saved: the same command resumes from it once the cause is gone "
                        f"(an edited encoder file or other --model-args/--args start a new run).") from failure
                self._snapshot, self._read, self._failed = position.snapshot, position.read, position.failed
                self.bad_data = position.account()
                self.state.step += 1
                self.state.elapsed = time.perf_counter() - start
                lr = self.scheduler.get_last_lr()[0]
                if log_file is not None:
                    log_file.write(f"{self.state.step},{loss:.8f},{lr:.10g},{grad_norm:.6g},{self.state.elapsed:.3f}\n")
                    log_file.flush()  # followable live, and a killed run keeps its rows up to the kill
                if board is not None:  # the same row as TensorBoard scalars
                    for name, value in (("loss", loss), ("learning_rate", lr), ("grad_norm", grad_norm)):
                        board.add_scalar(f"train/{name}", value, self.state.step)
                progress.update(1, loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if self.state.step == session_first_step + ESTIMATE_WARMUP_STEPS:
                    estimate_clock = (self.state.step, time.perf_counter())  # compiling, caches: left out
                elif estimate_clock and self.state.step == estimate_clock[0] + ESTIMATE_STEPS and self.dist.is_main:
                    seconds_per_step = (time.perf_counter() - estimate_clock[1]) / ESTIMATE_STEPS
                    log.info(training_time_estimate(seconds_per_step, config.max_steps - self.state.step))
                if self.dist.is_main and self.state.step % config.logging_steps == 0:
                    log.info("step %d/%d loss %.4f lr %.3g grad_norm %.3g; %s", self.state.step, config.max_steps,
                             loss, lr, grad_norm, progress.timing())
                if self.state.step % config.save_steps == 0 or self.state.step == config.max_steps:
                    if log_file is not None:
                        log_file.flush()
                        os.fsync(log_file.fileno())
                    if board is not None:  # a run killed after this checkpoint keeps the events up to it
                        board.flush()
                    self.save_checkpoint()
        finally:
            if log_file is not None:
                log_file.close()
            if board is not None:
                board.close()
            progress.close()
        return self.state


TENSORBOARD_FLUSH_SECONDS = 10  # how far behind a live TensorBoard may lag


def open_tensorboard(run_dir: Path, resumed_step: int):
    """A TensorBoard writer whose event files sit beside train_log.csv, or None without the `tensorboard`
    package (extra `tensorboard`). Started at checkpoint step N, it marks every event of a step after N
    written by an earlier attempt (killed after that checkpoint) to be dropped when read (`purge_step`), so a
    resumed run shows each step once, as train_log.csv does."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir), purge_step=resumed_step + 1, flush_secs=TENSORBOARD_FLUSH_SECONDS)


ESTIMATE_WARMUP_STEPS = 3  # steps left out of the time estimate (first-step allocations, compiling)
ESTIMATE_STEPS = 10  # steps timed for it


def training_time_estimate(seconds_per_step: float, remaining_steps: int) -> str:
    """A log line: the measured pace and when training should end at that pace."""
    remaining = seconds_per_step * remaining_steps
    return (f"time estimate: {seconds_per_step:.3g} s per step over {ESTIMATE_STEPS} steps; {remaining_steps} steps "
            f"left, about {format_duration(remaining)} of training on this device at this pace")


def find_resume_checkpoint(run_dir: Path, identity: str) -> Path | None:
    """Newest complete checkpoint of this run identity, or None."""
    for _, path in reversed(list_checkpoints(run_dir)):
        marker = _read_checkpoint_json(path / CHECKPOINT_MARKER)
        if marker.get("identity") == identity:
            return path
        log.warning("ignoring %s: it belongs to another run identity", path)
    return None
