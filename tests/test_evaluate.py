"""Evaluation bookkeeping: every answer is paired with its own reference, even when a row drops out."""

import yaml

from lalmbench.config import TrainConfig, eval_configs_from_mapping
from lalmbench.data import batches
from lalmbench.data.examples import BadDataCounter, iter_records
from lalmbench.data.shards import resolve_shards
from lalmbench.distributed import DistInfo
from lalmbench.encoders import FrozenEncoder, LogMelEncoder
from lalmbench.evaluate import evaluate_task
from lalmbench.model.audio_llm import AudioLLM, add_lora
from lalmbench.model.decoder import load_decoder
from lalmbench.runner import Tokenizing


def test_a_row_that_fails_to_decode_does_not_shift_the_references(demo_suite, monkeypatch):
    _, eval_yaml, _ = demo_suite
    (task,) = [t for t in eval_configs_from_mapping(yaml.safe_load(open(eval_yaml))) if t.name == "eval_tones"]
    shards = resolve_shards(task.data)
    records = list(iter_records(shards[0]))
    labels = {r.key: r.meta["label"] for r in records}
    # The longest clip leads the first batch (longest first), so every later row would shift if rows
    # were matched by position instead of by reference.
    longest = max(records, key=lambda r: r.meta["duration"])
    victim, victim_audio = longest.key, longest.audio

    real_prepare = batches._prepare

    def failing_prepare(job):  # decoding this one clip fails after its header looked fine
        return "cannot decode audio: injected" if job[0] == victim_audio else real_prepare(job)

    monkeypatch.setattr(batches, "_prepare", failing_prepare)
    decoder, tokenizer = load_decoder("tiny-random")
    model = AudioLLM(FrozenEncoder(LogMelEncoder()), add_lora(decoder), tokenizer)
    counter = BadDataCounter()
    config = TrainConfig(max_new_tokens=2, max_bad_fraction=0.5)
    result = evaluate_task(model, task, shards, config, Tokenizing(tokenizer, {task.name: task.data.prompt}),
                           DistInfo(), counter, batch_size=4, show_progress=False)
    keys = [key for _, _, key in result.predictions]
    assert keys == [k for k in sorted(labels) if k != victim]          # shard order, victim absent
    assert all(reference == labels[key] for _, reference, key in result.predictions)
    assert counter.as_dict()["eval_tones"]["skipped"] == {"undecodable audio": 1}
