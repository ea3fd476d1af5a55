"""The built-in task catalog: every YAML loads, suites hold the right mixtures (hand-checked against
/work/shared/reference/tables.md), the catalog metadata is validated, and `lalmbench tasks` lists them."""

from __future__ import annotations

import copy

import pytest
import yaml

from lalmbench.config import load_eval_configs, load_train_config
from lalmbench.data.shards import hub_relative_paths
from lalmbench.errors import ConfigError
from lalmbench.tasks import catalog as catalog_module
from lalmbench.tasks.catalog import builtin_names, load_catalog, parse_catalog
from lalmbench.tasks.listing import dataset_rows, tasks_command

TASK1_PROBS = {"ESC-50": 0.5, "SpeechCommandsV1": 1, "FluentSpeechCommands": 2, "FSDKaggle2018": 2,
               "VoxCeleb1": 2, "NSynth": 3, "CremaD": 1, "ASVSpoof2015": 1, "FreeMusicArchive": 2, "FSD50k": 3,
               "Urbansound8k": 1, "GTZAN": 1, "VocalSound": 2, "LibriCount": 1, "VoxLingua33": 3,
               # not in the published task1 config; our choice
               "LibriSpeechGender": 1, "NSynthPitch": 2}
TASK2_PROBS = {"AISHELL-1": 2, "Songdescriber": 1, "Clotho": 1, "LibriSpeech": 2, "MECAT": 3}
ALL_PROBS = {"SpeechCommandsV1": 0.05, "NSynth": 0.03, "VoxLingua33": 0.2, "AISHELL-1": 0.05, "Clotho": 0.02,
             "LibriSpeech": 0.05, "MECAT": 0.2}  # every other dataset: unset (proportional to shards)
EVAL_SETTINGS = {  # eval name: (key, metric, metric_args, batch, workers, number of test shards)
    "eval_asvspoof2015": ("binary_spoof", "Accuracy", {}, 128, 2, 194),
    "eval_cremad": ("label;labels", "Accuracy", {}, 4, 0, 2),
    "eval_esc-50": ("text;caption;captions;label;labels", "Accuracy", {}, 4, 0, 1),
    "eval_fluentspeechcommands": ("text;caption;captions;label;labels", "Accuracy", {}, 4, 2, 4),
    "eval_freemusicarchive": ("genre", "Accuracy", {}, 4, 2, 8),
    "eval_fsd50k": ("label;labels", "mAP", {"num_classes": 200}, 4, 2, 32),
    "eval_fsdkaggle2018": ("label;labels", "mAP", {"num_classes": 41}, 4, 2, 3),
    "eval_gtzan": ("genre", "Accuracy", {}, 8, 2, 1),
    "eval_libricount": ("num_speakers", "Accuracy", {}, 128, 0, 1),
    "eval_nsynth": ("instrument_family_str", "Accuracy", {}, 8, 0, 6),
    "eval_speechcommandsv1": ("text;caption;captions;label;labels", "Accuracy", {}, 128, 2, 7),
    "eval_urbansound8k": ("soundevent", "Accuracy", {}, 128, 0, 1),
    "eval_vocalsound": ("labels", "Accuracy", {}, 32, 2, 5),
    "eval_voxceleb1": ("text;caption;captions;label;labels", "Accuracy", {}, 32, 2, 19),
    "eval_voxlingua33": ("text;caption;captions;label;labels", "Accuracy", {}, 64, 2, 6),
    "eval_aishell-1": ("text", "iCER", {}, 16, 2, 12),
    "eval_clotho": ("caption;captions", "FENSE", {}, 16, 2, 5),
    "eval_librispeech": ("trans", "iWER", {}, 32, 4, 20),
    "eval_mecat": ("long", "DATE", {}, 64, 4, 10),
    "eval_songdescriber": ("captions", "FENSE", {}, 16, 0, 2),
    # new tasks (our settings): same shards as their parent datasets
    "eval_librispeech-gender": ("gender;sex", "Accuracy", {}, 32, 4, 20),
    "eval_nsynth-pitch": ("pitch", "Accuracy", {}, 8, 0, 6),
}
TRAIN_SHARDS = {"ESC-50": 4, "SpeechCommandsV1": 52, "FluentSpeechCommands": 24, "FSDKaggle2018": 21,
                "VoxCeleb1": 40, "NSynth": 372, "CremaD": 6, "ASVSpoof2015": 18, "FreeMusicArchive": 64,
                "FSD50k": 9, "Urbansound8k": 9, "GTZAN": 9, "VocalSound": 21, "LibriCount": 4, "VoxLingua33": 210,
                "AISHELL-1": 174, "Songdescriber": 2, "Clotho": 18, "LibriSpeech": 20, "MECAT": 10,
                "LibriSpeechGender": 20, "NSynthPitch": 372}


def test_every_builtin_yaml_loads():
    train, evals = builtin_names("train"), builtin_names("eval")
    assert train == evals and len(train) == 22 + 3
    for name in train:
        config = load_train_config(name)
        assert config.config_name == name
        assert config.max_steps == (100_000 if name in ("task1", "task2", "all") else 20_000)
        assert all(spec.repo_id for spec in config.train_data.values())
    for name in evals:
        tasks = load_eval_configs(name)
        assert tasks and all(task.name.startswith("eval_") and task.weight == 1 for task in tasks)


@pytest.mark.parametrize("suite,probs", [("task1", TASK1_PROBS), ("task2", TASK2_PROBS)])
def test_track_suites_mixture_weights(suite, probs):
    config = load_train_config(suite)
    assert {name: spec.prob for name, spec in config.train_data.items()} == probs
    assert len(config.train_data) == (17 if suite == "task1" else 5)
    evals = load_eval_configs(suite)
    assert len(evals) == len(probs)


def test_all_suite_weights_and_shards():
    config = load_train_config("all")
    assert len(config.train_data) == 22
    assert {n: s.prob for n, s in config.train_data.items() if s.prob is not None} == ALL_PROBS
    assert {n: len(hub_relative_paths(s)) for n, s in config.train_data.items()} == TRAIN_SHARDS
    assert sorted(t.name for t in load_eval_configs("all")) == sorted(EVAL_SETTINGS)


def test_eval_settings_match_the_tables():
    for task in load_eval_configs("all"):
        key, metric, metric_args, batch, workers, shards = EVAL_SETTINGS[task.name]
        got = (task.data.key, task.metric, task.metric_args, task.batch_size, task.num_workers,
               len(hub_relative_paths(task.data)))
        assert got == (key, metric, metric_args, batch, workers, shards), task.name


def test_spot_values_from_the_tables():
    esc = load_train_config("esc-50").train_data["ESC-50"]
    assert (esc.data, esc.key, esc.prompt, esc.repo_id) == (
        ["ESC-50/train/esc50_fold_{1..4}_0000000.tar.gz"], "label;labels", "Classify the environmental sound.",
        "mispeech/xares_llm_data")
    mecat = load_train_config("mecat").train_data["MECAT"]
    assert mecat.repo_id == "mispeech/MECAT-Caption" and mecat.key == "long"
    assert mecat.data[0] == "0M0/train_0000-0000000.tar.gz" and mecat.data[-1] == "00A/train_0000-0000000.tar.gz"
    (mecat_eval,) = load_eval_configs("mecat")
    assert mecat_eval.data.repo_id == "mispeech/MECAT-Caption"
    assert mecat_eval.data.data[4] == "S00/test_0001-0000000.tar.gz"
    assert mecat_eval.data.prompt == "Write a general audiocaption."
    libri = load_train_config("librispeech").train_data["LibriSpeech"]
    assert libri.prompt == "Transcribe the English speech into text" and libri.key == "trans"


def test_new_tasks_use_parent_shards_and_their_own_keys():
    gender = load_train_config("librispeech-gender").train_data["LibriSpeechGender"]
    libri = load_train_config("librispeech").train_data["LibriSpeech"]
    assert gender.data == libri.data and gender.key == "gender;sex" and gender.prompt
    pitch = load_train_config("nsynth-pitch").train_data["NSynthPitch"]
    nsynth = load_train_config("nsynth").train_data["NSynth"]
    assert pitch.data == nsynth.data and pitch.key == "pitch"
    info = load_catalog().datasets
    assert info["librispeech-gender"].new and "gender;sex" in info["librispeech-gender"].notes
    assert info["nsynth-pitch"].new and not info["nsynth"].new


def test_single_configs_agree_with_the_suites():
    suite_train = load_train_config("all").train_data
    suite_eval = {t.name: t for t in load_eval_configs("all")}
    for info in load_catalog().datasets.values():
        (single,) = load_train_config(info.train_config).train_data.values()
        in_suite = suite_train[info.train_name]
        assert (single.data, single.key, single.prompt, single.repo_id) == (
            in_suite.data, in_suite.key, in_suite.prompt, in_suite.repo_id)
        (single_eval,) = load_eval_configs(info.eval_config)
        assert single_eval.to_dict() == suite_eval[info.eval_name].to_dict()
        assert single_eval.data.prompt == single.prompt


def test_catalog_metadata():
    catalog = load_catalog()
    assert len(catalog.datasets) == 22 and list(catalog.suites) == ["task1", "task2", "all"]
    assert len(catalog.suite_datasets("task1")) == 17 and len(catalog.suite_datasets("task2")) == 5
    fsd = catalog.datasets["fsd50k"]
    assert (fsd.domain, fsd.task_type, fsd.metric, fsd.num_classes) == ("sound", "multi-label", "mAP", 200)
    assert catalog.datasets["gtzan"].domain == "music" and catalog.datasets["librispeech"].task_type == "asr"
    assert catalog.resolve("ESC-50").train_config == "esc-50"
    assert catalog.resolve("task2").eval_config == "task2"
    with pytest.raises(ConfigError, match="unknown suite or task 'nope'.*Suites: task1, task2, all"):
        catalog.resolve("nope")


def test_catalog_validation_reports_every_problem():
    raw = yaml.safe_load(catalog_module.CATALOG_PATH.read_text())
    broken = copy.deepcopy(raw)
    broken["datasets"]["esc-50"]["domain"] = "noise"
    broken["datasets"]["gtzan"]["num_classes"] = "ten"
    del broken["datasets"]["clotho"]["metric"]
    with pytest.raises(ConfigError) as info:
        parse_catalog(broken)
    message = str(info.value)
    assert "datasets.esc-50.domain" in message and "datasets.gtzan.num_classes" in message
    assert "datasets.clotho: missing field(s) ['metric']" in message
    mismatch = copy.deepcopy(raw)
    mismatch["datasets"]["fsd50k"]["num_classes"] = 100
    mismatch["datasets"]["esc-50"]["metric"] = "mAP"
    mismatch["datasets"]["gtzan"]["suites"] = ["task2", "all"]
    with pytest.raises(ConfigError) as info:
        parse_catalog(mismatch)
    message = str(info.value)
    assert "fsd50k: num_classes 100 but mAP metric_args.num_classes is 200" in message
    assert "esc-50: catalog metric 'mAP' but eval config says 'Accuracy'" in message
    assert "suite task1" in message and "suite task2" in message


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
    assert len(rows) == 17
    assert (rows["esc-50"]["train_shards"], rows["esc-50"]["test_shards"], rows["esc-50"]["downloaded"]) == (4, 1, "yes")
    assert rows["gtzan"]["downloaded"] == "1/10" and rows["fsd50k"]["downloaded"] == "no"
    assert tasks_command("task1") == 0
    out = capsys.readouterr().out
    assert "librispeech-gender *" in out and "nsynth-pitch *" in out and "gender;sex" in out
    assert "esc-50" in out and "mecat" not in out
    assert tasks_command("mecat") == 0
    assert "DATE" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="Suites: task1, task2, all"):
        tasks_command("task3")
