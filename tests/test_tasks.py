"""The built-in task catalog: every YAML loads; the published suites and single-dataset configs equal the
published XARES-LLM 0.0.12 ones field by field (tests/fixtures/published_task_configs.json, written from the
published checkout by scripts/parity/compare_yamls.py); hand-checked values guard the fixture itself; the
opt-in suite `extended`; the catalog's validation; and `lalmbench tasks`."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from lalmbench.config import load_eval_configs, load_train_config
from lalmbench.data.shards import hub_relative_paths
from lalmbench.errors import ConfigError
from lalmbench.tasks import catalog as catalog_module
from lalmbench.tasks.catalog import builtin_config_path, builtin_names, load_catalog, parse_catalog
from lalmbench.tasks.listing import dataset_rows, tasks_command, train_shares

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = json.loads((ROOT / "tests" / "fixtures" / "published_task_configs.json").read_text(encoding="utf-8"))


def _load_compare_script():
    spec = importlib.util.spec_from_file_location("compare_yamls", ROOT / "scripts" / "parity" / "compare_yamls.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load_compare_script()
PUBLISHED_CONFIGS = [(kind, name) for kind in ("train", "eval") for name in PUBLISHED[kind]]
LALMBENCH_ONLY = ("extended", "librispeech-gender", "nsynth-pitch")

# Hand-copied from the published files (and FIDELITY.md), independent of the fixture.
TASK1_PROBS = {"ESC-50": 0.5, "SpeechCommandsV1": 1, "FluentSpeechCommands": 2, "FSDKaggle2018": 2,
               "VoxCeleb1": 2, "NSynth": 3, "CremaD": 1, "ASVSpoof2015": 1, "FreeMusicArchive": 2, "FSD50k": 3,
               "Urbansound8k": 1, "GTZAN": 1, "VocalSound": 2, "LibriCount": 1, "VoxLingua33": 3}
TASK2_PROBS = {"AISHELL-1": 2, "Songdescriber": 1, "Clotho": 1, "LibriSpeech": 2, "MECAT": 3}
ALL_PROBS = {"SpeechCommandsV1": 0.05, "NSynth": 0.03, "VoxLingua33": 0.2, "AISHELL-1": 0.05, "Clotho": 0.02,
             "LibriSpeech": 0.05, "MECAT": 0.2}  # the other 13: no prob (weighted by shard count)
SINGLE_MAX_STEPS = {"cremad": 1000, "esc-50": 2000, "gtzan": 2000, "urbansound8k": 2000, "libricount": 2000,
                    "vocalsound": 2000, "songdescriber": 2000, "fluentspeechcommands": 3000, "clotho": 5000,
                    "fsd50k": 5000, "voxceleb1": 5000, "speechcommandsv1": 10000, "nsynth": 20000,
                    "voxlingua33": 30000, "aishell-1": 50000, "librispeech": 50000,
                    # max_steps unset in the published file: the default 10,000
                    "asvspoof2015": 10000, "freemusicarchive": 10000, "fsdkaggle2018": 10000, "mecat": 10000}
ALL_EVAL_BATCH = {"eval_aishell-1": 4, "eval_clotho": 8, "eval_fluentspeechcommands": 8,
                  "eval_freemusicarchive": 8, "eval_librispeech": 4, "eval_mecat": 4}
TRAIN_SHARDS = {"ESC-50": 4, "SpeechCommandsV1": 52, "FluentSpeechCommands": 24, "FSDKaggle2018": 21,
                "VoxCeleb1": 40, "NSynth": 372, "CremaD": 6, "ASVSpoof2015": 18, "FreeMusicArchive": 64,
                "FSD50k": 9, "Urbansound8k": 9, "GTZAN": 9, "VocalSound": 21, "LibriCount": 4, "VoxLingua33": 210,
                "AISHELL-1": 174, "Songdescriber": 2, "Clotho": 18, "LibriSpeech": 20, "MECAT": 10}


def _builtin_raw(kind: str, name: str) -> dict:
    return yaml.safe_load(builtin_config_path(kind, name).read_text(encoding="utf-8"))


def test_every_builtin_yaml_loads():
    train, evals = builtin_names("train"), builtin_names("eval")
    assert train == evals and len(train) == 20 + 2 + 4  # datasets, new tasks, suites
    catalog = load_catalog()
    assert sorted(catalog.names()) == train
    for name in train:
        config = load_train_config(name)
        assert config.config_name == name and config.train_data
        assert all(spec.repo_id and hub_relative_paths(spec) for spec in config.train_data.values())
    for name in evals:
        tasks = load_eval_configs(name)
        assert tasks and all(task.name.startswith("eval_") and hub_relative_paths(task.data) for task in tasks)


def test_the_fixture_covers_every_published_config_and_nothing_else():
    assert len(PUBLISHED_CONFIGS) == 46
    published_names = {name for _, name in PUBLISHED_CONFIGS}
    assert sorted(published_names | set(LALMBENCH_ONLY)) == builtin_names("train")
    assert all(source["published"].startswith(("task1/", "task2/", "all/", "single/"))
               for kind in ("train", "eval") for source in PUBLISHED[kind].values())


@pytest.mark.parametrize("kind,name", PUBLISHED_CONFIGS, ids=[f"{k}/{n}" for k, n in PUBLISHED_CONFIGS])
def test_builtin_config_equals_the_published_one(kind, name):
    expected = compare.expand_fixture(PUBLISHED, kind, name)
    problems = compare.differences(expected, _builtin_raw(kind, name))
    assert not problems, f"{kind}/{name}.yaml differs from {PUBLISHED[kind][name]['published']}:\n" + "\n".join(problems)


def test_suite_mixtures_as_published():
    for suite, probs, size in (("task1", TASK1_PROBS, 15), ("task2", TASK2_PROBS, 5)):
        config = load_train_config(suite)
        assert {name: spec.prob for name, spec in config.train_data.items()} == probs
        assert len(config.train_data) == len(load_eval_configs(suite)) == size and config.max_steps == 100_000
    config = load_train_config("all")
    assert len(config.train_data) == len(load_eval_configs("all")) == 20
    assert {n: s.prob for n, s in config.train_data.items() if s.prob is not None} == ALL_PROBS
    assert {n: len(hub_relative_paths(s)) for n, s in config.train_data.items()} == TRAIN_SHARDS
    assert "LibriSpeechGender" not in config.train_data and "NSynthPitch" not in config.train_data


def test_mixture_shares_equal_the_published_ones():
    # task1: prob / 25.5 (hand sum of the published weights); all: shard share where prob is unset
    task1 = train_shares("task1")
    assert task1["ESC-50"] == pytest.approx(0.5 / 25.5) and task1["NSynth"] == pytest.approx(3 / 25.5)
    all_shares = train_shares("all")
    shards = sum(TRAIN_SHARDS.values())  # 1087
    no_prob_shards = sum(n for name, n in TRAIN_SHARDS.items() if name not in ALL_PROBS)  # 231
    total = sum(ALL_PROBS.values()) + no_prob_shards / shards
    assert all_shares["MECAT"] == pytest.approx(0.2 / total)
    assert all_shares["FreeMusicArchive"] == pytest.approx(64 / shards / total)
    # the same rule on the published values (fixture) gives the same shares, ratio 1 for every dataset
    for suite in ("task1", "task2", "all"):
        published = compare.expand_fixture(PUBLISHED, "train", suite)["train_data"]
        counts = {name: len(hub_relative_paths(load_train_config(suite).train_data[name])) for name in published}
        weights = {name: spec["prob"] if "prob" in spec else counts[name] / sum(counts.values())
                   for name, spec in published.items()}
        expected = {name: w / sum(weights.values()) for name, w in weights.items()}
        assert train_shares(suite) == pytest.approx(expected)


def test_single_configs_hand_checked():
    for name, steps in SINGLE_MAX_STEPS.items():
        config = load_train_config(name)
        assert config.max_steps == steps, name
        assert config.num_training_workers == (2 if name == "songdescriber" else 4) == config.num_workers, name
        assert all(spec.prob is None for spec in config.train_data.values()), name
        if name in ("asvspoof2015", "freemusicarchive", "fsdkaggle2018", "mecat"):
            assert "max_steps" not in _builtin_raw("train", name)  # omitted as published; the default applies
    assert load_train_config("esc-50").train_data["ESC-50"].key == "text;caption;captions;label;labels"
    assert load_train_config("task1").train_data["ESC-50"].key == "label;labels"
    (fsd,) = load_eval_configs("fsd50k")
    assert (fsd.data.data, fsd.batch_size, fsd.metric_args) == (
        ["FSD50k/test/eval_with_text_000000.tar.gz"], 32, {"num_classes": 200})
    (nsynth,) = load_eval_configs("nsynth")
    assert (nsynth.data.data, nsynth.data.key, nsynth.batch_size) == (
        ["NSynth/test/test_0000000.tar.gz"], "text;caption;captions;label;labels", 16)
    (esc,) = load_eval_configs("esc-50")
    assert (esc.batch_size, esc.num_workers) == (128, 0)


def test_eval_settings_hand_checked_and_defaults_where_published_omits_them():
    all_eval = {task.name: task for task in load_eval_configs("all")}
    assert {name: all_eval[name].batch_size for name in ALL_EVAL_BATCH} == ALL_EVAL_BATCH
    task2 = {task.name: task for task in load_eval_configs("task2")}
    assert (task2["eval_librispeech"].batch_size, task2["eval_librispeech"].num_workers) == (32, 4)
    assert all_eval["eval_mecat"].data.repo_id == "mispeech/MECAT-Caption"
    assert all_eval["eval_mecat"].data.data[4] == "S00/test_0001-0000000.tar.gz"
    for name in builtin_names("eval"):
        raw = _builtin_raw("eval", name)
        for task in load_eval_configs(name):
            # published files never set weight; metric_args only for mAP: the loader's defaults fill them
            assert "weight" not in raw[task.name] and task.weight == 1.0
            assert ("metric_args" in raw[task.name]) == (task.metric == "mAP")
            assert task.metric_args == ({"num_classes": task.metric_args.get("num_classes")}
                                        if task.metric == "mAP" else {})


def test_extended_suite_is_task1_plus_the_new_tasks():
    task1, extended = load_train_config("task1"), load_train_config("extended")
    assert list(extended.train_data)[:15] == list(task1.train_data)
    assert all(extended.train_data[n].model_dump() == spec.model_dump() for n, spec in task1.train_data.items())
    gender, pitch = extended.train_data["LibriSpeechGender"], extended.train_data["NSynthPitch"]
    assert (gender.prob, pitch.prob, len(extended.train_data), extended.max_steps) == (1, 2, 17, 100_000)
    assert gender.data == load_train_config("librispeech").train_data["LibriSpeech"].data
    assert gender.key == "gender;sex"
    assert pitch.data == task1.train_data["NSynth"].data and pitch.key == "pitch"
    # every published task1 dataset keeps 25.5 / 28.5 of its task1 share
    shares, base = train_shares("extended"), train_shares("task1")
    assert all(shares[name] == pytest.approx(base[name] * 25.5 / 28.5) for name in base)
    task1_eval = {t.name: t.model_dump() for t in load_eval_configs("task1")}
    extended_eval = {t.name: t.model_dump() for t in load_eval_configs("extended")}
    assert {n: extended_eval[n] for n in task1_eval} == task1_eval
    assert sorted(set(extended_eval) - set(task1_eval)) == ["eval_librispeech-gender", "eval_nsynth-pitch"]
    catalog = load_catalog()
    assert not catalog.suites["extended"].published and catalog.suites["task1"].published
    assert [d.name for d in catalog.suite_datasets("extended") if d.new] == ["librispeech-gender", "nsynth-pitch"]
    for suite in ("task1", "task2", "all"):
        assert not any(d.new for d in catalog.suite_datasets(suite))


def test_new_single_configs():
    gender = load_train_config("librispeech-gender")
    pitch = load_train_config("nsynth-pitch")
    assert (gender.max_steps, pitch.max_steps, gender.num_workers, pitch.num_workers) == (5000, 20000, 4, 4)
    assert gender.train_data["LibriSpeechGender"].data == load_train_config("librispeech").train_data["LibriSpeech"].data
    assert pitch.train_data["NSynthPitch"].data == load_train_config("nsynth").train_data["NSynth"].data
    (gender_eval,) = load_eval_configs("librispeech-gender")
    (pitch_eval,) = load_eval_configs("nsynth-pitch")
    assert len(hub_relative_paths(gender_eval.data)) == 20 and gender_eval.data.key == "gender;sex"
    assert pitch_eval.data.data == ["NSynth/test/test_0000{00..05}.tar.gz"] and pitch_eval.data.key == "pitch"
    info = load_catalog().datasets
    assert info["librispeech-gender"].new and "gender;sex" in info["librispeech-gender"].notes
    assert info["nsynth-pitch"].new and not info["nsynth"].new


def test_catalog_metadata():
    catalog = load_catalog()
    assert len(catalog.datasets) == 22 and list(catalog.suites) == ["task1", "task2", "all", "extended"]
    sizes = {suite: len(catalog.suite_datasets(suite)) for suite in catalog.suites}
    assert sizes == {"task1": 15, "task2": 5, "all": 20, "extended": 17}
    fsd = catalog.datasets["fsd50k"]
    assert (fsd.domain, fsd.task_type, fsd.metric, fsd.num_classes) == ("sound", "multi-label", "mAP", 200)
    assert catalog.datasets["gtzan"].domain == "music" and catalog.datasets["librispeech"].task_type == "asr"
    assert catalog.resolve("ESC-50").train_config == "esc-50"
    assert catalog.resolve("task2").eval_config == "task2"
    with pytest.raises(ConfigError, match="unknown suite or task 'nope'.*Suites: task1, task2, all, extended"):
        catalog.resolve("nope")


def test_catalog_validation_reports_every_problem():
    raw = yaml.safe_load(catalog_module.CATALOG_PATH.read_text())
    broken = copy.deepcopy(raw)
    broken["datasets"]["esc-50"]["domain"] = "noise"
    broken["datasets"]["gtzan"]["num_classes"] = "ten"
    del broken["datasets"]["clotho"]["metric"]
    broken["datasets"]["nsynth-pitch"]["suites"] = ["task1", "extended", "all"]  # a new task in a published suite
    broken["datasets"]["cremad"]["suites"] = ["task1", "all"]  # task1 without extended
    with pytest.raises(ConfigError) as info:
        parse_catalog(broken)
    message = str(info.value)
    assert "datasets.esc-50.domain" in message and "datasets.gtzan.num_classes" in message
    assert "datasets.clotho: missing field(s) ['metric']" in message
    assert "datasets.nsynth-pitch.suites: a dataset the published configs lack (new: true) belongs only" in message
    assert "datasets.cremad.suites: suite 'extended' is task1 plus the new datasets" in message
    mismatch = copy.deepcopy(raw)
    mismatch["datasets"]["fsd50k"]["num_classes"] = 100
    mismatch["datasets"]["esc-50"]["metric"] = "mAP"
    mismatch["datasets"]["gtzan"]["suites"] = ["task2", "all"]
    with pytest.raises(ConfigError) as info:
        parse_catalog(mismatch)
    message = str(info.value)
    assert "fsd50k: num_classes 100 but mAP metric_args.num_classes is 200" in message
    assert "esc-50: catalog metric 'mAP' but eval config says 'Accuracy'" in message
    assert "suite task1" in message and "suite task2" in message and "suite extended" in message


def test_tasks_listing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LALMBENCH_DATA_HOME", str(tmp_path))
    for i in range(1, 6):
        split = "train" if i < 5 else "test"
        path = tmp_path / "ESC-50" / split / f"esc50_fold_{i}_0000000.tar.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x1f\x8b")
    (tmp_path / "GTZAN" / "train").mkdir(parents=True)
    (tmp_path / "GTZAN" / "train" / "gtzan_fold_0_0000000.tar.gz").write_bytes(b"")
    rows = {r["name"]: r for r in dataset_rows("task1")}
    assert len(rows) == 15 and "librispeech-gender" not in rows
    assert (rows["esc-50"]["train_shards"], rows["esc-50"]["test_shards"], rows["esc-50"]["downloaded"]) == (4, 1, "yes")
    assert rows["gtzan"]["downloaded"] == "1/10" and rows["fsd50k"]["downloaded"] == "no"
    assert rows["esc-50"]["train_share"] == pytest.approx(0.5 / 25.5)
    # a suite lists its own test shards; the published single fsd50k config evaluates only the first
    assert rows["fsd50k"]["test_shards"] == 32 and dataset_rows("fsd50k")[0]["test_shards"] == 1
    assert tasks_command("task1") == 0
    out = capsys.readouterr().out
    assert "Track A: classification (15 datasets)" in out and "2.0%" in out
    assert "Opt-in suite extended" in out and "librispeech-gender *" not in out and "mecat" not in out
    assert tasks_command("extended") == 0
    out = capsys.readouterr().out
    assert "librispeech-gender *" in out and "nsynth-pitch *" in out and "gender;sex" in out
    assert tasks_command("mecat") == 0
    assert "DATE" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="Suites: task1, task2, all, extended"):
        tasks_command("task3")


def _write_published_tree(root: Path) -> Path:
    """The published configs, rebuilt from the fixture, in the published layout."""
    tasks = root / "src" / "xares_llm" / "tasks"
    for kind, name in PUBLISHED_CONFIGS:
        path = tasks / PUBLISHED[kind][name]["published"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(compare.expand_fixture(PUBLISHED, kind, name)), encoding="utf-8")
    return tasks


def test_compare_script_on_a_published_tree(tmp_path, capsys):
    tasks = _write_published_tree(tmp_path / "xares")
    assert compare.main([str(tmp_path / "xares")]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("46 pairs compared, 0 differ")
    assert "lalmbench only (not published): eval/extended.yaml" in out
    cremad = tasks / "single" / "train" / "cremad_config.yaml"
    changed = yaml.safe_load(cremad.read_text())
    changed["max_steps"] = 999
    del changed["num_training_workers"]
    cremad.write_text(yaml.safe_dump(changed))
    fixture_path = tmp_path / "fixture.json"
    assert compare.main([str(tmp_path / "xares"), "--write-fixture", str(fixture_path)]) == 1
    out = capsys.readouterr().out
    assert "single/train/cremad_config.yaml vs train/cremad.yaml:" in out
    assert "/max_steps: published 999, lalmbench 1000" in out
    assert "/num_training_workers: not in the published file, lalmbench 4" in out
    assert out.strip().endswith("46 pairs compared, 1 differ")
    written = json.loads(fixture_path.read_text())
    assert written["train"]["cremad"]["max_steps"] == 999 and written["eval"] == PUBLISHED["eval"]
