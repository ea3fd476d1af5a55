"""Shards, records, targets, audio preparation and the training mixture stream."""

import numpy as np
import pytest

from conftest import wav_bytes, write_shard
from lalmbench.config import DatasetSpec
from lalmbench.data.audio import prepare_audio
from lalmbench.data.examples import BadDataCounter, iter_examples, looks_corrupted, select_texts
from lalmbench.data.mixture import TrainStream, mixture_weights
from lalmbench.data.shards import data_home, resolve_shards
from lalmbench.errors import DataError


def test_target_selection_rules():
    assert select_texts({"labels": "b", "label": "a"}, "label;labels") == ["a"]          # first present wins
    assert select_texts({"labels": "b"}, "label;labels") == ["b"]
    assert select_texts({"caption": "x"}, "missing") == ["x"]                             # default fallbacks
    assert select_texts({"num_speakers": 3}, "num_speakers") == ["3"]                     # number -> string
    assert select_texts({"captions": ["c1", "c2"]}, "captions") == ["c1", "c2"]           # list: one per text
    assert select_texts({"other": 1}, "label") is None


def test_official_targets_follow_the_published_json_rules():
    official = lambda meta, key="label": select_texts(meta, key, "official")
    assert official({"label": ""}) == [""]                                # an empty string is a target
    assert official({"label": "", "text": "fallback"}) == [""]            # ... and stops the key search
    assert official({"label": True}) == ["True"]                          # a bool is a number: str(True)
    assert official({"label": False}) == ["False"]
    assert official({"label": 3}) == ["3"] and official({"label": 2.5}) == ["2.5"]
    assert official({"label": ["a", "", 3]}) == ["a", "", 3]              # a list as it is, items keep their place
    assert official({"label": [], "text": "t"}) == ["t"]                  # an empty list falls through
    assert official({"label": None, "caption": "c"}) == ["c"]             # so does null
    assert official({"label": {"x": 1}, "text": "t"}) == ["t"]            # and an object
    assert official({"label": "  "}) == ["  "]                            # blank: taken (the corrupt filter drops it)
    assert official({"other": 1}) is None


def test_corrected_targets_skip_empty_and_bool_values():
    corrected = lambda meta, key="label": select_texts(meta, key, "corrected")
    assert corrected({"label": ""}) is None
    assert corrected({"label": "", "text": "fallback"}) == ["fallback"]
    assert corrected({"label": True, "text": "t"}) == ["t"]
    assert corrected({"label": ["a", "", 3, True]}) == ["a", "3"]
    assert corrected({"label": 3}) == ["3"]


def _edge_target_shard(tmp_path):
    return write_shard(tmp_path / "edge.tar", [
        {"__key__": "empty", "wav": wav_bytes(0.1), "json": {"label": ""}},
        {"__key__": "bool", "wav": wav_bytes(0.1), "json": {"label": True}},
        {"__key__": "list", "wav": wav_bytes(0.1), "json": {"label": ["one", 7, ""]}},
        {"__key__": "blank", "wav": wav_bytes(0.1), "json": {"label": "  ", "text": "fb"}},
        {"__key__": "number", "wav": wav_bytes(0.1), "json": {"label": 4.5}},
        {"__key__": "nokey", "wav": wav_bytes(0.1), "json": {"other": 1}},
    ])


def test_edge_targets_become_examples_as_published_under_official(tmp_path):
    shard = _edge_target_shard(tmp_path)
    counter = BadDataCounter()
    found = [(i, t, e.ref.key, e.text) for i, t, e in iter_examples("d", shard, "label", counter, protocol="official")]
    assert found == [(0, 0, "empty", ""), (1, 0, "bool", "True"), (2, 0, "list", "one"), (2, 2, "list", ""),
                     (4, 0, "number", "4.5")]
    report = counter.as_dict()["d"]
    assert report["examples_seen"] == 8  # 1 + 1 + 3 + 1 + 1 + 1
    assert report["skipped"] == {"target not text": 1, "corrupt text": 1, "missing key": 1}
    assert "list item 7 (int) is not a string" in report["samples"]["target not text"]


def test_edge_targets_under_corrected(tmp_path):
    shard = _edge_target_shard(tmp_path)
    counter = BadDataCounter()
    found = [(e.ref.key, e.text) for _, _, e in iter_examples("d", shard, "label", counter, protocol="corrected")]
    assert found == [("list", "one"), ("list", "7"), ("blank", "fb"), ("number", "4.5")]
    assert counter.as_dict()["d"]["skipped"] == {"missing key": 3}


def test_resume_reads_official_list_items_by_their_position(tmp_path):
    from lalmbench.data.examples import ExampleRef
    from lalmbench.data.mixture import rematerialize

    shard = _edge_target_shard(tmp_path)
    specs = {"d": DatasetSpec(data=[shard], key="label", name="d")}
    refs = [ExampleRef("d", shard, "list", 2), ExampleRef("d", shard, "bool", 0)]
    shards = {"d": [shard]}
    assert [e.text for e in rematerialize(refs, specs, "official", shards=shards)] == ["", "True"]
    assert [e.text for e in rematerialize([ExampleRef("d", shard, "list", 1)], specs, "corrected",
                                          shards=shards)] == ["7"]


def test_corrupted_text_heuristic():
    assert not looks_corrupted("a dog barks twice")
    assert looks_corrupted("[__] [__] !!")                 # mostly symbols
    assert looks_corrupted("A\u0333\u0366A\u0333\u0366")   # stacked combining marks
    assert looks_corrupted("ababababababab")               # long, fewer than 4 distinct characters


@pytest.mark.parametrize("protocol", ["official", "corrected"])
def test_audio_is_mixed_scaled_cropped_and_resampled(protocol):
    stereo_44k = wav_bytes(seconds=3.0, rate=44_100, channels=2)
    audio = prepare_audio(stereo_44k, crop_start_fraction=0.5, crop_seconds=2.0, target_rate=16_000, protocol=protocol)
    assert audio.ndim == 1 and abs(len(audio) - 32_000) <= 1
    if protocol == "official":
        assert len(audio) == 32_000  # 88200 source samples * 160 / 441
    assert np.abs(audio).max() <= 1.0


def test_records_missing_keys_and_bad_audio_are_counted(tmp_path):
    shard = write_shard(tmp_path / "s.tar.gz", [
        {"__key__": "ok", "wav": wav_bytes(), "json": {"label": "dog"}},
        {"__key__": "nokey", "wav": wav_bytes(), "json": {"something": "else"}},
        {"__key__": "badaudio", "wav": b"RIFF....not audio", "json": {"label": "cat"}},
        {"__key__": "caps", "flac": wav_bytes(fmt="FLAC"), "json": {"label": ["one", "two"]}},
    ])
    counter = BadDataCounter()
    examples = [e for _, _, e in iter_examples("d", shard, "label", counter)]
    assert [(e.ref.key, e.text) for e in examples] == [("ok", "dog"), ("caps", "one"), ("caps", "two")]
    report = counter.as_dict()["d"]
    assert report["examples_seen"] == 5 and report["skipped"] == {"missing key": 1, "undecodable audio": 1}
    assert "its JSON keys are ['something']" in report["samples"]["missing key"]
    with pytest.raises(DataError, match="dataset d: 2 of 5 examples"):
        counter.check("d", 0.01)


def test_unmatched_pattern_names_pattern_and_directory(tmp_path):
    spec = DatasetSpec(data=[str(tmp_path / "nothing-*.tar")], name="x")
    with pytest.raises(DataError, match="matches nothing") as info:
        resolve_shards(spec)
    assert str(tmp_path) in str(info.value)


def test_hub_layout_and_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("LALMBENCH_DATA_HOME", str(tmp_path / "a"))
    monkeypatch.setenv("XARES_DATA_HOME", str(tmp_path / "b"))
    assert data_home() == tmp_path / "a"
    monkeypatch.delenv("LALMBENCH_DATA_HOME")
    assert data_home() == tmp_path / "b"
    spec = DatasetSpec(data=["ESC-50/train/esc50_fold_{1..2}_0000000.tar.gz"], repo_id="mispeech/xares_llm_data", name="ESC-50")
    assert resolve_shards(spec, must_exist=False) == [tmp_path / "b/ESC-50/train/esc50_fold_1_0000000.tar.gz",
                                                      tmp_path / "b/ESC-50/train/esc50_fold_2_0000000.tar.gz"]
    with pytest.raises(DataError, match="lalmbench download ESC-50"):
        resolve_shards(spec)


def test_mixture_weights_prob_or_shard_share():
    specs = [DatasetSpec(data=["a"], prob=3, name="a"), DatasetSpec(data=["b"], name="b"), DatasetSpec(data=["c"], prob=1, name="c")]
    # b has no prob: its weight is its shard share 2/8 = 0.25 -> weights (3, 0.25, 1) / 4.25.
    assert np.allclose(mixture_weights(specs, [4, 2, 2]), np.array([3, 0.25, 1]) / 4.25)


def _stream_fixture(tmp_path, seed=0):
    shards = {}
    specs = []
    for name, length in (("short", 0.3), ("long", 1.0)):
        paths = [write_shard(tmp_path / f"{name}{i}.tar", [
            {"__key__": f"{name}{i}_{j}", "wav": wav_bytes(length + 0.01 * j), "json": {"label": f"{name}{j}"}}
            for j in range(5)]) for i in range(2)]
        shards[name] = paths
        specs.append(DatasetSpec(data=paths, key="label", name=name))
    return specs, shards


def test_stream_sorts_longest_first_and_restores_exactly(tmp_path):
    specs, shards = _stream_fixture(tmp_path)
    make = lambda: TrainStream(specs, shards, 2, 7, lambda d, t: len(t), BadDataCounter(), shuffle_buffer=6, sort_buffer=4)
    stream = make()
    first = stream.next_batch() + stream.next_batch()
    keys = [stream.sort_key(e) for e in first]
    assert keys == sorted(keys, reverse=True)  # one sort buffer of 4 = two batches, longest first
    state = stream.state_dict()
    expected = [[e.ref for e in stream.next_batch()] for _ in range(12)]
    resumed = make()
    resumed.load_state_dict(state)
    assert [[e.ref for e in resumed.next_batch()] for _ in range(12)] == expected


def test_stream_is_seeded(tmp_path):
    specs, shards = _stream_fixture(tmp_path)
    def refs(seed):
        stream = TrainStream(specs, shards, 2, seed, lambda d, t: 1, BadDataCounter(), shuffle_buffer=4, sort_buffer=2)
        return [e.ref for _ in range(6) for e in stream.next_batch()]
    assert refs(1) == refs(1)
    assert refs(1) != refs(2)


@pytest.mark.parametrize("extension, fmt, subtype", [
    ("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
    ("opus", "OGG", "OPUS"), ("mp3", "MP3", "MPEG_LAYER_III"),
])
def test_every_audio_container_decodes_without_ffmpeg(tmp_path, extension, fmt, subtype):
    import io

    import soundfile as sf

    t = np.arange(24_000) / 48_000
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48_000, format=fmt, subtype=subtype)
    shard = write_shard(tmp_path / "s.tar", [{"__key__": "k", extension: buffer.getvalue(), "json": {"label": "x"}}])
    (example,) = [e for _, _, e in iter_examples("d", shard, "label", BadDataCounter())]
    assert example.seconds == pytest.approx(0.5, abs=0.01)
    audio = prepare_audio(example.audio, None, 30.0)
    assert abs(len(audio) - 8_000) <= 2  # 0.5 s at 16 kHz
