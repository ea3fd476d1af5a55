"""Evaluation: which examples form each batch (per protocol), and every answer paired with its own reference.

The official batches are checked two ways: by hand on a small set of shards, and against the published
test loader's own batches on a larger set (tests/fixtures/eval_batches_published.json, written by
tests/fixtures/make_eval_batches_fixture.py from the published system).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lalmbench.config import TrainConfig, eval_configs_from_mapping
from lalmbench.data import batches
from lalmbench.data.examples import BadDataCounter, iter_records
from lalmbench.data.shards import resolve_shards
from lalmbench.distributed import DistInfo
from lalmbench.encoders import FrozenEncoder, LogMelEncoder
from lalmbench.evaluate import (_published_length, corrected_batches, evaluate_task, interleave_worker_batches,
                                official_batches, published_shard_order, sorted_runs)
from lalmbench.model.audio_llm import AudioLLM, add_lora
from lalmbench.model.decoder import load_decoder
from lalmbench.data.tokenizing import Tokenizing

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BATCHING_PROMPT = "Name the sound."
PUBLISHED_LOADER_CASES = [(0, 4), (1, 7), (2, 4), (2, 7), (3, 4)]  # (num_workers, batch_size)


def _wav(frames: int, rate: int, rng: np.random.Generator) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, (0.1 * rng.standard_normal(frames)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _write_tar(path: Path, records: list[tuple[str, bytes, dict]]) -> Path:
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for key, audio, meta in records:
            sink.write({"__key__": key, "wav": audio, "json": json.dumps(meta).encode()})
    return path


def write_batching_shards(directory: Path) -> list[Path]:
    """Five shards of 70, 90, 55, 100 and 41 records (404 examples: every 17th record has three captions),
    clips of 0.25 to 1 s (repeated lengths, so the sort meets ties) at 16, 22.05 and 44.1 kHz. Seeded."""
    rng = np.random.default_rng(7)
    shards = []
    for shard, count in enumerate([70, 90, 55, 100, 41]):
        records = []
        for index in range(count):
            rate = [16_000, 16_000, 22_050, 44_100][index % 4]
            seconds = [0.25, 0.5, 0.5, 0.75, 1.0][int(rng.integers(5))]
            key = f"s{shard}-{index:04d}"
            meta = ({"captions": [f"{key} one", f"{key} two", f"{key} three"]} if index % 17 == 0
                    else {"label": key})
            records.append((key, _wav(int(seconds * rate), rate, rng), meta))
        shards.append(_write_tar(directory / f"set-{shard:06d}.tar", records))
    return shards


def _task(shards: list[Path], batch_size: int, num_workers: int, name: str = "synth", metric: str = "Accuracy"):
    (task,) = eval_configs_from_mapping({name: {
        "data": {"data": [str(s) for s in shards], "key": "label", "prompt": BATCHING_PROMPT},
        "metric": metric, "batch_size": batch_size, "num_workers": num_workers}})
    return task


@pytest.fixture(scope="module")
def tiny():
    decoder, tokenizer = load_decoder("tiny-random")
    return decoder, tokenizer


def _official_texts(shards, batch_size, num_workers, tokenizer, dist=DistInfo()) -> list[list[str]]:
    task = _task(shards, batch_size, num_workers)
    tokenize = Tokenizing(tokenizer, {task.name: BATCHING_PROMPT}, "official")
    return [[example.text for example in examples]
            for examples, _ in official_batches(task, shards, BadDataCounter(), dist, batch_size,
                                                lambda example: _published_length(example, tokenize, 16_000))]


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

    real_prepare = batches.prepare_clip

    def failing_prepare(data, *args):  # decoding this one clip fails after its header looked fine
        if data == victim_audio:
            return batches.ClipFailure("undecodable audio", "cannot decode audio: injected")
        return real_prepare(data, *args)

    monkeypatch.setattr(batches, "prepare_clip", failing_prepare)
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


# -- official batches ------------------------------------------------------------------------------------------------

def test_published_shard_order_is_sorted_then_shuffled_with_seed_42():
    # random.Random(42).shuffle of three items puts them in the order [1, 0, 2]; of four, [2, 1, 3, 0].
    assert published_shard_order([Path("c"), Path("a"), Path("b")]) == [Path("b"), Path("a"), Path("c")]
    assert published_shard_order([Path(p) for p in "dcba"]) == [Path("c"), Path("b"), Path("d"), Path("a")]


def test_worker_batches_interleave_and_sorted_runs_by_hand():
    # Worker 0 has 5 items, worker 1 has 2, worker 2 none; batches of 2: w0[0:2] w1[0:2] w0[2:4] w0[4:5].
    streams = [["a0", "a1", "a2", "a3", "a4"], ["b0", "b1"], []]
    assert list(interleave_worker_batches(streams, 2)) == ["a0", "a1", "b0", "b1", "a2", "a3", "a4"]
    # Runs of 3 sorted largest first; the tie (two 5s) keeps its order, no item crosses a run boundary.
    keys = {"p": 1, "q": 5, "r": 5, "s": 2, "t": 9, "u": 2, "v": 7}
    assert list(sorted_runs(list("pqrstuv"), keys.get, run=3)) == ["q", "r", "p", "t", "s", "u", "v"]


def _small_shards(directory: Path) -> list[Path]:
    """a: a0..a5 (a1 with two captions), b: b0..b4, c: c0..c2; each shard's last clip is long (0.2 s), the
    others short (0.05 s)."""
    rng = np.random.default_rng(0)
    shards = []
    for name, count in [("a", 6), ("b", 5), ("c", 3)]:
        records = []
        for index in range(count):
            key = f"{name}{index}"
            meta = {"captions": [f"{key} one", f"{key} two"]} if key == "a1" else {"label": key}
            records.append((key, _wav(3200 if index == count - 1 else 800, 16_000, rng), meta))
        shards.append(_write_tar(directory / f"{name}.tar", records))
    return shards


# Shard order (seed 42): b, a, c. Examples, per shard: b0-b4 | a0 a1 one, a1 two, a2-a5 | c0-c2; long: b4 a5 c2.
# Batches of 4; the 15 examples form one sort run, so the long clips lead, in stream order, then the rest.
SMALL_SET_BATCHES = {
    # one stream: b0-b4 a0 "a1 one" "a1 two" a2-a5 c0-c2
    0: [["b4", "a5", "c2", "b0"], ["b1", "b2", "b3", "a0"], ["a1 one", "a1 two", "a2", "a3"], ["a4", "c0", "c1"]],
    1: [["b4", "a5", "c2", "b0"], ["b1", "b2", "b3", "a0"], ["a1 one", "a1 two", "a2", "a3"], ["a4", "c0", "c1"]],
    # worker 0 reads b then c, worker 1 reads a: b0-b3 | a0 "a1 one" "a1 two" a2 | b4 c0 c1 c2 | a3 a4 a5
    2: [["b4", "c2", "a5", "b0"], ["b1", "b2", "b3", "a0"], ["a1 one", "a1 two", "a2", "c0"], ["c1", "a3", "a4"]],
    # workers read b, a, c: b0-b3 | a0 "a1 one" "a1 two" a2 | c0 c1 c2 | b4 | a3 a4 a5
    3: [["c2", "b4", "a5", "b0"], ["b1", "b2", "b3", "a0"], ["a1 one", "a1 two", "a2", "c0"], ["c1", "a3", "a4"]],
}


@pytest.mark.parametrize("num_workers", sorted(SMALL_SET_BATCHES))
def test_official_batches_by_hand(tmp_path, tiny, num_workers):
    shards = _small_shards(tmp_path)
    assert _official_texts(shards, 4, num_workers, tiny[1]) == SMALL_SET_BATCHES[num_workers]


def test_official_batches_dealt_to_ranks_in_turn(tmp_path, tiny):
    shards = _small_shards(tmp_path)
    everything = SMALL_SET_BATCHES[2]
    assert _official_texts(shards, 4, 2, tiny[1], DistInfo(rank=0, world=2)) == everything[0::2]
    assert _official_texts(shards, 4, 2, tiny[1], DistInfo(rank=1, world=2)) == everything[1::2]


@pytest.mark.parametrize("num_workers, batch_size", PUBLISHED_LOADER_CASES)
def test_official_batches_equal_the_published_loader(tmp_path, tiny, num_workers, batch_size):
    # 404 examples: two sort runs (256 + 148), ties, three sample rates, caption copies, uneven workers.
    published = json.loads((FIXTURES / "eval_batches_published.json").read_text())[f"{num_workers}/{batch_size}"]
    shards = write_batching_shards(tmp_path)
    assert _official_texts(shards, batch_size, num_workers, tiny[1]) == [[text for _, text in b] for b in published]


# -- official against corrected, end to end --------------------------------------------------------------------------

def _evaluate(shards, protocol: str, tiny, metric: str = "Accuracy", num_workers: int = 0, spy: list | None = None):
    decoder, tokenizer = tiny
    model = AudioLLM(FrozenEncoder(LogMelEncoder()), add_lora(decoder), tokenizer)
    if spy is not None:  # record the rows of every generate call, then generate for real
        generate = model.generate

        def recording_generate(batch, *args, **kwargs):
            spy.append([ref.key for ref in batch["refs"]])
            return generate(batch, *args, **kwargs)

        model.generate = recording_generate
    task = _task(shards, 4, num_workers, metric=metric)
    config = TrainConfig(max_new_tokens=2, protocol=protocol)
    return evaluate_task(model, task, shards, config, Tokenizing(tokenizer, {task.name: BATCHING_PROMPT}, protocol),
                         DistInfo(), BadDataCounter(), show_progress=False)


def test_caption_copies_answered_each_under_official_once_under_corrected(tmp_path, tiny):
    shards = _small_shards(tmp_path)
    official_rows, corrected_rows = [], []
    official = _evaluate(shards, "official", tiny, num_workers=2, spy=official_rows)
    corrected = _evaluate(shards, "corrected", tiny, num_workers=2, spy=corrected_rows)
    # official: the batches above, a1 twice (once per caption); corrected: 14 distinct clips, longest first.
    assert official_rows == [["b4", "c2", "a5", "b0"], ["b1", "b2", "b3", "a0"], ["a1", "a1", "a2", "c0"],
                             ["c1", "a3", "a4"]]
    assert sorted(sum(corrected_rows, [])) == sorted(f"{s}{i}" for s, n in [("a", 6), ("b", 5), ("c", 3)]
                                                     for i in range(n))
    assert [len(rows) for rows in corrected_rows] == [4, 4, 4, 2]
    assert corrected_rows[0][:3] == ["a5", "b4", "c2"]  # the long clips lead, in shard order (corrected reads a, b, c)
    # Both list the 15 examples in shard, record, text order, each with its own reference.
    expected = ["a0", "a1 one", "a1 two", "a2", "a3", "a4", "a5", "b0", "b1", "b2", "b3", "b4", "c0", "c1", "c2"]
    for result in (official, corrected):
        assert [reference for _, reference, _ in result.predictions] == expected
        assert [key for _, _, key in result.predictions] == [text.split()[0] for text in expected]
    a1_answers = [prediction for prediction, _, key in corrected.predictions if key == "a1"]
    assert a1_answers[0] == a1_answers[1]  # one answer for both captions


def _corrected_keys(shards, dist=DistInfo(), limit=None) -> list[list[tuple[str, list[str]]]]:
    """Each batch of `corrected_batches`: per clip, its key and the texts its answer fills."""
    task = _task(shards, 4, 0)
    return [[(example.ref.key, [e.text for _, e in fills]) for example, fills in zip(examples, part)]
            for examples, part in corrected_batches(task, shards, BadDataCounter(), dist, 4, limit)]


def test_corrected_batches_are_the_same_whatever_the_number_of_processes(tmp_path):
    # a1 has two captions (examples 1 and 2 in reading order): they used to go to ranks 1 and 0 and be
    # answered twice, each in a batch of its own rank's clips.
    shards = _small_shards(tmp_path)
    one = _corrected_keys(shards)
    assert [[key for key, _ in batch] for batch in one] == [["a5", "b4", "c2", "a0"], ["a1", "a2", "a3", "a4"],
                                                            ["b0", "b1", "b2", "b3"], ["c0", "c1"]]
    assert one[1][0] == ("a1", ["a1 one", "a1 two"])
    for world in (2, 3):
        ranks = [_corrected_keys(shards, DistInfo(rank=rank, world=world)) for rank in range(world)]
        assert ranks == [one[rank::world] for rank in range(world)]


def test_corrected_never_splits_a_clip_between_sort_runs(tmp_path, monkeypatch):
    # Runs of 3 (instead of 256): a1's captions used to straddle the first run's end (a0, "a1 one" |
    # "a1 two", a2, ...) and a1 was answered in both runs. Runs are counted in clips.
    from lalmbench import evaluate

    monkeypatch.setattr(evaluate, "SORT_CHUNK", 3)
    shards = _small_shards(tmp_path)
    clips = [clip for batch in _corrected_keys(shards) for clip in batch]
    # runs a0 a1 a2 | a3 a4 a5 | b0 b1 b2 | b3 b4 c0 | c1 c2, each longest first (a5, b4, c2 are long)
    assert [key for key, _ in clips] == ["a0", "a1", "a2", "a5", "a3", "a4", "b0", "b1", "b2", "b4", "b3", "c0",
                                         "c2", "c1"]
    assert ("a1", ["a1 one", "a1 two"]) in clips
    # with a limit that ends inside a clip, the clip keeps the captions read
    assert _corrected_keys(shards, limit=2) == [[("a0", ["a0"]), ("a1", ["a1 one"])]]


def test_references_scored_after_the_token_round_trip_under_official(tmp_path, tiny):
    # "<|endoftext|>" is the tiny tokenizer's EOS, a special token: decoding its ids skips it, so the
    # published evaluation scores "dog" where the JSON says "<|endoftext|> dog"; the spaces go with strip.
    rng = np.random.default_rng(0)
    shard = _write_tar(tmp_path / "x.tar", [("k0", _wav(800, 16_000, rng), {"label": "<|endoftext|> dog"}),
                                            ("k1", _wav(800, 16_000, rng), {"label": " a cat "})])
    official = _evaluate([shard], "official", tiny)
    corrected = _evaluate([shard], "corrected", tiny)
    assert [reference for _, reference, _ in official.predictions] == ["dog", "a cat"]
    assert [reference for _, reference, _ in corrected.predictions] == ["<|endoftext|> dog", " a cat "]


# -- corrected with several processes: the same batches, each clip answered once -----------------------------------
def _corrected_rank(rank: int, world: int, port: int, directory: str) -> None:
    """Evaluate the small shards (corrected) as process `rank` of `world` (gloo); write what it answered."""
    import os

    import torch
    import torch.distributed as dist

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
        dist.init_process_group("gloo", rank=rank, world_size=world)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        decoder, tokenizer = load_decoder("tiny-random", seed=0)
        model = AudioLLM(FrozenEncoder(LogMelEncoder()), add_lora(decoder), tokenizer, protocol="corrected")
        rows, generate = [], model.generate

        def recording_generate(batch, *args, **kwargs):
            rows.append([ref.key for ref in batch["refs"]])
            return generate(batch, *args, **kwargs)

        model.generate = recording_generate
        shards = sorted(Path(directory).glob("*.tar"))
        task = _task(shards, 4, 0, metric="Accuracy")
        config = TrainConfig(max_new_tokens=3, protocol="corrected")
        result = evaluate_task(model, task, shards, config, Tokenizing(tokenizer, {task.name: BATCHING_PROMPT},
                                                                      "corrected"),
                               DistInfo(rank, world), BadDataCounter(), show_progress=False)
        Path(directory, f"answers-{world}-{rank}.json").write_text(json.dumps(
            {"rows": rows, "predictions": result.predictions, "score": result.score}))
    finally:
        torch.set_num_threads(threads)
        if world > 1:
            dist.destroy_process_group()


@pytest.mark.slow  # 25-60 s on 2 busy cores: two processes load torch and transformers
def test_corrected_scores_do_not_depend_on_the_number_of_processes(tmp_path):
    import torch.multiprocessing as mp

    from test_distributed import _free_port

    _small_shards(tmp_path)
    _corrected_rank(0, 1, 0, str(tmp_path))
    mp.spawn(_corrected_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    one = json.loads((tmp_path / "answers-1-0.json").read_text())
    two = [json.loads((tmp_path / f"answers-2-{rank}.json").read_text()) for rank in range(2)]
    clips = sorted(f"{s}{i}" for s, n in [("a", 6), ("b", 5), ("c", 3)] for i in range(n))
    assert sorted(sum(one["rows"], [])) == clips  # each clip answered once
    assert sorted(sum(two[0]["rows"] + two[1]["rows"], [])) == clips  # once, by one of the two processes
    assert two[0]["rows"] == one["rows"][0::2] and two[1]["rows"] == one["rows"][1::2]  # the same batches
    for rank in range(2):  # every process holds all the answers, the same as one process's
        assert two[rank]["predictions"] == one["predictions"] and two[rank]["score"] == one["score"]
