"""Phase 2: the training of this run's identity, reused, resumed or done from the start.

    plan (rank 0's, from prepare)  reuse  -> final_weights.pt loaded, its bad-data account taken over
                                   resume -> the newest checkpoint loaded, training goes on from its step
                                   train  -> from step 0
    training: the protocol's stream (official: PublishedStream, the published order; corrected: TrainStream, the
    mixture sharded over processes) -> BatchMaker -> Trainer (lalmbench.train)
    -> every process's bad-data account gathered -> final_weights.pt, training_complete.json (rank 0)

The model in `Prepared` is trained in place; the evaluation phase uses it as it is left here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lalmbench.data.batches import BatchMaker
from lalmbench.data.examples import BadDataCounter
from lalmbench.data.mixture import TrainStream
from lalmbench.data.official_stream import PublishedStream
from lalmbench.distributed import barrier, gather_objects
from lalmbench.io_utils import atomic_path, atomic_write_json
from lalmbench.phases.preparation import Prepared
from lalmbench.phases.run_directory import FINAL_WEIGHTS, TRAINING_COMPLETE
from lalmbench.train import Trainer, batch_plan, load_tensor_file

log = logging.getLogger("lalmbench")


@dataclass
class Trained:
    """What the training phase did, for run_summary.json (how the weights were trained is in
    training_complete.json)."""

    reused: bool  # the finished training of this identity was loaded; no step ran
    steps_this_run: int  # steps trained by this command (fewer than the total after a resume)
    seconds_this_run: float  # training time spent by this command (0 when reused); the training's own
    # figures (seconds over every session, steps, when it finished) are in training_complete.json


def train_or_reuse(prepared: Prepared) -> Trained:
    if prepared.plan["action"] == "reuse":
        return _reuse(prepared)
    return _train(prepared)


def _reuse(prepared: Prepared) -> Trained:
    completed = prepared.plan["completed"]
    weights = load_tensor_file(prepared.run_dir / FINAL_WEIGHTS, map_location=prepared.device)  # tensors only
    prepared.model.load_trainable_state_dict(weights)
    prepared.bad_data.merge(BadDataCounter.from_dict(completed.get("bad_data", {})))
    log.info("reusing the finished training of this run identity (training identity %s, %d steps); pass "
             "--force to train again", prepared.identity_hash[:12], completed.get("steps", 0))
    return Trained(reused=True, steps_this_run=0, seconds_this_run=0.0)


def make_train_stream(prepared: Prepared, micro_batch: int) -> TrainStream | PublishedStream:
    """The training stream of the run's protocol (`train_stream`) on this process's rank."""
    return train_stream(prepared.config, prepared.train_specs, prepared.train_shards, prepared.tokenizing.count,
                        micro_batch, rank=prepared.dist.rank, world=prepared.dist.world)


def train_stream(config, specs: list, shards: dict[str, list[Path]], token_count, micro_batch: int, *,
                 rank: int = 0, world: int = 1, published: bool | None = None) -> TrainStream | PublishedStream:
    """The training stream of `config.protocol`: the published trainer's order under `official`
    (data/official_stream.py, shaped by the published `num_training_workers`), lalmbench's own under
    `corrected` (data/mixture.py: every example once per pass, in an order the seed picks). `published`
    picks the stream against the protocol (the speed benchmark times both)."""
    common = dict(rank=rank, world=world, shuffle_buffer=config.shuffle_buffer,
                  sort_buffer=config.sort_buffer, crop_seconds=config.crop_audio_length,
                  max_bad_fraction=config.max_bad_fraction, protocol=config.protocol)
    if published is None:
        published = config.protocol == "official"
    if published:
        per_device = batch_plan(config, world)[0] // world  # the published per-device batch
        return PublishedStream(specs, shards, micro_batch, config.seed, token_count, BadDataCounter(),
                               workers=config.num_training_workers or 0, sample_rate=config.sample_rate,
                               dataset_batch=per_device, **common)
    return TrainStream(specs, shards, micro_batch, config.seed, token_count, BadDataCounter(), **common)


def _train(prepared: Prepared) -> Trained:
    config, dist, run_dir = prepared.config, prepared.dist, prepared.run_dir
    global_batch, micro_batch, _ = batch_plan(config, dist.world)
    if config.global_batch_size is None and config.per_device_train_batch_size > global_batch // dist.world:
        log.warning("per_device_train_batch_size %d is more than this process's share of the protocol's "
                    "global batch (%d over %d process(es)); the global batch stays %d. For a larger one, "
                    "set global_batch_size (recorded in the run).", config.per_device_train_batch_size,
                    global_batch, dist.world, global_batch)
    # The stream and the batch maker count into counters of their own, which the trainer combines
    # per step (what it read, what failed to decode); see Trainer.
    tokenizing = prepared.tokenizing
    stream = make_train_stream(prepared, micro_batch)
    maker = BatchMaker(tokenizing, BadDataCounter(), config.sample_rate, config.crop_audio_length,
                       stream.crop_fraction, workers=config.num_workers, protocol=config.protocol)
    trainer = Trainer(prepared.model, config, run_dir, dist, prepared.device, stream, maker, stream.counter,
                      prepared.identity_hash, show_progress=prepared.request.show_progress)
    log.info("global batch %d = %d process(es) x %d example(s) x %d accumulation step(s)",
             trainer.global_batch, dist.world, trainer.micro_batch, trainer.accumulation)
    if prepared.plan["action"] == "resume":
        log.info("resuming training identity %s from %s", prepared.identity_hash[:12], prepared.plan["checkpoint"])
        trainer.load_checkpoint(Path(prepared.plan["checkpoint"]))
    first_step, seconds_before = trainer.state.step, trainer.state.elapsed
    prepared.claim.training_started = True  # from now on a failed run leaves its directory (it can resume)
    try:
        state = trainer.train()
    finally:
        maker.close()
    for rank_counts in gather_objects(dist, trainer.bad_data):  # each process counted its own data
        prepared.bad_data.merge(rank_counts)
    if dist.is_main:
        with atomic_path(run_dir / FINAL_WEIGHTS) as tmp:
            torch.save(prepared.model.trainable_state_dict(), tmp)
        atomic_write_json(run_dir / TRAINING_COMPLETE, {"identity": prepared.identity_hash, "steps": state.step,
                                                        "train_seconds": state.elapsed,
                                                        "global_batch_size": trainer.global_batch,
                                                        "world_size": dist.world,
                                                        "per_device_batch_size": trainer.micro_batch,
                                                        "gradient_accumulation_steps": trainer.accumulation,
                                                        "bad_data": prepared.bad_data.as_dict(),
                                                        "device": str(prepared.device),
                                                        "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    barrier(dist)
    return Trained(reused=False, steps_this_run=state.step - first_step,
                   seconds_this_run=state.elapsed - seconds_before)
