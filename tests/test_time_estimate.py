"""Honest expectations: the pace measured over the first steps, and a warning for a big decoder on a CPU."""

import logging

import torch

from lalmbench.phases.preparation import warn_if_slow_on_cpu
from lalmbench.train import ESTIMATE_STEPS, training_time_estimate


def test_estimate_line_is_hand_checked():
    line = training_time_estimate(2.5, 3000)  # 7500 s = 2 h 05 min
    assert "2.5 s per step" in line and "3000 steps left" in line and "2 h 05 min" in line
    assert f"over {ESTIMATE_STEPS} steps" in line


class Sized(torch.nn.Module):
    def __init__(self, parameters):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(parameters), requires_grad=False)


def test_full_size_decoder_on_cpu_warns(caplog):
    logger = logging.getLogger("lalmbench")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="lalmbench"):
            warn_if_slow_on_cpu(Sized(135_000_000), torch.device("cpu"), 100_000)
            assert "135M-parameter decoder is training on a CPU" in caplog.text
            assert "42.8 days" in caplog.text  # 100,000 steps x 37 s
            caplog.clear()
            warn_if_slow_on_cpu(Sized(1_000_000), torch.device("cpu"), 100_000)
            warn_if_slow_on_cpu(Sized(135_000_000), torch.device("meta"), 100_000)
            assert caplog.text == ""
    finally:
        logger.removeHandler(caplog.handler)
