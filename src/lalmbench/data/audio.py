"""Audio bytes -> mono float32 at 16 kHz, as the protocol prepares them.

Decoding goes through soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3), so no FFmpeg is
needed. Then, in the published system's order: average channels to mono, scale to peak 1 if the peak
exceeds 1, crop to `crop_seconds` at the source rate (a random window in training, none in evaluation
by default), resample. The two protocols differ only in the last steps:

  official   the published resampler (windowed sinc, `resample.py`) on torch float32, and a crop start
             drawn uniformly from every possible start, the last one included, as the published crop
  corrected  soxr's high-quality resampler (less aliasing near 8 kHz); crop starts stop one short of
             the last possible start
"""

from __future__ import annotations

import io

import numpy as np

from lalmbench.errors import AudioDecodeError

AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "opus")


def probe_duration(data: bytes) -> float:
    """Duration in seconds from the header only (no decoding); raises AudioDecodeError."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # libsndfile raises several types for bad headers
        raise AudioDecodeError(f"unreadable audio header: {exc}") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioDecodeError("audio holds no samples")
    return info.frames / info.samplerate


def decode_channels(data: bytes) -> tuple[np.ndarray, int]:
    """Decode the whole clip: returns (float32 [samples, channels], sample rate)."""
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            rate = handle.samplerate
            audio = handle.read(dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioDecodeError(f"cannot decode audio: {exc}") from exc
    if audio.size == 0:
        raise AudioDecodeError("audio holds no samples")
    # A NaN or Inf sample would make the loss NaN for the whole batch: the clip is counted as bad data.
    if not np.all(np.isfinite(audio)):
        raise AudioDecodeError("audio holds NaN or Inf samples")
    return audio, rate


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode the whole clip: returns (mono float32 [samples], sample rate)."""
    audio, rate = decode_channels(data)
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32), rate


def crop_start(length: int, limit: int, fraction: float | None, protocol: str = "official") -> int:
    """First sample of the crop window of `limit` samples in a clip of `length` (> limit).

    `fraction` in [0, 1) places the window; None keeps the start. Under `official` every start from 0 to
    `length - limit` is equally likely, as the published `random.randint(0, length - limit)`; under
    `corrected` the last start is never drawn (lalmbench's own rule, kept for its existing runs).
    """
    if fraction is None:
        return 0
    if protocol == "official":
        return min(int(fraction * (length - limit + 1)), length - limit)
    return int(fraction * (length - limit))


def prepare_audio(data: bytes, crop_start_fraction: float | None, crop_seconds: float | None,
                  target_rate: int = 16_000, protocol: str = "official") -> np.ndarray:
    """Decode, mono, peak-scale, crop and resample one clip, in the published system's order.

    `crop_start_fraction` in [0, 1) places the random crop window (training); None keeps the start of
    the clip. The fraction is drawn by the caller from a seed, so a crop is reproducible. `protocol`
    picks the resampler and the crop rule (module docstring).
    """
    if protocol == "official":
        audio = _prepare_official(data, crop_start_fraction, crop_seconds, target_rate)
    else:
        audio = _prepare_corrected(data, crop_start_fraction, crop_seconds, target_rate)
    if audio.size == 0:
        raise AudioDecodeError("audio is empty after resampling")
    return audio


def _prepare_official(data: bytes, crop_start_fraction: float | None, crop_seconds: float | None,
                      target_rate: int) -> np.ndarray:
    """The published steps on torch float32 tensors (channel mean and peak as torch computes them)."""
    import torch

    from lalmbench.data.resample import resample_sinc

    channels, rate = decode_channels(data)
    audio = torch.from_numpy(np.ascontiguousarray(channels.T)).mean(0)
    peak = audio.abs().max()
    if peak > 1.0:
        audio = audio / peak
    if crop_seconds is not None:
        limit = int(crop_seconds * rate)
        if audio.shape[0] > limit:
            start = crop_start(audio.shape[0], limit, crop_start_fraction, "official")
            audio = audio[start:start + limit]
    with torch.no_grad():
        return resample_sinc(audio, rate, target_rate).numpy()


def _prepare_corrected(data: bytes, crop_start_fraction: float | None, crop_seconds: float | None,
                       target_rate: int) -> np.ndarray:
    import soxr

    audio, rate = decode_audio(data)
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        audio = audio / peak
    if crop_seconds is not None:
        limit = int(crop_seconds * rate)
        if audio.shape[0] > limit:
            start = crop_start(audio.shape[0], limit, crop_start_fraction, "corrected")
            audio = audio[start:start + limit]
    if rate != target_rate:
        audio = soxr.resample(audio, rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    return audio
