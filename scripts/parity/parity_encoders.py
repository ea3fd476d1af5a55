"""Small deterministic encoders that both systems load by dotted path (`parity_encoders.MaskConvEncoder`).

They are enough to exercise every encoder-dependent branch of the two systems: a feature mask or none,
and train-mode layers (BatchNorm, Dropout) whose behaviour depends on the module's mode.
"""

from __future__ import annotations

import torch
from torch import nn

WINDOW, HOP = 400, 320  # 25 ms window, 20 ms hop at 16 kHz: 50 frames per second


class MaskConvEncoder(nn.Module):
    """One strided convolution; returns a frame mask computed from the sample mask."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.output_dim = dim
        self.proj = nn.Conv1d(1, dim, kernel_size=WINDOW, stride=HOP)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        # x10 so the random conv reaches tanh's non-linear range on speech-level input
        return torch.tanh(self.proj(audio[:, None] * 10)).transpose(1, 2)

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        features = self.features(audio)
        if audio_attention_mask is None:
            return features, None
        valid = (audio_attention_mask.sum(-1) - WINDOW) // HOP + 1
        frames = torch.arange(features.shape[1], device=features.device)
        return features, (frames[None] < valid[:, None]).long()


class NoMaskConvEncoder(MaskConvEncoder):
    """The same features with mask None, as the published Dasheng example returns."""

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        return self.features(audio), None


class BNDropEncoder(nn.Module):
    """Convolution, BatchNorm, Dropout; mask None. In train mode BatchNorm normalizes with batch statistics
    and updates its running statistics: what they hold after training shows which mode training used."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.output_dim = dim
        self.proj = nn.Conv1d(1, dim, kernel_size=WINDOW, stride=HOP)
        self.bn = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(0.5)

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        return self.drop(self.bn(self.proj(audio[:, None] * 10))).transpose(1, 2), None
