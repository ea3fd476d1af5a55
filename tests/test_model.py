"""AudioLLM: the packed training loss (protocol corrected) and KV-cached greedy decoding against naive
references under both protocols. tests/test_official_model.py holds the official layout against the
published model's numbers."""

import pytest
import torch

from lalmbench.encoders import FrozenEncoder, LogMelEncoder
from lalmbench.model.audio_llm import AudioLLM, add_lora
from lalmbench.model.decoder import load_decoder


def _build(protocol: str) -> AudioLLM:
    decoder, tokenizer = load_decoder("tiny-random", seed=3)
    torch.manual_seed(0)
    decoder = add_lora(decoder, dropout=0.0)
    llm = AudioLLM(FrozenEncoder(LogMelEncoder()), decoder, tokenizer, protocol=protocol)
    with torch.no_grad():  # LoRA B starts at zero; make the adapters matter
        for name, p in llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return llm.eval()


@pytest.fixture(scope="module")
def model():
    return _build("corrected")


@pytest.fixture(scope="module")
def official_model(model):
    official = _build("official")
    official.load_state_dict(model.state_dict())
    return official


def _batch(tokenizer, lengths=(16000, 9000), targets=("red", "blue green")):
    audio = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for row, n in enumerate(lengths):
        audio[row, :n] = 0.1 * torch.randn(n, generator=g)
        mask[row, :n] = 1
    prompt = tokenizer("Classify the tone.", add_special_tokens=False)["input_ids"]
    target_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in targets]
    return {"audio": audio, "audio_mask": mask, "prompt_ids": [prompt] * len(lengths), "target_ids": target_ids}


def _one_row(batch, row):
    n = int(batch["audio_mask"][row].sum())
    return {"audio": batch["audio"][row:row + 1, :n], "audio_mask": batch["audio_mask"][row:row + 1, :n],
            "prompt_ids": batch["prompt_ids"][row:row + 1], "target_ids": batch["target_ids"][row:row + 1]}


def test_packed_batch_loss_equals_token_mean_of_single_examples(model):
    batch = _batch(model.tokenizer)
    with torch.no_grad():
        total, count = model.loss_terms(batch)
        parts = [model.loss_terms(_one_row(batch, r)) for r in range(2)]
    # Padding inside the batch changes nothing: the batch loss is the sum of the rows' token losses.
    assert count == sum(c for _, c in parts)
    assert torch.allclose(total, sum(s for s, _ in parts), atol=1e-4)


def test_loss_matches_the_decoders_own_causal_lm_loss(model):
    batch = _one_row(_batch(model.tokenizer), 0)
    with torch.no_grad():
        ours = model(batch)
        embeds, attention, labels = model.build_training_inputs(batch)
        reference = model.decoder(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss
    assert torch.allclose(ours, reference, atol=1e-5)


def _naive_greedy(model, example, max_new_tokens, penalty):
    """Recompute the whole sequence every step, no cache, one example: the textbook loop."""
    frames = model.audio_embeddings(example)[0]
    prompt = model._text_embeddings(example["prompt_ids"][0])
    sequence = torch.cat([frames, prompt])[None]
    out = []
    for _ in range(max_new_tokens):
        logits = model.decoder(inputs_embeds=sequence).logits[0, -1]
        if out:
            seen = torch.tensor(sorted(set(out)))
            chosen = logits[seen]
            logits[seen] = torch.where(chosen < 0, chosen * penalty, chosen / penalty)
        token = int(logits.argmax())
        if token == model.eos_id:
            break
        out.append(token)
        sequence = torch.cat([sequence, model._text_embeddings([token])[None]], dim=1)
    return out


@pytest.mark.parametrize("protocol", ["corrected", "official"])
def test_cached_batched_greedy_equals_naive_loop(model, official_model, protocol):
    # Official rows keep the batch's whole frame block (holes masked) and count positions over valid
    # tokens: with one prompt for the batch, the same answers as each clip alone.
    chosen = official_model if protocol == "official" else model
    batch = _batch(model.tokenizer, lengths=(16000, 9000, 12000), targets=("a", "b", "c"))
    with torch.no_grad():
        fast = chosen.generate(batch, max_new_tokens=12, repetition_penalty=1.05)
        naive = [_naive_greedy(model, _one_row(batch, r), 12, 1.05) for r in range(3)]
    assert fast == naive
    assert any(len(tokens) > 1 for tokens in fast)


def test_rows_stop_at_eos_and_leave_the_batch(model, monkeypatch):
    batch = _batch(model.tokenizer, lengths=(16000, 9000, 12000), targets=("a", "b", "c"))
    with torch.no_grad():
        free = model.generate(batch, max_new_tokens=8, repetition_penalty=1.05)
    # Declare the second token row 0 produces to be EOS: row 0 must stop right before it, and every other
    # row must be cut at its own first occurrence of that token, with its earlier tokens unchanged.
    stop = free[0][1]
    monkeypatch.setattr(model, "eos_id", stop)
    with torch.no_grad():
        stopped = model.generate(batch, max_new_tokens=8, repetition_penalty=1.05)
    cut = lambda tokens: tokens[: tokens.index(stop)] if stop in tokens else tokens
    assert stopped == [cut(tokens) for tokens in free]
    assert len(stopped[0]) < len(free[0])


def test_building_training_and_answering_warn_nothing_about_gradient_checkpointing():
    # peft (0.18-0.21) reads the decoder's `is_gradient_checkpointing`, which transformers 5 deprecated with
    # a FutureWarning: every run printed it. Recorded with "always", so an earlier test's copy cannot hide it.
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoder, tokenizer = load_decoder("tiny-random", seed=3)
        llm = AudioLLM(FrozenEncoder(LogMelEncoder()), add_lora(decoder), tokenizer, protocol="corrected")
        batch = _batch(tokenizer)
        total, count = llm.loss_terms(batch)
        (total / count).backward()
        with torch.no_grad(), llm.merged_lora():
            llm.eval().generate(batch, 2, 1.05)
    about = [str(w.message) for w in caught if "checkpointing" in str(w.message)]
    assert about == []
