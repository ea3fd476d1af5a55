"""The global torch generator at step 1 under protocol official: where the published trainer leaves it.

The published trainer (XARES-LLM 0.0.12 on transformers' Trainer) builds the model after `set_seed(seed)`,
then starts its training DataLoader; torch's DataLoader draws its workers' base seed, one int64, from the
global generator when an iterator starts, with or without workers. Measured on the published system (parity
kit): exactly one such draw lies between the model's initialisation and step 1. LoRA dropout draws from
the same generator, so without that draw every dropout mask from step 1 on differed from the published
run's (docs/fidelity.md, "End to end").
"""

from __future__ import annotations

import torch

from lalmbench.config import TrainConfig
from lalmbench.distributed import DistInfo
from lalmbench.encoders import LogMelEncoder
from lalmbench.phases.preparation import _build_model


def _state_after_build(protocol: str) -> torch.Tensor:
    config = TrainConfig(decoder_model_name="tiny-random", seed=3, protocol=protocol)
    torch.manual_seed(0)  # whatever ran before: the initialisation seeds from the run's seed
    model, _, _ = _build_model(config, [], LogMelEncoder(), torch.device("cpu"), DistInfo())
    return torch.random.get_rng_state(), model


def test_official_makes_the_published_loaders_draw_after_the_model_is_built():
    official, official_model = _state_after_build("official")
    corrected, corrected_model = _state_after_build("corrected")
    # the same initial weights either way: the draw comes after them
    for (name, a), (_, b) in zip(official_model.named_parameters(), corrected_model.named_parameters()):
        assert torch.equal(a, b), name
    # official = corrected + what a torch DataLoader's iterator takes from the global generator when it starts
    torch.random.set_rng_state(corrected)
    iter(torch.utils.data.DataLoader(range(4), batch_size=2))
    assert torch.equal(torch.random.get_rng_state(), official)
    assert not torch.equal(corrected, official)
