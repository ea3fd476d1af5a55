"""Pieces both systems build for the official-model fixtures: small encoders, one set of weights, one batch.

tests/test_official_model.py builds lalmbench's model from these; tests/make_official_model_fixtures.py
builds the published system's model (XARES-LLM 0.0.12) from the same pieces and prints the numbers the
tests hold as fixtures. Only torch is imported here, so both environments can load it.
"""

from __future__ import annotations

import hashlib

import torch

EOS = 0  # the tiny tokenizer's <|endoftext|>, also its pad token
DECODER = {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 8192,
           "tie_word_embeddings": True, "rms_norm_eps": 1e-5, "eos_token_id": EOS, "pad_token_id": EOS,
           "bos_token_id": EOS}
ENCODER_DIM = 16

# Four clips (1.0, 0.25, 0.6, 0.75 s): 49, 12, 29 and 37 valid frames of the encoders below.
CLIP_SAMPLES = (16_000, 4_000, 9_600, 12_000)
PROMPTS = ([5, 17, 33, 101, 7], [44, 9, 250])
ROW_PROMPTS = (0, 1, 0, 1)
TARGETS = ([300, 301, EOS], [12, EOS], [400, 401, 402, 403, EOS], [77, EOS])  # training targets end with EOS


class MaskConvEncoder(torch.nn.Module):
    """Conv front end (25 ms windows, 20 ms hop) with a frame mask from the sample mask."""

    def __init__(self, dim: int = ENCODER_DIM):
        super().__init__()
        self.output_dim = dim
        self.proj = torch.nn.Conv1d(1, dim, kernel_size=400, stride=320)

    def frames(self, audio):
        return self.proj(audio[:, None].float())

    def forward(self, audio, audio_attention_mask=None):
        features = torch.tanh(self.frames(audio)).transpose(1, 2)
        if audio_attention_mask is None:
            return features, None
        valid = (audio_attention_mask.long().sum(-1) - 400) // 320 + 1
        mask = (torch.arange(features.shape[1], device=features.device)[None] < valid[:, None]).long()
        return features, mask


class NoMaskConvEncoder(MaskConvEncoder):
    """The same features, no mask (as the published Dasheng example): padded frames are attended."""

    def forward(self, audio, audio_attention_mask=None):
        return super().forward(audio, None)


class BatchNormConvEncoder(MaskConvEncoder):
    """Conv + BatchNorm over channels + a mask: train mode normalizes with batch statistics."""

    def __init__(self, dim: int = ENCODER_DIM):
        super().__init__(dim)
        self.bn = torch.nn.BatchNorm1d(dim)

    def frames(self, audio):
        return self.bn(super().frames(audio))


ENCODERS = {"masked": MaskConvEncoder, "unmasked": NoMaskConvEncoder, "batchnorm": BatchNormConvEncoder}


def canonical(name: str, shape) -> torch.Tensor:
    """The value of a weight, from its (lalmbench) name alone: the same in every environment."""
    generator = torch.Generator().manual_seed(int(hashlib.md5(name.encode()).hexdigest()[:8], 16))
    noise = torch.randn(tuple(shape), generator=generator)
    if name.endswith("norm.weight") or name.endswith("bn.weight"):
        return 1.0 + 0.1 * noise
    if "embed_tokens" in name:
        return noise * 0.25
    if "lora_" in name:
        return noise * 0.05
    if name.startswith("projector") or name.startswith("encoder"):
        return noise * 0.1
    return noise * 0.2  # decoder weights large enough that greedy answers vary from token to token


def published_name(name: str) -> str:
    """The published model's name for a lalmbench parameter name."""
    return (name.replace("encoder.inner.", "audio_encoder.", 1) if name.startswith("encoder.inner.")
            else name.replace("projector.", "audio_projector.", 1) if name.startswith("projector.") else name)


def set_canonical_weights(model, names_are_published: bool = False) -> int:
    """Give every floating-point parameter of `model` its canonical value; the number set."""
    count = 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            key = name
            if names_are_published:
                key = (name.replace("audio_encoder.", "encoder.inner.", 1) if name.startswith("audio_encoder.")
                       else name.replace("audio_projector.", "projector.", 1) if name.startswith("audio_projector.")
                       else name)
            if parameter.is_floating_point():
                parameter.copy_(canonical(key, parameter.shape))
                count += 1
    return count


def clips() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [0.1 * torch.randn(n, generator=generator) for n in CLIP_SAMPLES]


def padded_audio() -> tuple[torch.Tensor, torch.Tensor]:
    audio = torch.zeros(len(CLIP_SAMPLES), max(CLIP_SAMPLES))
    mask = torch.zeros(len(CLIP_SAMPLES), max(CLIP_SAMPLES), dtype=torch.long)
    for row, clip in enumerate(clips()):
        audio[row, : clip.shape[0]] = clip
        mask[row, : clip.shape[0]] = 1
    return audio, mask


def row_prompts(mixed: bool = True) -> list[list[int]]:
    return [list(PROMPTS[p if mixed else 0]) for p in ROW_PROMPTS]
