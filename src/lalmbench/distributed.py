"""Process-group facts for torchrun / accelerate launches; a plain run is rank 0 of 1.

torchrun and `accelerate launch` both export RANK, WORLD_SIZE and LOCAL_RANK; when WORLD_SIZE > 1
the default process group is created (NCCL on GPUs, gloo on CPUs). Rank 0 alone writes files and logs;
the other ranks also silence Python warnings and the transformers logger, which would repeat rank 0's.
Collectives wait up to LALMBENCH_DIST_TIMEOUT_MINUTES (default 120): rank 0 may download shards or
write a report while the others wait at a barrier.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_hint: str | None = None) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_hint != "cpu"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=_timeout())
    if rank != 0:
        _quiet_third_party()
    return DistInfo(rank=rank, world=world, local_rank=local_rank)


def _timeout() -> timedelta:
    minutes = os.environ.get("LALMBENCH_DIST_TIMEOUT_MINUTES", "120")
    try:
        return timedelta(minutes=float(minutes))
    except ValueError:
        from lalmbench.errors import ConfigError

        raise ConfigError(f"LALMBENCH_DIST_TIMEOUT_MINUTES must be a number of minutes, got {minutes!r}") from None


def _quiet_third_party() -> None:
    warnings.simplefilter("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_sum(info: DistInfo, value: float, device) -> float:
    if not info.enabled:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def gather_objects(info: DistInfo, obj) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
