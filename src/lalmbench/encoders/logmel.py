"""LogMelEncoder: the weight-free baseline, log-mel frames with a correct frame mask.

Frames are 25 ms windows every `hop_ms` (10 ms default); consecutive frames can be stacked to lower
the frame rate (the decoder sees fewer, wider frames). A frame is valid when its centre lies inside
the unpadded audio, so padding a clip inside a batch leaves its valid frames unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, shape [n_fft // 2 + 1, n_mels]."""
    f_max = f_max or sample_rate / 2
    to_mel = lambda hz: 2595.0 * math.log10(1.0 + hz / 700.0)
    to_hz = lambda mel: 700.0 * (10 ** (mel / 2595.0) - 1.0)
    mel_points = torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2)
    hz_points = torch.tensor([to_hz(float(m)) for m in mel_points])
    bin_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = hz_points[:-2], hz_points[1:-1], hz_points[2:]
    rising = (bin_freqs[:, None] - lower[None]) / (centre - lower)[None]
    falling = (upper[None] - bin_freqs[:, None]) / (upper - centre)[None]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class LogMelEncoder(nn.Module):
    """Log-mel spectrogram frames as features: no weights, deterministic, [B, T', n_mels * stack]."""

    # Fixed affine scaling to near zero mean and unit variance (measured on tones, speech-level noise and
    # music at peak <= 1); a fixed map keeps features independent of the batch and of padding.
    FEATURE_SHIFT = -2.0
    FEATURE_SCALE = 3.0

    def __init__(self, n_mels: int = 64, hop_ms: float = 10.0, win_ms: float = 25.0, stack: int = 4,
                 sample_rate: int = 16_000, normalize: bool = True):
        super().__init__()
        self.normalize = normalize
        self.sample_rate = sample_rate
        self.hop = int(round(sample_rate * hop_ms / 1000))
        self.win = int(round(sample_rate * win_ms / 1000))
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.stack = int(stack)
        self.n_mels = n_mels
        self.output_dim = n_mels * self.stack
        self.sampling_rate = sample_rate
        self.hop_size_in_ms = hop_ms * self.stack
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.register_buffer("filters", mel_filterbank(self.n_fft, n_mels, sample_rate), persistent=False)

    def frame_count(self, samples: torch.Tensor) -> torch.Tensor:
        """Frames (after stacking) whose window centre falls inside `samples` samples of audio."""
        frames = torch.div(samples + self.hop - 1, self.hop, rounding_mode="floor")
        return torch.div(frames + self.stack - 1, self.stack, rounding_mode="floor")

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        if audio.dim() == 1:
            audio = audio[None]
        audio = audio.float()
        batch, samples = audio.shape
        # Pad on the right only, so a frame depends on the audio at and after its start; frame i
        # covers samples [i*hop, i*hop+win) and the first frames of a padded clip do not change.
        needed = max(samples, self.win)
        frames = math.ceil(needed / self.hop)
        total = (frames - 1) * self.hop + self.n_fft
        padded = torch.nn.functional.pad(audio, (0, total - samples))
        windows = padded.unfold(-1, self.n_fft, self.hop)[:, :frames, : self.win] * self.window
        spectrum = torch.fft.rfft(windows, n=self.n_fft).abs().pow(2)
        logmel = torch.log(spectrum @ self.filters + 1e-6)
        floor = math.log(1e-6)
        if self.normalize:
            logmel = (logmel - self.FEATURE_SHIFT) / self.FEATURE_SCALE
            floor = (floor - self.FEATURE_SHIFT) / self.FEATURE_SCALE
        remainder = (-frames) % self.stack
        if remainder:
            logmel = torch.nn.functional.pad(logmel, (0, 0, 0, remainder), value=floor)
        features = logmel.reshape(batch, -1, self.n_mels * self.stack)
        if audio_attention_mask is None:
            lengths = torch.full((batch,), samples, device=audio.device)
        else:
            lengths = audio_attention_mask.long().sum(-1)
        valid = self.frame_count(lengths)
        mask = (torch.arange(features.shape[1], device=audio.device)[None] < valid[:, None]).long()
        return features, mask
