"""Band-limited resampling with a Hann-windowed sinc filter: the resampler of the published system.

The published pipeline resamples every clip with torchaudio's default method (a windowed sinc with a
Hann window, 6 zero crossings on each side, cutoff at 0.99 of the lower Nyquist frequency). Under the
`official` protocol lalmbench resamples the same way, so the encoder sees the same samples; this module
computes that filter from its definition, in torch, without torchaudio (whose compiled part does not
load with every torch version).

The math. With both rates divided by their greatest common divisor, `in_rate` input samples span the
same time as `out_rate` output samples: one frame. Output sample `n` sits at input position
`n * in_rate / out_rate`. Its value is the sum over input samples `x[k]` of `x[k] * h(k/in_rate -
n/out_rate)`, time measured in frames, where

    h(d) = (cutoff / in_rate) * sinc(cutoff * d) * cos(pi * cutoff * d / (2 * zero_crossings))**2

for |cutoff * d| <= zero_crossings and 0 beyond (the Hann window ends there), with
`cutoff = rolloff * min(in_rate, out_rate)`, also per frame. The factor `cutoff / in_rate` keeps the
gain at 1 in the pass band. Because the filter is the same in every frame, the `out_rate` output phases
of one frame form a bank of `out_rate` filters, each `2 * reach + in_rate` input samples long, where
`reach = ceil(zero_crossings * in_rate / cutoff)` samples of support on either side; sliding the bank
over the input one frame (`in_rate` samples) at a time is a strided convolution. The input is padded
with `reach` zeros in front and `reach + in_rate` behind, and the output is cut to
`ceil(length * out_rate / in_rate)` samples.

The filter is evaluated in the audio's own precision (float32 for decoded clips), as the published code
does: float32 rounding of the tap times alone moves outputs by up to about 1e-5 against a float64
filter. Evaluated in float32 with the published order of operations, the filter and so every resampled
sample are bit for bit the published ones on CPU (tests/test_resample.py checks them for equality).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

ZERO_CROSSINGS = 6  # lowpass filter width: zero crossings of the sinc on each side of its centre
ROLLOFF = 0.99  # cutoff as a fraction of the lower of the two Nyquist frequencies


@functools.lru_cache(maxsize=32)
def _filter_bank(in_rate: int, out_rate: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """The `out_rate` filters of one frame, [out_rate, 1, 2 * reach + in_rate] in `dtype`, and `reach`.

    Rates are the gcd-reduced ones. Cached: a run meets only a handful of source rates.
    """
    cutoff = ROLLOFF * min(in_rate, out_rate)
    reach = math.ceil(ZERO_CROSSINGS * in_rate / cutoff)
    # Input tap j of the bank is input sample (frame start - reach + j); output phase p sits at p / out_rate.
    tap_times = torch.arange(-reach, reach + in_rate, dtype=dtype) / in_rate
    phase_times = torch.arange(out_rate, dtype=dtype)[:, None] / out_rate
    scaled = ((tap_times[None, :] - phase_times) * cutoff).clamp(-ZERO_CROSSINGS, ZERO_CROSSINGS)
    # Rounded step for step as the published resampler rounds them (the angle multiplied by pi, then divided
    # by the zero crossings, then by 2; sin(x)/x; window times gain before the sinc): another order moves
    # about 1% of the taps by one float32 step, and so the resampled samples (docs/fidelity.md, "End to end").
    window = torch.cos(scaled * math.pi / ZERO_CROSSINGS / 2) ** 2
    angle = scaled * math.pi
    sinc = torch.where(angle == 0, torch.ones_like(angle), angle.sin() / angle)
    bank = sinc * (window * (cutoff / in_rate))
    return bank[:, None, :], reach


def resampled_length(length: int, orig_rate: int, new_rate: int) -> int:
    """Samples out for `length` samples in: ceil(length * new / old) as the published resampler computes it.

    It rounds the ratio to float32 before the ceiling (a Python float made into a default-dtype tensor), so
    a ratio within float32 rounding above an integer loses its last sample: 400089 samples at 44.1 kHz give
    145157 (the exact ceiling is 145158), about 0.7% of 44.1 kHz lengths.
    """
    if orig_rate == new_rate:
        return length
    divisor = math.gcd(orig_rate, new_rate)
    in_rate, out_rate = orig_rate // divisor, new_rate // divisor
    return math.ceil(float(np.float32(out_rate * length / in_rate)))


def resample_sinc(audio: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample `audio` [..., time] (floating point) from `orig_rate` to `new_rate` Hz (integers).

    Equal rates return `audio` itself, as the published resampler does.
    """
    if orig_rate <= 0 or new_rate <= 0 or int(orig_rate) != orig_rate or int(new_rate) != new_rate:
        raise ValueError(f"sample rates must be positive integers, got {orig_rate} -> {new_rate}")
    if not audio.is_floating_point():
        raise TypeError(f"audio must be floating point to resample, got {audio.dtype}")
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate == new_rate:
        return audio
    divisor = math.gcd(orig_rate, new_rate)
    in_rate, out_rate = orig_rate // divisor, new_rate // divisor
    bank, reach = _filter_bank(in_rate, out_rate, audio.dtype)
    bank = bank.to(audio.device)
    leading, length = audio.shape[:-1], audio.shape[-1]
    signals = audio.reshape(-1, 1, length)
    padded = torch.nn.functional.pad(signals, (reach, reach + in_rate))
    # [signals, out_rate phases, frames] -> phases interleaved frame by frame -> [signals, samples]
    # Data preparation may run inside a bf16 autocast region (bench, evaluation): the filter stays float32.
    with torch.autocast(device_type=audio.device.type, enabled=False):
        frames = torch.nn.functional.conv1d(padded, bank, stride=in_rate)
    out = frames.transpose(1, 2).reshape(signals.shape[0], -1)
    out = out[:, : resampled_length(length, orig_rate, new_rate)]
    return out.reshape(*leading, out.shape[-1])
