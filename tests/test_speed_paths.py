"""The exact fast paths change speed, not results: target-position logits and the encoder-feature cache."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from lalmbench.config import TrainConfig
from lalmbench.data.batches import pad_audio
from lalmbench.data.examples import ExampleRef
from lalmbench.encoders.contract import FrozenEncoder
from lalmbench.encoders.logmel import LogMelEncoder
from lalmbench.encoders.mel_transformer import MelTransformerEncoder
from lalmbench.model.audio_llm import AudioLLM, add_lora
from lalmbench.model.decoder import tiny_random_decoder
from lalmbench.model.feature_cache import FeatureCache, attach_feature_cache, cache_namespace
from lalmbench.train import make_optimizer

STEPS = 20


def _batches(tokenizer, count: int = 6, batch: int = 3, seed: int = 0) -> list[dict]:
    """`count` distinct batches of clips of different lengths (0.3 to 1.5 s at 16 kHz)."""
    rng = np.random.default_rng(seed)
    words = ["dog", "cat", "rain", "piano", "siren", "bird"]
    out = []
    for b in range(count):
        clips = [rng.standard_normal(int(rng.integers(4_800, 24_000))).astype(np.float32) * 0.1 for _ in range(batch)]
        audio, mask = pad_audio(clips)
        prompt = tokenizer("Classify the sound.", add_special_tokens=False)["input_ids"]
        targets = [tokenizer(str(rng.choice(words)), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                   for _ in range(batch)]
        out.append({"audio": audio, "audio_mask": mask, "prompt_ids": [prompt] * batch, "target_ids": targets,
                    "texts": [""] * batch,
                    "refs": [ExampleRef("synthetic", "shard-0.tar.gz", f"clip{b}_{r}", 0, 0) for r in range(batch)]})
    return out


@functools.lru_cache(maxsize=1)
def _tiny():
    return tiny_random_decoder(seed=0)  # trains the tiny tokenizer: done once


def _model(target_logits_only: bool, encoder=None):
    decoder, tokenizer = _tiny()
    decoder = copy.deepcopy(decoder)
    torch.manual_seed(0)
    decoder = add_lora(decoder, 8, 32, 0.1)
    return AudioLLM(FrozenEncoder(encoder or LogMelEncoder()), decoder, tokenizer, target_logits_only), tokenizer


def _train(model, batches: list[dict], steps: int = STEPS) -> list[float]:
    """`steps` optimizer steps as the Trainer takes them (AdamW groups, schedule, clipping)."""
    config = TrainConfig(learning_rate=3e-3, warmup_steps=2, max_steps=steps)
    optimizer, scheduler = make_optimizer(model, config)
    torch.manual_seed(1)  # LoRA dropout draws the same masks in both runs
    model.train()
    losses = []
    for step in range(steps):
        loss = model(batches[step % len(batches)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def test_target_logits_only_matches_every_position_logits():
    torch.use_deterministic_algorithms(True, warn_only=True)
    naive, tokenizer = _model(target_logits_only=False)
    fast, _ = _model(target_logits_only=True)
    batches = _batches(tokenizer)
    naive_losses, fast_losses = _train(naive, batches), _train(fast, batches)
    assert len(fast_losses) == STEPS
    assert naive_losses[-1] < naive_losses[0]  # it trains at all
    np.testing.assert_allclose(fast_losses, naive_losses, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_feature_cache_gives_the_losses_of_no_cache(tmp_path, mode):
    plain, tokenizer = _model(target_logits_only=True)
    cached, _ = _model(target_logits_only=True)
    config = TrainConfig(feature_cache=mode)
    cache = attach_feature_cache(cached, config, {"class": "LogMelEncoder"}, {}, tmp_path)
    batches = _batches(tokenizer, count=4)
    steps = STEPS if mode == "memory" else 8
    plain_losses, cached_losses = _train(plain, batches, steps), _train(cached, batches, steps)
    np.testing.assert_allclose(cached_losses, plain_losses, rtol=0, atol=1e-6)
    stats = cache.stats()
    assert stats["misses"] == 4 * 3 and stats["hits"] == (steps - 4) * 3  # every clip encoded once
    if mode == "disk":
        assert len(list((tmp_path / "feature_cache").rglob("*.pt"))) == 12


def test_feature_cache_keys_cover_encoder_and_samples():
    encoder = FrozenEncoder(LogMelEncoder())
    _, tokenizer = _tiny()
    batch = _batches(tokenizer, count=1)[0]
    cache = FeatureCache(encoder, cache_namespace({"class": "a"}, {}, 16_000))
    features, mask = cache(batch)
    again, again_mask = cache(batch)
    assert cache.hits == 3 and cache.misses == 3
    for row in range(3):  # a hit returns exactly the valid frames computed on the miss
        valid = mask[row].bool()
        torch.testing.assert_close(again[row][again_mask[row].bool()], features[row][valid], rtol=0, atol=0)
    cropped = dict(batch, audio=batch["audio"].clone())
    cropped["audio"][0, :100] += 0.5  # another crop of the same clip: other samples, another key
    cache(cropped)
    assert cache.misses == 4
    assert cache_namespace({"class": "a"}, {}, 16_000) != cache_namespace({"class": "a"}, {"n_mels": 80}, 16_000)


def test_mel_transformer_is_padding_independent():
    encoder = MelTransformerEncoder(dim=64, layers=2, heads=4).eval()
    clips = [torch.randn(16_000).numpy(), torch.randn(9_000).numpy()]
    audio, mask = pad_audio(clips)
    with torch.no_grad():
        features, frames = encoder(audio, mask)
        alone, _ = encoder(audio[1:, :9_000], None)
    assert frames.sum(-1).tolist() == [25, 15]
    torch.testing.assert_close(features[1, :15], alone[0], rtol=1e-4, atol=1e-4)
    full = MelTransformerEncoder()
    assert 85e6 < sum(p.numel() for p in full.parameters()) < 88e6


@pytest.mark.slow
def test_compiled_decoder_gives_the_same_loss_within_tolerance():
    """torch.compile of the decoder body: same loss (fusion may round differently), same parameter names."""
    import torch

    from lalmbench.encoders import FrozenEncoder, LogMelEncoder
    from lalmbench.model.audio_llm import AudioLLM, add_lora
    from lalmbench.model.decoder import load_decoder

    decoder, tokenizer = load_decoder("tiny-random", seed=0)
    model = AudioLLM(FrozenEncoder(LogMelEncoder()), add_lora(decoder, dropout=0.0), tokenizer).eval()
    batch = {"audio": torch.randn(2, 8000), "audio_mask": torch.ones(2, 8000, dtype=torch.long),
             "prompt_ids": [[5, 6], [5, 6]], "target_ids": [[7, 0], [8, 9, 0]]}
    names = [n for n, _ in model.named_parameters()]
    with torch.no_grad():
        eager = model(batch)
        model.compile_decoder()
        compiled = model(batch)
    assert [n for n, _ in model.named_parameters()] == names
    assert torch.allclose(eager, compiled, atol=1e-4)
