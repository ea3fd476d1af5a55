"""Prompt and target token ids under both protocols, with a real tokenizer that adds a BOS and one that does not."""

from __future__ import annotations

import pytest

from conftest import wav_bytes
from lalmbench.data.batches import BatchMaker
from lalmbench.data.examples import BadDataCounter, Example, ExampleRef
from lalmbench.data.tokenizing import Tokenizing
from lalmbench.model.decoder import _train_tiny_tokenizer


@pytest.fixture(scope="module")
def plain():
    """The tiny-random decoder's byte-level BPE tokenizer: no BOS, EOS `<|endoftext|>` (id 0)."""
    return _train_tiny_tokenizer()


@pytest.fixture(scope="module")
def with_bos(plain):
    """The same vocabulary plus `<s>`, which the tokenizer puts in front of every text by default (as Llama's)."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(plain.backend_tokenizer.to_str())
    backend.add_special_tokens(["<s>"])
    bos = backend.token_to_id("<s>")
    backend.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token=plain.eos_token,
                                        pad_token=plain.eos_token)
    assert tokenizer("dog")["input_ids"][0] == bos != tokenizer("dog", add_special_tokens=False)["input_ids"][0]
    return tokenizer


PROMPT, TEXT = "what sound is this", "a dog barks"


def test_official_prompt_and_target_carry_the_tokenizers_bos(with_bos):
    bos, eos = with_bos.bos_token_id, with_bos.eos_token_id
    words = lambda text: with_bos(text, add_special_tokens=False)["input_ids"]
    official = Tokenizing(with_bos, {"d": PROMPT, "silent": ""}, "official")
    prompt, target = official("d", TEXT, add_eos=True)
    assert prompt == [bos] + words(PROMPT)
    assert target == [bos] + words(TEXT) + [eos]  # published: tokenizer(text + eos_token)
    assert official("d", TEXT, add_eos=False)[1] == [bos] + words(TEXT)  # evaluation: no EOS
    assert official.prompt_ids("silent") == [bos]  # an empty prompt is still tokenized
    assert official.count("d", TEXT) == len(prompt) + len(target)


def test_corrected_adds_no_special_tokens_but_the_eos_id(with_bos):
    eos = with_bos.eos_token_id
    words = lambda text: with_bos(text, add_special_tokens=False)["input_ids"]
    corrected = Tokenizing(with_bos, {"d": PROMPT, "silent": ""}, "corrected")
    prompt, target = corrected("d", TEXT, add_eos=True)
    assert prompt == words(PROMPT)
    assert target == words(TEXT) + [eos]
    assert corrected.prompt_ids("silent") == []
    assert corrected.count("d", TEXT) == len(prompt) + len(target)


def test_protocols_agree_for_a_tokenizer_without_special_token_defaults(plain):
    official = Tokenizing(plain, {"d": PROMPT}, "official")
    corrected = Tokenizing(plain, {"d": PROMPT}, "corrected")
    for add_eos in (True, False):
        assert official("d", TEXT, add_eos) == corrected("d", TEXT, add_eos)
    assert official("d", TEXT, True)[1][-1] == plain.eos_token_id == 0


def test_official_appends_no_eos_when_the_tokenizer_has_none(plain):
    from transformers import PreTrainedTokenizerFast

    no_eos = PreTrainedTokenizerFast(tokenizer_object=plain.backend_tokenizer, eos_token=None)
    official = Tokenizing(no_eos, {"d": PROMPT}, "official")
    assert official("d", TEXT, add_eos=True)[1] == no_eos(TEXT)["input_ids"]


def test_batches_carry_the_protocols_ids(with_bos):
    example = Example(ExampleRef("d", "shard", "k", 0), wav_bytes(0.2), TEXT, 0.2)
    batches = {protocol: BatchMaker(Tokenizing(with_bos, {"d": PROMPT}, protocol), BadDataCounter(),
                                    protocol=protocol).make([example])
               for protocol in ("official", "corrected")}
    assert batches["official"]["prompt_ids"][0] == [with_bos.bos_token_id] + batches["corrected"]["prompt_ids"][0]
    assert batches["official"]["target_ids"][0][1:] == batches["corrected"]["target_ids"][0]
    assert batches["official"]["audio"].shape == batches["corrected"]["audio"].shape == (1, 3_200)

