"""The shared disk feature cache: one directory per encoder under the data home or --cache-dir, reused by
every run of that encoder, filled safely by several processes at once, and never trusting a damaged entry."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lalmbench.config import TrainConfig
from lalmbench.data.batches import pad_audio
from lalmbench.data.examples import ExampleRef
from lalmbench.encoders.contract import FrozenEncoder
from lalmbench.encoders.logmel import LogMelEncoder
from lalmbench.model.feature_cache import (ENTRY_SUFFIX, FeatureCache, cache_namespace, compute_context, decode_entry,
                                           feature_cache_root, namespace_identity)
from run_helpers import cli_env, run_inprocess, tiny_data

IDENTITY = namespace_identity({"class": "lalmbench.encoders.LogMelEncoder"}, {}, 16_000)
NAMESPACE = cache_namespace({"class": "lalmbench.encoders.LogMelEncoder"}, {}, 16_000)
BATCHES, ROWS = 8, 4


def clip_batches(seed: int = 0) -> list[dict]:
    """BATCHES batches of ROWS distinct noise clips (0.3 to 1.2 s), each with its shard and key."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(BATCHES):
        clips = [(0.1 * rng.standard_normal(int(rng.integers(4_800, 19_200)))).astype(np.float32) for _ in range(ROWS)]
        audio, mask = pad_audio(clips)
        out.append({"audio": audio, "audio_mask": mask,
                    "refs": [ExampleRef("noise", "noise-000000.tar", f"clip{b}_{r}", 0) for r in range(ROWS)]})
    return out


class CountingEncoder(LogMelEncoder):
    """LogMelEncoder that counts its forward calls and the rows they encode."""

    def __init__(self):
        super().__init__()
        self.calls = self.rows = 0

    def forward(self, audio, audio_attention_mask=None):
        self.calls += 1
        self.rows += audio.shape[0]
        return super().forward(audio, audio_attention_mask)


def direct_features(encoder: FrozenEncoder, batch: dict) -> list[torch.Tensor]:
    """Each row's valid frames, computed without a cache."""
    features, mask = encoder(batch["audio"], batch["audio_mask"])
    return [features[row][mask[row].bool()] for row in range(features.shape[0])]


def assert_rows_equal(features: torch.Tensor, mask: torch.Tensor, expected: list[torch.Tensor]) -> None:
    for row, rows in enumerate(expected):
        assert torch.equal(features[row][mask[row].bool()], rows), f"row {row} differs"


def entry_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob(f"*{ENTRY_SUFFIX}"))


# -- where it lives ---------------------------------------------------------------------------------------------
def test_the_cache_lives_under_the_data_home_unless_cache_dir_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("LALMBENCH_DATA_HOME", str(tmp_path / "env-home"))
    assert feature_cache_root(TrainConfig()) == tmp_path / "env-home" / "feature_cache"
    assert feature_cache_root(TrainConfig(data_home=str(tmp_path / "home"))) == tmp_path / "home" / "feature_cache"
    assert feature_cache_root(TrainConfig(data_home=str(tmp_path / "home"), cache_dir=str(tmp_path / "c"))) == \
        tmp_path / "c"
    # where the cache lives changes neither the weights nor the scores
    assert TrainConfig(cache_dir="/x").identity_dict() == TrainConfig().identity_dict()


def test_entries_are_keyed_by_the_compute_context(tmp_path):
    """The same samples encoded in train mode or under bf16 autocast are other entries than in eval mode."""
    encoder = FrozenEncoder(LogMelEncoder(), follow_train_mode=True)
    cache = FeatureCache(encoder, NAMESPACE, "disk", tmp_path)
    batch = clip_batches()[0]
    contexts = []
    for mode, autocast in ((False, False), (True, False), (False, True), (False, False)):
        encoder.train(mode)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            contexts.append(compute_context(encoder))
            cache(batch)
    assert contexts[:3] == ["eval|cpu|autocast=off", "train|cpu|autocast=off", "eval|cpu|autocast=torch.bfloat16"]
    assert (cache.misses, cache.hits) == (3 * ROWS, ROWS)  # only the repeated eval-mode fp32 pass hits
    assert len(entry_files(cache.directory)) == 3 * ROWS


# -- damaged entries ----------------------------------------------------------------------------------------------
def test_a_truncated_damaged_or_misplaced_entry_is_recomputed_and_replaced(tmp_path, caplog):
    inner = CountingEncoder()
    encoder = FrozenEncoder(inner)
    batch = clip_batches()[0]
    expected = direct_features(encoder, batch)
    FeatureCache(encoder, NAMESPACE, "disk", tmp_path)(batch)
    cache = FeatureCache(encoder, NAMESPACE, "disk", tmp_path)
    files = entry_files(cache.directory)
    assert len(files) == ROWS
    whole = [f.read_bytes() for f in files]
    files[0].write_bytes(whole[0][: len(whole[0]) - 7])  # a write cut short
    damaged = bytearray(whole[1])
    damaged[-5] ^= 0xFF  # one flipped byte in the features
    files[1].write_bytes(bytes(damaged))
    files[2].write_bytes(whole[3])  # another clip's entry under this clip's name
    inner.calls = 0
    features, mask = cache(batch)
    assert_rows_equal(features, mask, expected)
    assert (cache.misses, cache.hits, cache.recomputed, inner.calls) == (3, 1, 3, 1)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "truncated" in messages and "checksum does not match" in messages and "it holds key" in messages
    for path in files:  # every entry is whole again
        decode_entry(path.read_bytes(), path.name[: -len(ENTRY_SUFFIX)])
    again = FeatureCache(encoder, NAMESPACE, "disk", tmp_path)
    again(batch)
    assert (again.hits, again.recomputed, inner.calls) == (ROWS, 0, 1)


def test_an_unwritable_cache_directory_is_a_config_error(tmp_path):
    from lalmbench.errors import ConfigError

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--cache-dir"):
        FeatureCache(FrozenEncoder(LogMelEncoder()), NAMESPACE, "disk", blocker)


# -- two processes at once --------------------------------------------------------------------------------------
WORKER = '''
import json, sys, time
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from test_feature_cache import IDENTITY, NAMESPACE, clip_batches, direct_features
from lalmbench.encoders.contract import FrozenEncoder
from lalmbench.encoders.logmel import LogMelEncoder
from lalmbench.model.feature_cache import FeatureCache

root, ready, go = sys.argv[1:4]
torch.set_num_threads(1)
encoder = FrozenEncoder(LogMelEncoder())
batches = clip_batches()
expected = [direct_features(encoder, batch) for batch in batches]
cache = FeatureCache(encoder, NAMESPACE, "disk", root, identity=IDENTITY)
Path(ready).touch()
while not Path(go).exists():  # start together, so both miss the same clips and write the same entries
    time.sleep(0.001)
wrong = 0
for repeat in range(3):  # the later passes read entries the other process may be replacing
    for batch, rows in zip(batches, expected):
        features, mask = cache(batch)
        wrong += sum(not torch.equal(features[r][mask[r].bool()], rows[r]) for r in range(len(rows)))
print(json.dumps({{**cache.stats(), "wrong_rows": wrong}}))
'''


def test_two_processes_fill_one_cache_at_once_and_a_third_reuses_every_entry(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    root, go = tmp_path / "cache", tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, str(script), str(root), str(tmp_path / f"ready{i}"), str(go)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
               for i in range(2)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert all(w.poll() is None for w in workers), [w.communicate()[1][-2000:] for w in workers]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    clips = BATCHES * ROWS
    for report in reports:
        assert report["wrong_rows"] == 0 and report["invalid_entries_recomputed"] == 0
        assert report["hits"] + report["misses"] == 3 * clips
        assert report["misses"] <= clips  # a clip is missed at most once per process: never read back torn
    directory = root / NAMESPACE
    files = entry_files(directory)
    assert len(files) == clips
    for path in files:
        decode_entry(path.read_bytes(), path.name[: -len(ENTRY_SUFFIX)])
    assert not list(directory.rglob("*.tmp"))  # every temporary file was renamed into place
    assert json.loads((directory / "identity.json").read_text())["encoder"] == {
        "class": "lalmbench.encoders.LogMelEncoder"}

    inner = CountingEncoder()
    third = FeatureCache(FrozenEncoder(inner), NAMESPACE, "disk", root)
    reference = FrozenEncoder(LogMelEncoder())
    for batch in clip_batches():
        features, mask = third(batch)
        assert_rows_equal(features, mask, direct_features(reference, batch))
    assert (third.hits, third.misses, inner.calls) == (clips, 0, 0)


# -- a second run of the same encoder -------------------------------------------------------------------------------
COUNTING_ENCODER_FILE = '''
import os
from lalmbench.encoders import logmel


class CountingFileEncoder(logmel.LogMelEncoder):
    """LogMelEncoder that appends one line per forward call (its batch size) to $ENCODER_CALLS."""

    def forward(self, audio, audio_attention_mask=None):
        with open(os.environ["ENCODER_CALLS"], "a") as handle:
            handle.write(f"{audio.shape[0]}\\n")
        return super().forward(audio, audio_attention_mask)
'''


def test_a_second_run_with_other_max_steps_encodes_nothing_again(tmp_path, monkeypatch, encoder_file):
    """Two runs of one encoder file, 6 then 8 steps: two run directories, one cache. The tiny task's clips
    (0.25 s) are shorter than the 30 s crop, so a clip's samples are the same in every epoch and run."""
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = encoder_file("counting_encoder", COUNTING_ENCODER_FILE)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("ENCODER_CALLS", str(calls))
    # corrected: no exactness probe, so every encoder call counted is one the cache made
    settings = {"feature_cache": "disk", "cache_dir": str(tmp_path / "cache"), "protocol": "corrected"}

    first = run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {**settings, "max_steps": 6}, encoder=encoder)
    first_calls = [int(n) for n in calls.read_text().split()]
    calls.write_text("")
    second = run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {**settings, "max_steps": 8}, encoder=encoder)
    assert second.run_dir != first.run_dir and not second.reused_training

    stats = [json.loads((run.run_dir / "run_summary.json").read_text())["feature_cache"]
             for run in (first, second)]
    namespaces = list((tmp_path / "cache").iterdir())
    assert len(namespaces) == 1 and stats[0]["directory"] == stats[1]["directory"] == str(namespaces[0])
    # first run: 6 steps of the protocol's global batch of 4 read 24 training examples, two epochs of the 12
    # training clips; each clip and each of the 4 test clips is encoded once, the second epoch hits
    assert (stats[0]["misses"], stats[0]["hits"]) == (12 + 4, 12)
    checks = len(first_calls) - stats[0]["encoder_calls"]
    # validate_encoder's 3-row batch at loading, then the check on real clips (the first clip of the training
    # dataset, then of the test set), before any cache
    assert first_calls[:checks] == [3, 1, 1]
    assert len(entry_files(namespaces[0])) == 16
    # second run: 8 steps, 32 training examples and the 4 test clips, every one from the cache
    assert (stats[1]["hits"], stats[1]["misses"], stats[1]["encoder_calls"]) == (32 + 4, 0, 0)
    assert [int(n) for n in calls.read_text().split()] == [3, 1, 1]  # the encoder ran for the checks only
