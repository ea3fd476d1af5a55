"""Greedy generation and whole evaluations: items 7 (eval batching), 9 (empty references) and 10 (reference
round trip) of docs/fidelity.md, under protocol official.

    python scripts/parity/generate_side_by_side.py [--decoder tiny|smollm2|both] [--part batch|evaluation|both]
        [--trained RUN_DIR/final_weights.pt [--trained-encoder lalmbench.encoders.LogMelEncoder]]
        [--published-checkpoint PUBLISHED_RUN/checkpoint-N]

Part 1, one batch: four 16 kHz clips of 8 / 1.5 / 3 / 6 s (bit-identical audio in both systems), identical
weights, the published model's `generate` exactly as its trainer calls it (150 new tokens, repetition
penalty 1.05, greedy) beside lalmbench's AudioLLM.generate. Targets: every row's tokens identical, and the
rows' answers not all the same (a test of identical answers that a constant answer would pass is no test).
The tiny decoder as made by make_decoders.py (weights of sd 0.02) answers the same token for every clip, so
parts 1 and 2 redraw its layer matrices with sd 0.1 (VARIED): its greedy answers then depend on the audio.
With the encoder that returns no mask, padded frames are attended, so the batch mates matter: each clip
alone is generated too, to show how far that moves the answer (no target).

Part 2, whole evaluations (tiny decoder): the published trainer's `predict` over its own evaluation
pipeline (shards split over the YAML's num_workers, batches interleaved, sorted within 256 examples) beside
lalmbench's `evaluate_task`, on crafted test sets: several shards, clips of many lengths, caption lists
(one example per caption), a reference holding a special-token string, and a second caption set with an
empty reference. The caption references are real text near the answers: a first lalmbench pass over the
same examples (placeholder captions of the same shape, so the same batches) gives each example's answer,
and its reference is "a recording of" and that answer with every third word replaced, so iWER lands
mid-range (neither clamped at 0 nor 1) and moves with every prediction (random references, or an empty one
among answers of 150 tokens, give iWER 0 whatever the predictions). Targets: identical batch
composition (which examples, in which order), identical predictions and scored references for every
example, the same score, and more than one distinct prediction.

Part 3 (with --trained): the weights a lalmbench run trained on the demo suite with the tiny decoder
(`end_to_end.py` leaves them in each run directory) are put into both systems, which then evaluate the
demo's four test sets; a trained model gives varied, short answers, so predictions and scores are
informative. Same targets as part 2. --published-checkpoint does the same the other way round: the
weights a published training run saved are put into both systems.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from kit import (DEMO, WORK, Tally, build_pair, build_pair_from_published, build_trained_pair, lalmbench_batch, lalmbench_examples, lalmbench_tokenizing,
                 published_collate, published_samples, published_tokenizer, smollm2_decoder, tiny_decoder,
                 write_lens_shard, write_shard)

ENCODERS = ("parity_encoders.NoMaskConvEncoder", "parity_encoders.MaskConvEncoder")
PROMPT = "Describe the sound."
VARIED = 0.1  # sd of the tiny decoder's layer matrices in parts 1 and 2 (its own 0.02 answers one token for all)
MAX_NEW_TOKENS, PENALTY = 150, 1.05


def published_generate(model, batch, eos_id: int) -> list[list[int]]:
    """The published trainer's prediction_step call; each row cut at its first EOS."""
    with torch.no_grad():
        out = model.generate(**batch, repetition_penalty=PENALTY, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                             temperature=1.0, top_k=50, top_p=1.0)
    return [row[: row.index(eos_id)] if eos_id in row else row for row in out.tolist()]


def one_batch(tally: Tally, label: str, decoder: str, encoder: str, lora_scale: float,
              decoder_scale: float | None) -> None:
    short = encoder.split(".")[-1]
    torch.manual_seed(0)
    published, ours, _ = build_pair(encoder, decoder, lora_scale=lora_scale, protocol="official",
                                    decoder_scale=decoder_scale)
    tokenizer = published_tokenizer(decoder)
    published.eval(); ours.eval()
    shard = write_lens_shard()
    published_batch = published_collate(published_samples(shard, PROMPT, "label", tokenizer, False), tokenizer)
    our_batch = lalmbench_batch(lalmbench_examples(shard, "lens", "label"), {"lens": PROMPT}, tokenizer, False)
    started = time.perf_counter()
    reference = published_generate(published, published_batch, tokenizer.eos_token_id)
    middle = time.perf_counter()
    ours_tokens = ours.generate(our_batch, MAX_NEW_TOKENS, PENALTY)
    ended = time.perf_counter()
    for row, (a, b) in enumerate(zip(reference, ours_tokens)):
        first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))
        tally.same(f"[{label}/{short}] row {row} tokens ({len(a)}/{len(b)} long, first differing index {first})",
                   a, b)
    distinct = len({tuple(row) for row in reference})
    tally.check(f"[{label}/{short}] rows answer differently", distinct > 1,
                f"{distinct} distinct answers of {len(reference)} rows")
    print(f"    time: reference {middle - started:.1f} s, lalmbench {ended - middle:.1f} s")
    alone = []
    for row in range(len(our_batch["refs"])):
        length = int(our_batch["audio_mask"][row].sum())
        single = {key: value[row:row + 1] for key, value in our_batch.items()}
        single["audio"], single["audio_mask"] = single["audio"][:, :length], single["audio_mask"][:, :length]
        alone.append(ours.generate(single, MAX_NEW_TOKENS, PENALTY)[0] == ours_tokens[row])
    why = "the decoder attends to the padded frames of shorter clips" if "NoMask" in encoder else "masked padding"
    print(f"    the same clip alone gives the batch's tokens: {alone} (no target; {why})")


# -- whole evaluations ------------------------------------------------------------------------------------------
def caption_clips() -> list[list[tuple[str, np.ndarray]]]:
    """Three shards of five 16 kHz clips each, 0.4-5 s, keyed cap<shard>_<row>."""
    rng = np.random.default_rng(7)
    shards = []
    for index in range(3):
        rows = []
        for row in range(5):
            seconds = float(rng.uniform(0.4, 5.0))
            rows.append((f"cap{index}_{row}", (0.3 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32)))
        shards.append(rows)
    return shards


def write_caption_shards(name: str, clips, captions: dict) -> list[str]:
    return [write_shard(WORK / f"{name}-{index}.tar.gz",
                        [(key, clip, 16_000, "PCM_16", "wav", {"caption": captions[key]}) for key, clip in rows])
            for index, rows in enumerate(clips)]


def near_reference(answer: str) -> str:
    """"a recording of" and the answer with every third word replaced: a reference a third or more off it.
    The three words in front keep a one-word answer of few letters ("deddedd...") from a reference that
    the published corrupt-text heuristic (few distinct characters) would drop in both systems."""
    words = answer.split()
    return " ".join(["a", "recording", "of"] + ["noise" if k % 3 == 2 else word for k, word in enumerate(words)])


LISTS = ("cap0_0", "cap1_0", "cap2_1")  # clips with a caption list: one example per caption
SPECIAL = "cap0_3"  # its reference starts with a special-token string


def half(text: str) -> str:
    words = text.split()
    return " ".join(words[: max(4, len(words) // 2)])


def answers_of(model, tokenizer, test: dict, shape: dict) -> dict:
    """A first lalmbench pass over the set with placeholder captions of the final shape (the same examples,
    so the same batches: without a mask the batch mates change the answers): (key, copy) -> answer."""
    placeholders = {key: ["x", "y"] if isinstance(value, list) else "x" for key, value in shape.items()}
    first = {**test, "shards": write_caption_shards(test["name"], test["clips"], placeholders)}
    _, pairs, _, _ = lalmbench_evaluation(model, tokenizer, first)
    return {(key, 0 if text == "x" else 1): prediction for (key, text), (prediction, _) in pairs.items()}


def caption_test_sets(model, tokenizer) -> list[dict]:
    """The caption set (three caption lists, one reference holding a special-token string) and its first
    shard with one reference empty; every other reference is near the answer lalmbench gives to that very
    example, from a first pass over the same examples."""
    clips = caption_clips()
    keys = [key for rows in clips for key, _ in rows]
    common = {"prompt": PROMPT, "key": "caption", "metric": "iWER", "metric_args": {}, "batch_size": 4}
    sets = []
    for test, shape in (({"name": "captions", "num_workers": 2, "clips": clips},
                         {key: [""] * 2 if key in LISTS else "" for key in keys}),
                        ({"name": "captions-empty", "num_workers": 0, "clips": clips[:1]},
                         dict.fromkeys((key for key, _ in clips[0]), ""))):
        answers = answers_of(model, tokenizer, {**common, **test}, shape)
        # a list's second caption: the first half of its reference, so that the two copies' texts differ
        captions = {key: [near_reference(answers[key, 0]), half(near_reference(answers[key, 1]))]
                    if isinstance(value, list) else near_reference(answers[key, 0]) for key, value in shape.items()}
        if test["name"] == "captions":
            captions[SPECIAL] = "<|im_end|> " + captions[SPECIAL]
        else:
            captions["cap0_2"] = ""
        shards = write_caption_shards(test["name"], test["clips"], captions)
        sets.append({**common, "name": test["name"], "num_workers": test["num_workers"], "shards": shards})
    return sets


def label_shards() -> list[str]:
    rng = np.random.default_rng(8)
    labels = ["Bark;Dog", "Cat;Meow", "Speech", "Male speech, man speaking", "Dog", "Bark ;Dog", "Music;Speech",
              "Walk, footsteps", "Cat", "Speech;Dog", "Meow", "Music"]
    shards = []
    for index in range(2):
        items = []
        for row in range(6):
            seconds = float(rng.uniform(0.5, 3.0))
            clip = (0.3 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32)
            items.append((f"lab{index}_{row}", clip, 16_000, "PCM_16", "wav", {"labels": labels[index * 6 + row]}))
        shards.append(write_shard(WORK / f"labels-{index}.tar.gz", items))
    return shards


def test_sets(model, tokenizer) -> list[dict]:
    return caption_test_sets(model, tokenizer) + [
        {"name": "labels", "shards": label_shards(), "prompt": "Which labels apply?", "key": "labels",
         "metric": "mAP", "metric_args": {"num_classes": 12}, "batch_size": 3, "num_workers": 0}]


def published_evaluation(model, tokenizer, test: dict):
    """(score, [(key, raw text)] in batch order, [(prediction, scored reference)] in the same order, batches)."""
    from transformers import TrainingArguments
    from xares_llm.audiowebdataset import AudioTextDataType, AudioTextTokenWebdataset
    from xares_llm.metrics import TokenDecoder, get_metric
    from xares_llm.trainer import XaresLLMTrainerEvaluator

    batches = []
    collate = AudioTextTokenWebdataset._default_collate_fn

    def recording_collate(self, samples):
        batches.append([(s["filename"], s["text"]) for s in samples])
        return collate(self, samples)

    output = WORK / "work" / "evaluation"
    shutil.rmtree(output, ignore_errors=True)
    trainer = XaresLLMTrainerEvaluator(model=model, args=TrainingArguments(output_dir=str(output), report_to=[]))
    trainer.compute_metrics = get_metric(test["metric"], tokenizer=tokenizer, **test["metric_args"])
    data = AudioTextTokenWebdataset(
        data_urls=AudioTextDataType(data=test["shards"], prompt=test["prompt"], key=test["key"], name=test["name"]),
        tokenizer=tokenizer, training=False, batch_size=test["batch_size"], sort_by_length=256,
        num_workers=test["num_workers"])
    AudioTextTokenWebdataset._default_collate_fn = recording_collate
    try:
        result = trainer.predict(test_dataset=data)
    finally:
        AudioTextTokenWebdataset._default_collate_fn = collate
    predictions, references = TokenDecoder(tokenizer).decode_predictions(result)
    order = [item for batch in batches for item in batch]
    return result.metrics[f"test_{test['metric']}"], order, list(zip(predictions, references)), batches


def lalmbench_evaluation(model, tokenizer, test: dict):
    """The same four things from lalmbench's evaluate_task (protocol official)."""
    from lalmbench.config import DatasetSpec, EvalTaskConfig, TrainConfig
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.distributed import DistInfo
    from lalmbench.evaluate import evaluate_task

    task = EvalTaskConfig(name=test["name"], data=DatasetSpec(data=test["shards"], prompt=test["prompt"],
                                                              key=test["key"], name=test["name"]),
                          metric=test["metric"], metric_args=dict(test["metric_args"]),
                          batch_size=test["batch_size"], num_workers=test["num_workers"])
    config = TrainConfig(protocol="official")
    batches = []
    generate = model.generate

    def recording_generate(batch, *args, **kwargs):
        batches.append([(ref.key, text) for ref, text in zip(batch["refs"], batch["texts"])])
        return generate(batch, *args, **kwargs)

    model.generate = recording_generate
    try:
        result = evaluate_task(model, task, [Path(s) for s in test["shards"]], config,
                               lalmbench_tokenizing(tokenizer, {test["name"]: test["prompt"]}, "official"),
                               DistInfo(), BadDataCounter(), show_progress=False)
    finally:
        del model.generate
    # predictions come back in example order (shard order); their raw texts, in that order:
    raw = [(e.ref.key, e.text) for shard in test["shards"]
           for e in lalmbench_examples(shard, test["name"], test["key"], "official")]
    pairs = {item: (prediction, reference) for item, (prediction, reference, _) in zip(raw, result.predictions)}
    return result.score, pairs, batches, len(result.predictions) == len(raw)


def compare_evaluations(tally: Tally, label: str, published, ours, tokenizer, test: dict,
                        require_varied: bool = False) -> None:
    started = time.perf_counter()
    reference_score, order, reference_pairs, reference_batches = published_evaluation(published, tokenizer, test)
    middle = time.perf_counter()
    our_score, our_pairs, our_batches, complete = lalmbench_evaluation(ours, tokenizer, test)
    ended = time.perf_counter()
    tally.same(f"{label} batches: {len(reference_batches)} / {len(our_batches)}, examples in order",
               reference_batches, our_batches)
    tally.check(f"{label} one answer per example", complete and len(our_pairs) == len(order),
                f"reference {len(order)} lalmbench {len(our_pairs)}")
    same_predictions = sum(our_pairs.get(item, (None, None))[0] == pair[0] for item, pair in zip(order, reference_pairs))
    same_references = sum(our_pairs.get(item, (None, None))[1] == pair[1] for item, pair in zip(order, reference_pairs))
    tally.compare(f"{label} identical predictions (of {len(order)})", len(order), same_predictions, 0.0)
    tally.compare(f"{label} identical scored references (of {len(order)})", len(order), same_references, 0.0)
    for item, pair in zip(order, reference_pairs):
        mine = our_pairs.get(item)
        if mine != pair:
            print(f"    {item}: reference {pair!r} lalmbench {mine!r}")
    tally.compare(f"{label} {test['metric']} score", reference_score, our_score, 1e-6)
    distinct = len({prediction for prediction, _ in reference_pairs})
    if require_varied:
        tally.check(f"{label} predictions differ between examples", distinct > 1,
                    f"{distinct} distinct predictions of {len(order)}")
    else:
        print(f"    {distinct} distinct predictions of {len(order)}")
    print(f"    time: reference {middle - started:.1f} s, lalmbench {ended - middle:.1f} s")


def whole_evaluations(tally: Tally, decoder: str, encoders: list[str]) -> None:
    for encoder in encoders:
        short = encoder.split(".")[-1]
        torch.manual_seed(0)
        published, ours, _ = build_pair(encoder, decoder, protocol="official", decoder_scale=VARIED)
        tokenizer = published_tokenizer(decoder)
        for test in test_sets(ours, tokenizer):
            compare_evaluations(tally, f"[eval {test['name']}/{short}]", published, ours, tokenizer, test,
                                require_varied=True)


def demo_test_sets() -> list[dict]:
    import yaml

    tests = []
    for name, entry in yaml.safe_load((DEMO / "eval.yaml").read_text()).items():
        data = entry["data"]
        tests.append({"name": name, "shards": list(data["data"]), "prompt": data["prompt"], "key": data["key"],
                      "metric": entry["metric"], "metric_args": entry.get("metric_args") or {},
                      "batch_size": entry["batch_size"], "num_workers": entry["num_workers"]})
    return tests


def trained_evaluations(tally: Tally, label: str, published, ours) -> None:
    tokenizer = published_tokenizer(tiny_decoder())
    for test in demo_test_sets():
        compare_evaluations(tally, f"[{label} {test['name']}]", published, ours, tokenizer, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoder", choices=("tiny", "smollm2", "both"), default="tiny",
                        help="decoder(s) for part 1 (part 2 always uses the tiny decoder)")
    parser.add_argument("--trained", help="final_weights.pt of a lalmbench run on the demo suite (tiny decoder): part 3")
    parser.add_argument("--trained-encoder", default="lalmbench.encoders.LogMelEncoder",
                        help="the encoder that run used (dotted path)")
    parser.add_argument("--published-checkpoint", help="checkpoint-N folder of a published run on the demo suite (tiny decoder)")
    parser.add_argument("--part", choices=("batch", "evaluation", "both", "none"), default="both",
                        help="part 1 (one batch), part 2 (whole evaluations), both, or none (--trained alone)")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS,
                        help="the encoders of parts 1 and 2 (default both)")
    args = parser.parse_args()
    tally = Tally("generation and evaluation (protocol official)")
    decoders = []
    if args.decoder in ("tiny", "both"):
        decoders.append(("tiny", tiny_decoder(), 0.05, VARIED))
    if args.decoder in ("smollm2", "both"):
        decoders.append(("SmolLM2", smollm2_decoder(), 0.01, None))
    for label, decoder, scale, decoder_scale in decoders if args.part in ("batch", "both") else []:
        for encoder in args.encoders:
            one_batch(tally, label, decoder, encoder, scale, decoder_scale)
    if args.part in ("evaluation", "both"):
        whole_evaluations(tally, tiny_decoder(), args.encoders)
    if args.trained:
        published, ours, _ = build_trained_pair(args.trained_encoder, tiny_decoder(), args.trained)
        trained_evaluations(tally, "lalmbench-trained", published, ours)
    if args.published_checkpoint:
        published, ours, _ = build_pair_from_published(args.published_checkpoint)
        trained_evaluations(tally, "published-trained", published, ours)
    tally.finish()


if __name__ == "__main__":
    main()
