"""The published resampler (windowed sinc) and the official decode path, against the published system's numbers.

tests/fixtures/resample_published.json holds what XARES-LLM 0.0.12's decode + preprocessing (torchaudio
2.11.0's resampler) made of the clips below; tests/fixtures/make_resample_fixture.py wrote it.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lalmbench.data.audio import crop_start, prepare_audio
from lalmbench.data.resample import resample_sinc, resampled_length

FIXTURE = Path(__file__).parent / "fixtures" / "resample_published.json"
TOLERANCE = 1e-5

# name -> (sample rate, channels, samples, peak of the written clip); a peak above 1 exercises the peak scaling
CLIPS = {
    "mono16k": (16_000, 1, 16_123, 0.9),
    "stereo16k": (16_000, 2, 16_123, 1.6),
    "mono22k": (22_050, 1, 24_317, 1.25),
    "stereo22k": (22_050, 2, 24_317, 0.7),
    "mono44k": (44_100, 1, 39_700, 0.8),
    "stereo44k": (44_100, 2, 39_700, 1.7),
    "mono48k": (48_000, 1, 33_601, 0.95),
    "stereo48k": (48_000, 2, 33_601, 2.5),
}


def clip_samples(name: str) -> np.ndarray:
    """A deterministic clip [samples, channels]: tones, a tone near the source Nyquist (which the filter must
    remove when downsampling), a chirp, clicks, FM and a square wave (broadband edges)."""
    rate, channels, length, peak = CLIPS[name]
    n = np.arange(length)
    t = n / rate
    left = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.25 * np.sin(2 * np.pi * 0.43 * rate * t)
            + 0.2 * np.sin(2 * np.pi * (100 * t + 3000 * t * t)) + 0.3 * ((n % 997) < 5))
    right = (0.4 * np.cos(2 * np.pi * 1234.5 * t) + 0.3 * np.sin(2 * np.pi * 5000 * t + 2 * np.sin(2 * np.pi * 3 * t))
             + 0.2 * np.sign(np.sin(2 * np.pi * 50 * t + 0.1)))
    audio = np.stack([left, right][:channels], axis=1)
    return (audio * (peak / np.abs(audio).max())).astype(np.float32)


def clip_wav(name: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, clip_samples(name), CLIPS[name][0], format="WAV", subtype="FLOAT")  # lossless float32
    return buffer.getvalue()


def probe_indices(length: int) -> list[int]:
    """The output samples the fixture keeps: both edges (where the padding matters) and 40 across the clip."""
    spread = np.linspace(0, length - 1, 40).astype(int).tolist()
    return sorted(set(range(12)) | set(range(length - 12, length)) | set(spread))


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads(FIXTURE.read_text())["clips"]


@pytest.mark.parametrize("name", list(CLIPS))
def test_official_audio_matches_published_pipeline(name, published):
    expected = published[name]
    audio = prepare_audio(clip_wav(name), None, None, 16_000, protocol="official")
    assert audio.dtype == np.float32
    assert len(audio) == expected["length"]
    got = audio[expected["indices"]].astype(np.float64)
    np.testing.assert_allclose(got, expected["samples"], rtol=0, atol=TOLERANCE)
    # Sums bound the error of every sample, not only the probed ones (max |diff| <= 1e-5 implies these).
    n = len(audio)
    assert abs(audio.astype(np.float64).sum() - expected["sum"]) <= TOLERANCE * n
    assert abs((audio.astype(np.float64) ** 2).sum() - expected["sum_of_squares"]) <= 2 * TOLERANCE * n


@pytest.mark.parametrize("name", list(CLIPS))
def test_official_audio_is_the_published_audio_bit_for_bit(name, published):
    # The filter is rounded as the published one is (resample.py), so on CPU the samples are not near the
    # published ones but the same float32 numbers: a difference of one float32 step in 1% of the samples
    # made an end-to-end training drift from the published one after about 100 steps (docs/fidelity.md).
    expected = published[name]
    audio = prepare_audio(clip_wav(name), None, None, 16_000, protocol="official")
    assert audio[expected["indices"]].astype(np.float64).tolist() == expected["samples"]
    assert float(audio.astype(np.float64).sum()) == expected["sum"]
    assert float((audio.astype(np.float64) ** 2).sum()) == expected["sum_of_squares"]


def test_fixture_covers_the_four_rates_and_both_layouts(published):
    assert sorted(published) == sorted(CLIPS)
    assert {CLIPS[name][0] for name in published} == {16_000, 22_050, 44_100, 48_000}
    assert {CLIPS[name][1] for name in published} == {1, 2}


def test_lengths_are_the_ceiling_of_the_rate_ratio():
    # 22050 -> 16000 reduces to 441 -> 320: 24317 * 320 / 441 = 17644.8... -> 17645
    assert resampled_length(24_317, 22_050, 16_000) == 17_645
    assert resampled_length(44_100, 44_100, 16_000) == 16_000
    assert resampled_length(33_601, 48_000, 16_000) == 11_201  # 33601 / 3 = 11200.33 -> 11201
    assert resampled_length(1, 48_000, 16_000) == 1
    assert resampled_length(5, 16_000, 16_000) == 5
    # the published float32 rounding: 160 * 400089 / 441 = 145157.0068 rounds to 145157.0 in float32
    assert resampled_length(400_089, 44_100, 16_000) == 145_157
    assert resample_sinc(torch.zeros(400_089), 44_100, 16_000).shape[-1] == 145_157
    assert resample_sinc(torch.zeros(24_317), 22_050, 16_000).shape == (17_645,)


def test_passband_tone_survives_and_tone_above_the_cutoff_is_removed():
    rate, seconds = 48_000, 0.5
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    low = resample_sinc(torch.sin(2 * math.pi * 1000 * t), rate, 16_000)
    t_out = torch.arange(low.shape[0], dtype=torch.float64) / 16_000
    interior = slice(100, -100)  # away from the zero padding at both ends
    assert torch.allclose(low[interior], torch.sin(2 * math.pi * 1000 * t_out)[interior], atol=2e-3)
    high = resample_sinc(torch.sin(2 * math.pi * 10_000 * t), rate, 16_000)  # 10 kHz: above the new Nyquist
    assert high[interior].abs().max() < 0.01


def test_constant_signal_keeps_its_level_and_upsampling_works():
    ones = torch.ones(22_050, dtype=torch.float64)
    down = resample_sinc(ones, 22_050, 16_000)
    assert torch.allclose(down[50:-50], torch.ones_like(down[50:-50]), atol=2e-3)
    up = resample_sinc(torch.ones(8_000, dtype=torch.float64), 8_000, 16_000)
    assert up.shape == (16_000,)
    assert torch.allclose(up[50:-50], torch.ones_like(up[50:-50]), atol=2e-3)


def test_leading_dimensions_resample_row_by_row_and_equal_rates_are_untouched():
    rows = torch.from_numpy(clip_samples("stereo44k").T.copy())
    together = resample_sinc(rows, 44_100, 16_000)
    assert torch.equal(together[1], resample_sinc(rows[1], 44_100, 16_000))
    same = torch.randn(3, 100)
    assert resample_sinc(same, 16_000, 16_000) is same
    with pytest.raises(ValueError, match="positive integers"):
        resample_sinc(same, 22_050.5, 16_000)
    with pytest.raises(TypeError, match="floating point"):
        resample_sinc(torch.ones(10, dtype=torch.int16), 8_000, 16_000)


def test_crop_start_includes_the_last_window_only_under_official():
    # 100 samples, window of 10: starts 0..90 are possible (91 of them), as random.randint(0, 90)
    assert crop_start(100, 10, None, "official") == 0
    assert crop_start(100, 10, 0.0, "official") == 0
    assert crop_start(100, 10, 0.999, "official") == 90  # int(0.999 * 91) = 90
    assert crop_start(100, 10, 0.5, "official") == 45  # int(45.5)
    assert crop_start(100, 10, 0.999, "corrected") == 89  # int(0.999 * 90): 90 is never drawn
    assert crop_start(100, 10, 0.5, "corrected") == 45


def test_official_crop_happens_at_the_source_rate_before_resampling():
    data = clip_wav("mono44k")  # 39700 samples at 44.1 kHz, peak 0.8 (no scaling)
    crop_seconds = 0.5  # 22050 source samples -> 22050 * 160 / 441 = 8000 output samples
    audio = prepare_audio(data, 1 - 1e-9, crop_seconds, 16_000, protocol="official")
    assert len(audio) == 8_000
    last_window = torch.from_numpy(clip_samples("mono44k")[-22_050:, 0].copy())  # the window ending at the last sample
    expected = resample_sinc(last_window, 44_100, 16_000).numpy()
    np.testing.assert_array_equal(audio, expected)


def test_corrected_keeps_soxr_and_differs_from_official():
    import soxr

    data = clip_wav("mono22k")
    corrected = prepare_audio(data, None, None, 16_000, protocol="corrected")
    mono = clip_samples("mono22k")[:, 0]
    mono = mono / np.abs(mono).max()  # peak 1.25 > 1: scaled to 1 first
    np.testing.assert_allclose(corrected, soxr.resample(mono, 22_050, 16_000, quality="HQ"), atol=1e-6)
    official = prepare_audio(data, None, None, 16_000, protocol="official")
    assert len(official) == 17_645
    # the two resamplers differ clearly (soxr's length rule and filter differ): no silent mix of the two
    m = min(len(official), len(corrected))
    assert np.abs(official[:m] - corrected[:m]).max() > 1e-3


def test_autocast_does_not_reach_the_filter():
    """Evaluation prepares batches inside a bf16 autocast region; the resampled clip stays float32."""
    clip = torch.randn(4_410)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = resample_sinc(clip, 44_100, 16_000)
    assert out.dtype == torch.float32
    assert torch.equal(out, resample_sinc(clip, 44_100, 16_000))
