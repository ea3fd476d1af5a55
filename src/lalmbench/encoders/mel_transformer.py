"""MelTransformerEncoder: a Dasheng-base-sized transformer over log-mel frames, for speed benchmarks.

The benchmark workload (`lalmbench bench`) needs an encoder that costs what a real one costs; the
weights do not matter for timing, so this one is randomly initialized from a seed. Layout:

  audio 16 kHz -> |STFT|^2 (512-point FFT, 10 ms hop) -> 64 HTK mel bands -> log
  -> Conv1d patching 4 frames at a time (40 ms per output frame) -> learned positions
  -> `layers` pre-norm transformer blocks of width `dim` -> LayerNorm.

With the defaults (768 wide, 12 layers, 12 heads) it has about 86 M parameters. Padded frames are
masked out of attention, and a frame's spectrum only reads samples at and after its start, so a clip's
valid output frames do not depend on how much padding its batch mates add (this is what makes an
encoder-feature cache exact for it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lalmbench.encoders.logmel import mel_filterbank


class MelTransformerEncoder(nn.Module):
    """Random-init transformer encoder on 64-mel log spectrograms: [B, samples] -> [B, frames, dim]."""

    def __init__(self, dim: int = 768, layers: int = 12, heads: int = 12, n_mels: int = 64,
                 max_seconds: float = 60.0, seed: int = 0):
        super().__init__()
        self.output_dim = int(dim)
        self.n_mels = n_mels
        self.n_fft, self.hop, self.patch_frames = 512, 160, 4
        self.sampling_rate = 16_000
        self.hop_size_in_ms = 1000.0 * self.hop * self.patch_frames / self.sampling_rate
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(self.n_fft, n_mels, self.sampling_rate), persistent=False)
        max_frames = int(math.ceil(max_seconds * 1000 / self.hop_size_in_ms)) + 1
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.patch = nn.Conv1d(n_mels, dim, kernel_size=self.patch_frames, stride=self.patch_frames)
            self.positions = nn.Parameter(0.02 * torch.randn(1, max_frames, dim))
            block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True,
                                               activation="gelu")
            self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
        finally:
            torch.random.set_rng_state(state)

    def frame_count(self, samples: torch.Tensor) -> torch.Tensor:
        """Output frames for clips of `samples` samples: mel frames starting inside the clip, 4 per frame."""
        mel_frames = torch.div(samples + self.hop - 1, self.hop, rounding_mode="floor").clamp(min=1)
        return torch.div(mel_frames + self.patch_frames - 1, self.patch_frames, rounding_mode="floor")

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        if audio.dim() == 1:
            audio = audio[None]
        audio = audio.float()
        if audio_attention_mask is not None:  # whatever lies in the padding, it reads as silence
            audio = audio * audio_attention_mask.to(audio.device, audio.dtype)
        batch, samples = audio.shape
        mel_frames = max(1, math.ceil(samples / self.hop))
        mel_frames += (-mel_frames) % self.patch_frames
        # Right padding only: mel frame i reads samples [i*hop, i*hop + n_fft).
        total = (mel_frames - 1) * self.hop + self.n_fft
        padded = nn.functional.pad(audio, (0, total - samples))
        windows = padded.unfold(-1, self.n_fft, self.hop)[:, :mel_frames] * self.window
        power = torch.fft.rfft(windows, n=self.n_fft).abs().pow(2)
        logmel = torch.log(power @ self.filters + 1e-6)  # [B, mel frames, n_mels]
        x = self.patch(logmel.transpose(1, 2)).transpose(1, 2)  # [B, frames, dim]
        frames = x.shape[1]
        if frames > self.positions.shape[1]:
            raise ValueError(f"clip too long for MelTransformerEncoder: {frames} frames > {self.positions.shape[1]} "
                             "(raise max_seconds)")
        x = x + self.positions[:, :frames]
        if audio_attention_mask is None:
            lengths = torch.full((batch,), samples, device=audio.device)
        else:
            lengths = audio_attention_mask.long().sum(-1).to(audio.device)
        valid = self.frame_count(lengths).clamp(max=frames)
        mask = torch.arange(frames, device=audio.device)[None] < valid[:, None]
        x = self.norm(self.blocks(x, src_key_padding_mask=~mask))
        return x, mask.long()
