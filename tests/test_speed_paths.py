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
        assert len(list(tmp_path.rglob("*.features"))) == 12  # tmp_path is the cache root here


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


def _dropout_model(dropout: float):
    decoder, tokenizer = _tiny()
    decoder = copy.deepcopy(decoder)
    torch.manual_seed(0)
    return AudioLLM(FrozenEncoder(LogMelEncoder()), add_lora(decoder, 8, 32, dropout), tokenizer), tokenizer


def test_length_bucket_pads_to_its_multiple_without_changing_the_loss():
    torch.use_deterministic_algorithms(True, warn_only=True)
    plain, tokenizer = _dropout_model(0.0)  # without LoRA dropout: padding is the only difference
    bucketed = copy.deepcopy(plain)
    bucketed.length_bucket = 64
    batches = _batches(tokenizer, count=4)
    embeds, attention, labels = bucketed.build_training_inputs(batches[0])
    unpadded, _, _ = plain.build_training_inputs(batches[0])
    assert embeds.shape[1] % 64 == 0 and 0 <= embeds.shape[1] - unpadded.shape[1] < 64
    assert int(attention[:, unpadded.shape[1]:].sum()) == 0 and bool((labels[:, unpadded.shape[1]:] == -100).all())
    np.testing.assert_allclose(_train(bucketed, batches, 8), _train(plain, batches, 8), rtol=0, atol=1e-5)


def test_compiled_training_follows_the_eager_loss_curve():
    """compile_training with exact_random: dropout draws the eager masks, so only rounding differs."""
    import torch._dynamo.utils

    torch.use_deterministic_algorithms(True, warn_only=True)
    eager, tokenizer = _dropout_model(0.1)
    compiled = copy.deepcopy(eager)
    names = list(compiled.state_dict())
    compiled.compile_training()
    batches = _batches(tokenizer, count=3)
    torch._dynamo.utils.counters.clear()
    eager_losses, compiled_losses = _train(eager, batches, 6), _train(compiled, batches, 6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the compiled layers did run
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=0, atol=1e-5)
    assert list(compiled.state_dict()) == names  # checkpoints keep their keys
    with torch.no_grad():  # generation keeps the eager body (no recompiling per decoding step)
        assert compiled.generate(batches[0], max_new_tokens=3) == eager.generate(batches[0], max_new_tokens=3)


def test_merged_lora_decodes_the_same_tokens_and_restores_the_exact_weights():
    model, tokenizer = _dropout_model(0.1)
    batches = _batches(tokenizer, count=3)
    _train(model, batches, 12)  # LoRA B starts at zero: train so that merging changes the weights
    model.eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    q_proj = next(name for name in before if name.endswith("layers.0.self_attn.q_proj.base_layer.weight"))
    with torch.no_grad():
        unmerged = [model.generate(b, max_new_tokens=6) for b in batches]
        with model.merged_lora():
            assert not torch.equal(dict(model.named_parameters())[q_proj], before[q_proj])
            merged = [model.generate(b, max_new_tokens=6) for b in batches]
    assert merged == unmerged
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_a_run_with_compile_and_length_buckets_trains_and_scores(tmp_path):
    from run_helpers import run_inprocess, tiny_data

    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    result = run_inprocess(train_yaml, eval_yaml, tmp_path / "out",
                           {"compile": True, "length_bucket": 32, "compile_mode": "reduce-overhead"})
    log = (result.run_dir / "log.txt").read_text()
    assert "decoder body compiled for training (torch.compile mode default" in log  # no CUDA graphs on a CPU
    assert "lengths bucketed by 32" in log
    assert (result.run_dir / "COMPLETED").is_file() and set(result.scores) == {"eval_tones"}
