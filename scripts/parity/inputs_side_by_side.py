"""What each system feeds the model, example by example: items 5 (resampling), 8 (targets) and 11 (prompt
tokenization) of docs/fidelity.md, under protocol official.

    python scripts/parity/inputs_side_by_side.py

Shards: the demo's tones / chords / melody test shards, a crafted shard with one clip per sample rate
(16, 22.05, 44.1, 48 kHz) in mono and in stereo, some louder than full scale, and a crafted shard of
awkward targets (a boolean, a number, an empty string with and without a fallback key, a caption list).
For each example both systems agree on, the prompt + target token ids and labels (training format) and the
audio after decode / mono / peak scaling / resampling (evaluation path, no crop) are compared.
Targets under official: identical example sets and token ids, audio max|diff| <= 1e-5 with equal lengths.
The same comparison under protocol corrected is printed for contrast (no target).
"""

from __future__ import annotations

import numpy as np

from kit import (WORK, Tally, demo_shard, lalmbench_batch, lalmbench_examples, published_samples,
                 published_tokenizer, tiny_decoder, write_shard)

AUDIO_TOLERANCE = 1e-5
RATES = (16_000, 22_050, 44_100, 48_000)


def rate_shard() -> str:
    rng = np.random.default_rng(0)
    items = []
    for rate in RATES:
        t = np.arange(int(1.3 * rate)) / rate
        tone = 0.5 * np.sin(2 * np.pi * 7000 * t) if rate > 16_000 else 0.5 * np.sin(2 * np.pi * 3000 * t)
        mono = (tone + 0.1 * rng.standard_normal(len(t))).astype(np.float32)
        loud = np.stack([1.7 * np.sin(2 * np.pi * 440 * t), 0.3 * rng.standard_normal(len(t))], 1).astype(np.float32)
        items.append((f"mono{rate}", mono, rate, "PCM_16", "flac", {"label": f"mono {rate}"}))
        # FLOAT keeps samples above full scale, so peak scaling is exercised
        items.append((f"stereo{rate}", loud, rate, "FLOAT", "wav", {"label": f"stereo {rate}"}))
    return write_shard(WORK / "rates.tar.gz", items)


def target_shard() -> str:
    rng = np.random.default_rng(1)
    clip = lambda: (0.2 * rng.standard_normal(8000)).astype(np.float32)
    metas = [("boolean", {"label": True}), ("number", {"label": 3}), ("float", {"label": 2.5}),
             ("emptywithfallback", {"label": "", "text": "fallback text"}), ("emptyonly", {"label": ""}),
             ("captions", {"label": ["cap one", "cap two"]}), ("fallbackkey", {"caption": "from the default key"}),
             ("plain", {"label": "Dog bark"})]
    return write_shard(WORK / "targets.tar.gz", [(k, clip(), 16_000, "PCM_16", "wav", m) for k, m in metas])


def bos_tokenizer():
    """The tiny decoder's tokenizer made to add a BOS (<|im_start|>) to every text, like many Llama tokenizers."""
    from tokenizers import processors

    tokenizer = published_tokenizer(tiny_decoder())
    bos = "<|im_start|>"
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))])
    tokenizer.bos_token = bos
    return tokenizer


def compare_shard(tally: Tally | None, shard: str, name: str, prompt: str, tokenizer, protocol: str) -> dict:
    """Compare one shard; with tally None only the figures are returned (contrast runs)."""
    published = published_samples(shard, prompt, "label", tokenizer, training=True)
    eos = tokenizer.eos_token
    for sample in published:  # training appends the EOS text to the target; the example text has none
        sample["target"] = sample["text"][: -len(eos)] if sample["text"].endswith(eos) else sample["text"]
    ours = lalmbench_examples(shard, name, "label", protocol)
    published_set = [(s["filename"], s["target"]) for s in published]
    our_set = [(e.ref.key, e.text) for e in ours]
    figures = {"sets_equal": published_set == our_set, "token_mismatches": 0, "worst_audio": 0.0,
               "length_mismatches": 0, "examples": 0}
    if tally is not None:
        tally.same(f"[{name}] example set (key, target)", published_set, our_set)
    by_key = {(e.ref.key, e.text): e for e in ours}
    for sample in published:
        example = by_key.get((sample["filename"], sample["target"]))
        if example is None:
            continue
        batch = lalmbench_batch([example], {name: prompt}, tokenizer, training=True, protocol=protocol)
        prompt_ids, target_ids = list(batch["prompt_ids"][0]), list(batch["target_ids"][0])
        same_tokens = sample["input_ids"] == prompt_ids + target_ids and \
            sample["labels"] == [-100] * len(prompt_ids) + target_ids
        figures["token_mismatches"] += not same_tokens
        figures["examples"] += 1
        if not same_tokens and tally is not None:
            print(f"    tokens differ for {sample['filename']}: reference {sample['input_ids']} / {sample['labels']}, "
                  f"lalmbench {prompt_ids + target_ids} / {[-100] * len(prompt_ids) + target_ids}")
        reference_audio = sample["audio"].numpy()
        our_audio = batch["audio"][0, : int(batch["audio_mask"][0].sum())].numpy()
        if tally is not None and name == "rates":
            worst = tally.arrays(f"[rates] {sample['filename']} audio", reference_audio, our_audio, AUDIO_TOLERANCE,
                                 "samples")
        elif len(reference_audio) != len(our_audio):
            worst = np.inf
        else:
            worst = float(np.abs(reference_audio - our_audio).max())
        figures["length_mismatches"] += len(reference_audio) != len(our_audio)
        figures["worst_audio"] = max(figures["worst_audio"], worst)
    return figures


def main() -> None:
    tally = Tally("inputs: examples, tokens, audio (protocol official)")
    tokenizer = published_tokenizer(tiny_decoder())
    shards = [(demo_shard("tones"), "tones", "Classify the tone."),
              (demo_shard("chords"), "chords", "Which notes sound together?"),
              (demo_shard("melody"), "melody", "Transcribe the melody."),
              (rate_shard(), "rates", "Describe it, please: 你好"),
              (target_shard(), "targets", "What is it?")]
    totals = {"examples": 0, "token_mismatches": 0}
    for shard, name, prompt in shards:
        figures = compare_shard(tally, shard, name, prompt, tokenizer, "official")
        totals["examples"] += figures["examples"]
        totals["token_mismatches"] += figures["token_mismatches"]
        if name != "rates":
            tally.compare(f"[{name}] largest audio |sample diff| over {figures['examples']} clips", 0.0,
                          figures["worst_audio"], AUDIO_TOLERANCE)
    tally.compare(f"token/label mismatches over {totals['examples']} examples", 0, totals["token_mismatches"], 0.0)

    # item 11: a tokenizer that adds a BOS
    bos = bos_tokenizer()
    figures = compare_shard(None, demo_shard("tones"), "tones", "Classify the tone.", bos, "official")
    tally.compare(f"BOS-adding tokenizer: token mismatches over {figures['examples']} examples", 0,
                  figures["token_mismatches"], 0.0)

    print("\ncontrast, protocol corrected (no target):")
    for shard, name, prompt in shards[3:]:
        figures = compare_shard(None, shard, name, prompt, tokenizer, "corrected")
        print(f"  [{name}] example sets equal: {figures['sets_equal']}; worst audio max|diff| {figures['worst_audio']:.3g}; "
              f"clips of another length: {figures['length_mismatches']} of {figures['examples']}")
    figures = compare_shard(None, demo_shard("tones"), "tones", "Classify the tone.", bos, "corrected")
    print(f"  BOS-adding tokenizer: token mismatches {figures['token_mismatches']} of {figures['examples']}")
    tally.finish()


if __name__ == "__main__":
    main()
