"""scripts/rehearsal/: the recipe table covers every shard of the built-in suites, the writer writes shards
in each dataset's real format with the planted faults it reports, and (slow, marker `rehearsal`) the
whole dress rehearsal of task1 and task2 on the loopback mirror."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

REHEARSAL = Path(__file__).resolve().parents[1] / "scripts" / "rehearsal"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REHEARSAL / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mirror():
    return _load("mirror")


def _shard_records(path: Path) -> dict[str, dict[str, bytes]]:
    records: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            stem, _, ext = member.name.partition(".")
            records.setdefault(stem, {})[ext] = archive.extractfile(member).read()
    return records


def test_recipe_covers_every_shard_of_the_builtin_suites(mirror):
    from lalmbench.config import load_eval_configs, load_train_config
    from lalmbench.data.shards import hub_relative_paths

    recipes, shards = mirror.read_recipes(), mirror.config_shards()
    assert mirror.coverage_problems(recipes, shards) == []
    assert len(recipes) == 20
    named = set()
    for suite in ("task1", "task2", "all"):
        for spec in load_train_config(suite).train_data.values():
            named |= {(spec.repo_id, p) for p in hub_relative_paths(spec)}
        for task in load_eval_configs(suite):
            named |= {(task.data.repo_id, p) for p in hub_relative_paths(task.data)}
    written = {(entry.repo_id, p) for entry in shards.values() for p in entry.train + entry.test}
    assert written == named
    assert len(named) == 863 + 224 + 339  # task1 train, task2 train, the 20 test sets
    assert ("mispeech/MECAT-Caption", "SM0/test_0001-0000000.tar.gz") in named


def test_coverage_problems_name_what_is_wrong(mirror):
    recipes, shards = mirror.read_recipes(), mirror.config_shards()
    broken = dict(recipes)
    del broken["GTZAN"]
    broken["LibriCount"] = mirror.Recipe(**{**recipes["LibriCount"].__dict__, "train_field": "speakers"})
    problems = mirror.coverage_problems(broken, shards)
    assert problems == ["GTZAN: in the configs, not in the recipe table",
                        "LibriCount: train_field 'speakers' is not one of the config key 'num_speakers'"]


def _first_shards(mirror, dataset: str, train: int = 6, test: int = 2):
    """The dataset's shards as the configs name them, cut to the first few (the writer is slow on 2 cores)."""
    entry = mirror.config_shards()[dataset]
    return mirror.ConfigShards(**{**entry.__dict__, "train": entry.train[:train], "test": entry.test[:test]})


@pytest.mark.parametrize("dataset, rate, channels, ext, field, check", [
    # LibriCount: 5-s 16 kHz mono, the number of speakers a JSON integer
    ("LibriCount", 16000, 1, "wav", "num_speakers", lambda v: isinstance(v, int) and 0 <= v <= 10),
    # AISHELL-1: 16 kHz mono, transcripts in Chinese characters without spaces
    ("AISHELL-1", 16000, 1, "wav", "text", lambda v: isinstance(v, str) and " " not in v
     and all("\u4e00" <= ch <= "\u9fff" for ch in v)),
    # FreeMusicArchive: 30-s MP3 at 44.1 kHz stereo
    ("FreeMusicArchive", 44100, 2, "mp3", "genre", lambda v: isinstance(v, str)),
])
def test_writer_writes_decodable_shards_in_the_real_format(mirror, tmp_path, dataset, rate, channels, ext, field,
                                                           check):
    import soundfile as sf

    recipe = mirror.read_recipes()[dataset]
    shards = _first_shards(mirror, dataset)
    entry = mirror.write_dataset(tmp_path, recipe, shards, "main", seed=0)
    base = tmp_path / shards.repo_id / "main"
    assert all((base / rel).is_file() for rel in shards.train + shards.test)
    test = _shard_records(base / shards.test[0])
    assert len(test) == recipe.test_per_shard
    for members in test.values():
        assert set(members) == {ext, "json"}
        info = sf.info(io.BytesIO(members[ext]))
        assert (info.samplerate, info.channels) == (rate, channels)
        data, _ = sf.read(io.BytesIO(members[ext]))
        assert len(data) > 0
        assert check(json.loads(members["json"])[field])
    # Every planted fault is in the training shards, each where the manifest says, and nothing else is odd.
    assert entry["planted"] == {"undecodable": 1, "broken_json": 1, "empty_label": 1, "stray_member": 1,
                                "wide_clip": 1}
    odd = {"undecodable": 0, "broken_json": 0, "empty_label": 0, "stray": 0, "wide": 0}
    records = 0
    for rel in shards.train:
        for key, members in _shard_records(base / rel).items():
            if key == "README":
                assert set(members) == {"txt"}
                odd["stray"] += 1
                continue
            records += 1
            try:
                meta = json.loads(members["json"])
            except json.JSONDecodeError:
                odd["broken_json"] += 1
                continue
            try:
                info = sf.info(io.BytesIO(members[ext]))
            except Exception:
                odd["undecodable"] += 1
                continue
            if meta[field] in ("", [], None):
                odd["empty_label"] += 1
            if (info.samplerate, info.channels) == (48000, 2):
                odd["wide"] += 1
            else:
                assert (info.samplerate, info.channels) == (rate, channels)
    assert odd == {"undecodable": 1, "broken_json": 1, "empty_label": 1, "stray": 1, "wide": 1}
    assert records == entry["train_records"] == len(shards.train) * recipe.train_per_shard + 4
    # Each fault is at the start of the shard the manifest names (a shard the sampler opens has had it read).
    assert sorted(f["fault"] for f in entry["faults"]) == sorted(mirror.FAULTS)
    for fault in entry["faults"]:
        with tarfile.open(base / fault["shard"], "r:gz") as archive:
            first_keys = [m.name.partition(".")[0] for m in archive.getmembers()[:9]]
        assert fault["key"] in first_keys


def test_long_clips_past_the_crop_and_the_missing_test_label(mirror, tmp_path):
    import soundfile as sf

    recipes = mirror.read_recipes()
    shards = _first_shards(mirror, "LibriSpeech", train=4, test=3)
    libri = mirror.write_dataset(tmp_path, recipes["LibriSpeech"], shards, "main", seed=0)
    assert libri["long_clips"] == 3 and libri["seconds_max"] == 35.0  # 32 and 35 s in training, 32 s in the test set
    last_test = _shard_records(tmp_path / shards.repo_id / "main" / shards.test[-1])
    assert max(sf.info(io.BytesIO(m["flac"])).duration for m in last_test.values()) == pytest.approx(32.0)
    asv = mirror.write_dataset(tmp_path, recipes["ASVSpoof2015"], _first_shards(mirror, "ASVSpoof2015"), "main", seed=0)
    assert asv["expected_bad_test"] == {"missing key": 1}
    # The number label: null when "empty", so it counts as a missing key (a string "" would be a target).
    assert asv["expected_bad"] == {"undecodable audio": 1, "bad record": 1, "missing key": 1}
    shards = mirror.config_shards()["ASVSpoof2015"]
    first = _shard_records(tmp_path / shards.repo_id / "main" / shards.test[0])
    missing = [json.loads(m["json"]) for m in first.values() if "binary_spoof" not in json.loads(m["json"])]
    assert len(missing) == 1
    assert sf.info(io.BytesIO(first["asvspoof2015_test_missing_label"]["flac"])).samplerate == 16000


def test_truncated_variant_cuts_one_shard(mirror, tmp_path, monkeypatch):
    from lalmbench.data.examples import iter_records
    from lalmbench.errors import DataError

    assert mirror.TRUNCATED_SHARD in mirror.config_shards()[mirror.TRUNCATED_DATASET].train
    # The rehearsal cuts a Song Describer shard; a LibriCount one is quicker to write here.
    monkeypatch.setattr(mirror, "TRUNCATED_SHARD", "LibriCount/train/libricount_fold01.tar.gz")
    manifest = mirror.write_mirror(tmp_path, "truncated", seed=0, datasets=["LibriCount"])
    entry = manifest["datasets"]["LibriCount"]
    assert entry["truncated"] == mirror.TRUNCATED_SHARD and entry["planted"] == {}
    base = tmp_path / entry["repo_id"] / "main"
    with pytest.raises(DataError, match="libricount_fold01.tar.gz is damaged"):
        list(iter_records(base / mirror.TRUNCATED_SHARD))
    whole = list(iter_records(base / "LibriCount/train/libricount_fold00.tar.gz"))  # the others are whole
    assert len(whole) == mirror.read_recipes()["LibriCount"].train_per_shard


def test_rows_expect_only_faults_in_shards_the_run_read(mirror):
    rehearse = _load("rehearse")
    recipes, shards = mirror.read_recipes(), mirror.config_shards()
    layout = {name: mirror.fault_layout(recipes[name], shards[name]) for name in ("ESC-50", "CremaD")}
    # CremaD's faults spread by hand over its shards 0-4 (the mirror puts them all in one): the rows must
    # expect only the faults in shards a run read, wherever they are
    for index, fault in enumerate(layout["CremaD"]):
        fault["shard"] = shards["CremaD"].train[index]
    manifest = {"datasets": {name: {"eval": shards[name].eval, "faults": layout[name], "train_examples": 60,
                                    "test_examples": 24, "planted": {f: 1 for f in mirror.FAULTS},
                                    "expected_bad_test": {}} for name in layout}}
    # ESC-50: all 4 shards read, so every fault is expected. CremaD: only the shards holding the undecodable
    # clip and the README are read: the undecodable clip is expected, the broken JSON is not (its shard
    # unread), the empty label is a target under official; counting 2 is one too many.
    esc = [f"/home/data/{rel}" for rel in shards["ESC-50"].train]
    shard_of = {f["fault"]: f["shard"] for f in layout["CremaD"]}
    cremad_read = [f"/home/data/{shard_of[fault]}" for fault in ("undecodable", "stray_member")]
    summary = {"bad_data": {
        "ESC-50": {"skipped_total": 2, "skipped": {"undecodable audio": 1, "bad record": 1},
                   "seen_by_share": {p: 15 for p in esc}, "stray_members": [[esc[0], "README.txt"]]},
        "CremaD": {"skipped_total": 2, "skipped": {"undecodable audio": 1, "bad record": 1},
                   "seen_by_share": {p: 20 for p in cremad_read}, "stray_members": [[cremad_read[1], "README.txt"]]}},
        "tasks": {"eval_esc-50": {"score": 0.25, "metric": "Accuracy"}}}
    rows = {r["dataset"]: r for r in rehearse.suite_rows("task1", manifest, summary, 60.0, {})
            if r["dataset"] in layout}
    assert (rows["ESC-50"]["expected"], rows["ESC-50"]["counted"], rows["ESC-50"]["match"]) == ("2+0", "2+0", True)
    assert rows["ESC-50"]["shards_read"] == "4/4" and rows["ESC-50"]["score"] == 0.25
    assert (rows["CremaD"]["expected"], rows["CremaD"]["counted"], rows["CremaD"]["match"]) == ("1+0", "2+0", False)
    assert rows["CremaD"]["shards_read"] == "2/6" and rows["CremaD"]["reachable"] == 2


def test_faults_sit_in_the_first_shard_the_published_sampler_opens(mirror):
    """Every fault goes into the first shard a one-process official run opens, so even a short run reads
    every planted fault. That shard is checked against webdataset's own classes, set up as the published
    trainer sets them up (shards resampled with seed 42, deterministic; detshuffle 1000/100, seed 42), over
    the shard list in the published order."""
    import webdataset as wds

    from lalmbench.data.official_stream import published_shard_order

    recipes, shards = mirror.read_recipes(), mirror.config_shards()
    firsts = {}
    for name in ("CremaD", "ESC-50", "SpeechCommandsV1", "AISHELL-1"):
        entry = shards[name]
        order = published_shard_order(entry, [Path(p) for p in entry.train])
        pipeline = wds.DataPipeline(wds.ResampledShards(order, seed=42, deterministic=True),
                                    wds.detshuffle(bufsize=1000, initial=100, seed=42))
        first = next(iter(pipeline))["url"]
        placed = {f["shard"] for f in mirror.fault_layout(recipes[name], entry)}
        assert placed == {first}, name
        firsts[name] = entry.train.index(first)
    # the first shard opened depends only on the shard count: not the first in order in any of these four
    assert firsts == {"CremaD": 2, "ESC-50": 1, "SpeechCommandsV1": 24, "AISHELL-1": 162}


@pytest.mark.slow
@pytest.mark.rehearsal
def test_dress_rehearsal(tmp_path):
    """The whole rehearsal (16 to 25 min on 2 cores, measured): `make rehearsal` runs the same."""
    rehearse = _load("rehearse")
    report = tmp_path / "report.json"
    status = rehearse.main(["--work", str(tmp_path / "work"), "--report", str(report)])
    result = json.loads(report.read_text())
    assert len(result["rows"]) == 20 and all(row["score"] is not None for row in result["rows"])
    assert status == 0, result["findings"]
