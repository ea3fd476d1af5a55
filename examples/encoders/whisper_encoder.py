"""Whisper encoder (transformers `WhisperModel`), 50 frames per second, trimmed to the real audio length.

Whisper always reads 30 s of log-mel (3000 frames) and returns 1500 frames. This wrapper computes the
log-mel in torch the way WhisperFeatureExtractor does, per clip over that clip's valid samples only
(padding is zeroed), runs audio longer than 30 s in 30 s chunks, and trims the output to the frames that
cover real audio, with a mask saying which frames those are. So a clip gives the same features alone
or padded inside a batch.

    lalmbench check examples/encoders/whisper_encoder.py                      # openai/whisper-base (online)
    lalmbench check examples/encoders/whisper_encoder.py --model-args '{"pretrained": null}'  # tiny, random
"""

from __future__ import annotations

import torch
from torch import nn

SAMPLE_RATE = 16_000
CHUNK = 30 * SAMPLE_RATE  # Whisper's fixed input length
HOP = 160  # log-mel hop (10 ms); the encoder halves the frame rate, so one output frame = 320 samples
N_FFT = 400


class WhisperEncoder(nn.Module):
    def __init__(self, pretrained: str | None = "openai/whisper-base"):
        super().__init__()
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

        if pretrained:
            model = WhisperModel.from_pretrained(pretrained)
        else:  # a tiny random Whisper with the real input geometry, for offline tests
            config = WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                                   decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=128,
                                   num_mel_bins=80, max_source_positions=1500, vocab_size=64,
                                   pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
            model = WhisperModel(config)
        self.whisper = model.get_encoder()  # the decoder is dropped
        n_mels = self.whisper.config.num_mel_bins
        filters = torch.tensor(WhisperFeatureExtractor(feature_size=n_mels).mel_filters, dtype=torch.float32)
        self.register_buffer("mel_filters", filters, persistent=False)  # [201, n_mels], Slaney scale
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.output_dim = self.whisper.config.d_model

    def log_mel(self, chunks: torch.Tensor) -> torch.Tensor:
        """[N, 480000] audio -> [N, n_mels, 3000] log-mel, scaled as WhisperFeatureExtractor scales it."""
        stft = torch.stft(chunks, N_FFT, HOP, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        mel = (self.mel_filters.T @ power).clamp(min=1e-10).log10()
        mel = torch.maximum(mel, mel.amax(dim=(1, 2), keepdim=True) - 8.0)  # 80 dB range per chunk
        return (mel + 4.0) / 4.0

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        audio = audio.float()
        batch, samples = audio.shape
        if audio_attention_mask is None:
            lengths = torch.full((batch,), samples, device=audio.device)
        else:
            lengths = audio_attention_mask.long().sum(-1)
            audio = audio * (audio_attention_mask != 0)  # whatever the padding held, Whisper sees zeros
        n_chunks = max(1, -(-samples // CHUNK))
        audio = nn.functional.pad(audio, (0, n_chunks * CHUNK - samples))
        mel = self.log_mel(audio.reshape(batch * n_chunks, CHUNK)).to(self.whisper.conv1.weight.dtype)
        hidden = self.whisper(mel).last_hidden_state  # [batch * chunks, 1500, D]
        hidden = hidden.reshape(batch, n_chunks * hidden.shape[1], -1)
        valid = torch.div(lengths + 2 * HOP - 1, 2 * HOP, rounding_mode="floor").clamp(min=1)
        frames = int(valid.max())
        mask = (torch.arange(frames, device=audio.device)[None] < valid[:, None]).long()
        return hidden[:, :frames].float(), mask
