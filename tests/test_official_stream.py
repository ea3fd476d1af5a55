"""Protocol official's training stream beside the published trainer's order (data/official_stream.py).

tests/fixtures/train_order_published.json holds the first batches the published system's training loader
(XARES-LLM 0.0.12, webdataset 1.0.2) drew from the shards `write_order_shards` writes, as (key, target text,
crop start) per example; tests/fixtures/make_train_order_fixture.py recorded them. The shards hold what
moves the order: clips longer than the 30 s crop at two sample rates, caption lists with a corrupt caption,
a record without JSON and one whose audio cannot be read, two datasets of which one weighs by `prob` and
the other by its shards; one case has four published loader workers.

The texts are counted by `WordTokenizer`, a few lines defined here, so that the fixture does not depend on
how a tokenizer library version splits words (the sort key counts tokens).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import write_shard
from lalmbench.config import DatasetSpec
from lalmbench.data.examples import BadDataCounter
from lalmbench.data.official_stream import PublishedStream, make_seed, published_shard_order
from lalmbench.data.tokenizing import Tokenizing
from lalmbench.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "train_order_published.json"
WORDS = ["dog", "bark", "rain", "engine", "bird", "song", "door", "knock", "wind", "siren", "bell", "cat"]
# case -> (datasets, seed, published loader workers, batches recorded)
ORDER_CASES = {"mix-seed1": (("alpha", "beta"), 1, 0, 40), "mix-seed7": (("alpha", "beta"), 7, 0, 40),
               "alpha-workers4": (("alpha",), 3, 4, 40)}
# alpha's 40 readable records hold 56 target texts, 4 of them the corrupt caption (counted by hand from
# write_order_shards' output: 12 caption lists of 2 or 3 captions, 28 single labels)
EXPECTED_TEXTS, EXPECTED_CORRUPT = 56, 4


class WordTokenizer:
    """Words and punctuation marks, one id each: enough for both systems to count tokens alike."""

    eos_token = "</s>"
    pad_token = "</s>"

    def __call__(self, text: str) -> dict:
        ids = [sum(map(ord, token)) for token in re.findall(r"\w+|[^\w\s]", text)]
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}


def wav(seconds: float, rate: int, seed: int) -> bytes:
    audio = np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_order_shards(directory: Path) -> dict:
    """The fixture's shards; returns train_data as a published train YAML gives it (name -> fields)."""
    rng = np.random.default_rng(2025)
    data = {}
    for name, shards, records in (("alpha", 6, 7), ("beta", 3, 5)):
        (directory / name).mkdir(parents=True, exist_ok=True)
        for shard in range(shards):
            samples = []
            for record in range(records):
                key = f"{name[0]}{shard}-{record:02d}"
                long = name == "alpha" and rng.random() < 0.4
                rate = int(rng.choice([1000, 2000])) if name == "alpha" else 16_000
                seconds = float(rng.uniform(31, 44)) if long else float(rng.uniform(0.3, 6.0))
                sample = {"__key__": key, "wav": wav(seconds, rate, int(rng.integers(1 << 30)))}
                words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(1, 5)))]
                if name == "alpha" and record % 3 == 1:  # caption lists, one caption corrupt now and then
                    captions = [" ".join(words), f"{words[0]} again", "!!!!!!!!!!!!"][: int(rng.integers(2, 4))]
                    sample["json"] = {"captions": captions}
                else:
                    sample["json"] = {"label": " ".join(words)}
                if name == "alpha" and (shard, record) == (2, 3):
                    del sample["json"]  # dropped: no JSON
                if name == "alpha" and (shard, record) == (4, 5):
                    sample["wav"] = b"RIFF but not audio"  # dropped: unreadable audio
                samples.append(sample)
            write_shard(directory / name / f"{name}-{shard:06d}.tar", samples)
        data[name] = {"data": [str(directory / name / f"{name}-{{000000..{shards - 1:06d}}}.tar")],
                      "prompt": f"Describe the {name} sound.", "key": "label", "prob": 2.0 if name == "alpha" else None}
    return data


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("order_shards")
    write_order_shards(directory)
    return directory


def make_stream(directory: Path, datasets, seed: int, workers: int, counter: BadDataCounter | None = None
                ) -> PublishedStream:
    train_data = {name: {"data": [str(directory / name / f"{name}-{{000000..{count - 1:06d}}}.tar")],
                         "prompt": f"Describe the {name} sound.", "key": "label",
                         "prob": 2.0 if name == "alpha" else None}
                  for name, count in (("alpha", 6), ("beta", 3))}
    specs = [DatasetSpec(name=name, data=train_data[name]["data"], prompt=train_data[name]["prompt"],
                         key=train_data[name]["key"], prob=train_data[name]["prob"]) for name in datasets]
    shards = {name: sorted((directory / name).glob("*.tar")) for name in datasets}
    tokenizing = Tokenizing(WordTokenizer(), {s.name: s.prompt for s in specs}, "official")
    return PublishedStream(specs, shards, 4, seed, tokenizing.count, counter or BadDataCounter(), workers=workers,
                           max_bad_fraction=0.5)  # 6 of alpha's 58 examples are unusable on purpose


def items(batch) -> list:
    return [[e.ref.key, e.text, e.crop_start] for e in batch]


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("case", sorted(ORDER_CASES))
def test_the_published_trainers_batches(case, published, shards_dir):
    datasets, seed, workers, steps = ORDER_CASES[case]
    stream = make_stream(shards_dir, datasets, seed, workers)
    ours = [items(stream.next_batch()) for _ in range(steps)]
    expected = published[case]
    assert len(expected) == steps
    assert ours == expected
    # what the fixture exercises: crops drawn, captions of one clip, drops
    flat = [item for batch in expected for item in batch]
    assert any(item[2] is not None for item in flat)
    assert not any(key in ("a2-03", "a4-05") for key, _, _ in flat)
    assert "!!!!!!!!!!!!" not in {text for _, text, _ in flat}


def test_run_seed_moves_mixing_without_workers_only(shards_dir):
    first, other = (make_stream(shards_dir, ("alpha", "beta"), seed, 0) for seed in (1, 2))
    assert [items(first.next_batch()) for _ in range(5)] != [items(other.next_batch()) for _ in range(5)]
    first, other = (make_stream(shards_dir, ("alpha",), seed, 4) for seed in (1, 2))
    # each published loader worker seeds its own random with 42 + its id, whatever the run's seed
    assert [items(first.next_batch()) for _ in range(5)] == [items(other.next_batch()) for _ in range(5)]


def test_shard_seed_and_order_as_published():
    assert make_seed(0, 0, 42) == 42  # no workers: Random(42) for every dataset
    assert make_seed(3, 0, 42) == 3 * 31 * 31 + 42
    hub = DatasetSpec(name="x", data=["a.tar"], repo_id="org/x")
    assert published_shard_order(hub, [Path("/h/a.tar"), Path("/h/a.tar.gz")]) == ["/h/a.tar.gz", "/h/a.tar"]
    local = DatasetSpec(name="x", data=["a.tar"])
    assert published_shard_order(local, [Path("/h/a.tar"), Path("/h/a.tar.gz")]) == ["/h/a.tar", "/h/a.tar.gz"]


@pytest.mark.parametrize("case", ["mix-seed1", "alpha-workers4"])
def test_resume_reaches_the_same_batches_without_decoding(case, published, shards_dir, monkeypatch):
    datasets, seed, workers, steps = ORDER_CASES[case]
    for stop in (1, 13, 29):
        first = make_stream(shards_dir, datasets, seed, workers)
        before = [items(first.next_batch()) for _ in range(stop)]
        state = json.loads(json.dumps(first.state_dict()))
        import lalmbench.data.audio as audio

        def no_decoding(*args, **kwargs):
            raise AssertionError("resume decoded audio")

        monkeypatch.setattr(audio, "decode_channels", no_decoding)
        resumed = make_stream(shards_dir, datasets, seed, workers)
        resumed.load_state_dict(state)
        after = [items(resumed.next_batch()) for _ in range(steps - stop)]
        monkeypatch.undo()
        assert before + after == published[case]


def test_bad_data_counted_once_per_distinct_example(shards_dir):
    counter = BadDataCounter()
    stream = make_stream(shards_dir, ("alpha",), 1, 0, counter)
    for _ in range(60):  # 240 examples: every shard read several times over
        stream.next_batch()
    counts = counter.as_dict()["alpha"]
    assert counts["full_passes"] == 1
    # 42 records: 2 dropped whole, EXPECTED_TEXTS texts in the other 40, of which EXPECTED_CORRUPT corrupt
    assert counts["skipped"] == {"bad record": 1, "undecodable audio": 1, "corrupt text": EXPECTED_CORRUPT}
    assert counts["examples_seen"] == 2 + EXPECTED_TEXTS


def test_state_from_the_other_stream_is_refused(shards_dir):
    stream = make_stream(shards_dir, ("alpha",), 1, 0)
    with pytest.raises(DataError, match="other training stream"):
        stream.load_state_dict({"positions": {}})
