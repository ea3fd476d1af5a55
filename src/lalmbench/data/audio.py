"""Audio bytes -> mono float32 at 16 kHz, as the protocol prepares them.

Decoding goes through soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3), so no FFmpeg is
needed. Then: average channels to mono, scale to peak 1 if the peak exceeds 1, crop (random in
training, from the start in evaluation), resample with soxr (high quality).
"""

from __future__ import annotations

import io

import numpy as np

AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "opus")


class AudioDecodeError(ValueError):
    """The bytes are not decodable audio, or hold no samples."""


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


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode the whole clip: returns (mono float32 [samples], sample rate)."""
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            rate = handle.samplerate
            audio = handle.read(dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioDecodeError(f"cannot decode audio: {exc}") from exc
    if audio.size == 0:
        raise AudioDecodeError("audio holds no samples")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioDecodeError("audio holds NaN or Inf samples")
    return np.ascontiguousarray(mono, dtype=np.float32), rate


def prepare_audio(data: bytes, crop_start_fraction: float | None, crop_seconds: float | None,
                  target_rate: int = 16_000) -> np.ndarray:
    """Decode, mono, peak-scale, crop and resample one clip, in the protocol's order.

    `crop_start_fraction` in [0, 1] places the random crop window (training); None keeps the start of
    the clip (evaluation). The fraction is drawn by the caller from a seed, so a crop is reproducible.
    """
    import soxr

    audio, rate = decode_audio(data)
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        audio = audio / peak
    if crop_seconds is not None:
        limit = int(crop_seconds * rate)
        if audio.shape[0] > limit:
            start = 0 if crop_start_fraction is None else int(crop_start_fraction * (audio.shape[0] - limit))
            audio = audio[start:start + limit]
    if rate != target_rate:
        audio = soxr.resample(audio, rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    if audio.size == 0:
        raise AudioDecodeError("audio is empty after resampling")
    return audio
