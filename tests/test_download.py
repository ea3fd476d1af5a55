"""Downloads against a real HTTP server on 127.0.0.1 that mimics the hub (tests/hub_server.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hub_server import HubServer, make_shard

from lalmbench.config import DatasetSpec
from lalmbench.data import download
from lalmbench.data.download import download_command, ensure_downloaded, find_missing
from lalmbench.errors import ConfigError, DataError

REPO = "test-org/tiny_data"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(download, "RETRY_BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(download, "TIMEOUT_SECONDS", 10.0)
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "LALMBENCH_DATA_HOME", "XARES_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer(tmp_path / "server") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def _publish(hub: HubServer, paths: list[str], examples: int = 4, key: str = "label") -> dict[str, bytes]:
    out = {}
    for index, path in enumerate(paths):
        data = make_shard([{key: f"class{i % 2}"} for i in range(examples)], seed=index)
        hub.add_file(REPO, path, data)
        out[path] = data
    return out


def _specs() -> list[DatasetSpec]:
    return [DatasetSpec(data=["Tiny/train/train_{0..1}.tar.gz"], key="label", prompt="Classify.",
                        repo_id=REPO, name="Tiny"),
            DatasetSpec(data=["Tiny/test/test_0.tar.gz"], key="label", prompt="Classify.", repo_id=REPO,
                        name="eval_tiny"),
            DatasetSpec(data=["/nonexistent/local_{0..3}.tar"], name="Local")]  # local: ignored


PATHS = ["Tiny/train/train_0.tar.gz", "Tiny/train/train_1.tar.gz", "Tiny/test/test_0.tar.gz"]


def _assert_fetched(home: Path, published: dict[str, bytes]) -> None:
    for path, data in published.items():
        assert (home / path).read_bytes() == data
        assert not Path(f"{home / path}.incomplete").exists()
    assert not list(home.rglob("*.incomplete"))


def test_full_download_then_nothing_to_do(hub, tmp_path):
    published = _publish(hub, PATHS)
    home = tmp_path / "home"
    ensure_downloaded(_specs(), home=home, workers=3)
    _assert_fetched(home, published)
    record = json.loads((home / ".lalmbench-meta" / f"{PATHS[0]}.json").read_text())
    assert record["sha256"] == hashlib.sha256(published[PATHS[0]]).hexdigest()
    assert record["size"] == len(published[PATHS[0]])
    assert len(hub.requests) == 3
    ensure_downloaded(_specs(), home=home)  # complete files are checked locally, not fetched again
    assert len(hub.requests) == 3
    assert find_missing(_specs(), home) == []


def test_interrupted_transfer_is_resumed_with_range(hub, tmp_path):
    published = _publish(hub, PATHS, examples=20)
    half = len(published[PATHS[1]]) // 2
    hub.drop_after[PATHS[1]] = half
    home = tmp_path / "home"
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, published)
    ranges = [r["range"] for r in hub.downloads_of(PATHS[1])]
    assert ranges == [None, f"bytes={half}-"]


def test_partial_file_from_an_earlier_run_is_resumed(hub, tmp_path):
    published = _publish(hub, PATHS[:1], examples=10)
    home = tmp_path / "home"
    part = Path(f"{home / PATHS[0]}.incomplete")
    part.parent.mkdir(parents=True)
    part.write_bytes(published[PATHS[0]][:1000])
    assert find_missing(_specs()[:1], home)[0][1] in ("missing", "partially downloaded")
    download.download_files([download.RemoteFile(REPO, PATHS[0])], home, progress=False)
    assert (home / PATHS[0]).read_bytes() == published[PATHS[0]]
    assert [r["range"] for r in hub.requests] == ["bytes=1000-"]


def test_server_ignoring_range_restarts_from_zero(hub, tmp_path):
    published = _publish(hub, PATHS[:1], examples=10)
    hub.honour_range = False
    home = tmp_path / "home"
    part = Path(f"{home / PATHS[0]}.incomplete")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 500)  # garbage that must not end up in the file
    download.download_files([download.RemoteFile(REPO, PATHS[0])], home, progress=False)
    assert (home / PATHS[0]).read_bytes() == published[PATHS[0]]


def test_corrupted_file_is_detected_and_fetched_again(hub, tmp_path):
    published = _publish(hub, PATHS)
    hub.corrupt[PATHS[2]] = True
    home = tmp_path / "home"
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, published)
    assert [r["range"] for r in hub.downloads_of(PATHS[2])] == [None, None]  # deleted, not resumed


def test_corruption_without_hash_is_caught_by_the_gzip_check(hub, tmp_path):
    published = _publish(hub, PATHS[:1])
    hub.send_linked = hub.send_etag = False
    hub.corrupt[PATHS[0]] = True
    home = tmp_path / "home"
    download.download_files([download.RemoteFile(REPO, PATHS[0])], home, progress=False)
    assert (home / PATHS[0]).read_bytes() == published[PATHS[0]]
    assert len(hub.downloads_of(PATHS[0])) == 2
    assert json.loads((home / ".lalmbench-meta" / f"{PATHS[0]}.json").read_text())["sha256"] is None


def test_always_corrupt_gives_up_and_keeps_nothing(hub, tmp_path, monkeypatch):
    _publish(hub, PATHS[:1])
    home = tmp_path / "home"

    class AlwaysCorrupt(dict):
        def pop(self, key, default=None):
            return True

    hub.corrupt = AlwaysCorrupt()
    with pytest.raises(DataError, match="failed verification.*sha256"):
        download.download_files([download.RemoteFile(REPO, PATHS[0])], home, progress=False)
    assert not (home / PATHS[0]).exists()
    assert not Path(f"{home / PATHS[0]}.incomplete").exists()
    assert len(hub.requests) == download.MAX_BAD_FILES


def test_damaged_existing_file_is_fetched_again(hub, tmp_path):
    published = _publish(hub, PATHS)
    home = tmp_path / "home"
    ensure_downloaded(_specs(), home=home)
    truncated = home / PATHS[0]
    truncated.write_bytes(published[PATHS[0]][:100])  # size disagrees with the download record
    assert [(r.path, p) for r, p in find_missing(_specs(), home)] == [
        (PATHS[0], f"size 100 bytes, expected {len(published[PATHS[0]])}")]
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, published)


def test_offline_lists_missing_files_and_the_command(hub, tmp_path, monkeypatch):
    published = _publish(hub, PATHS)
    home = tmp_path / "home"
    (home / PATHS[0]).parent.mkdir(parents=True)
    (home / PATHS[0]).write_bytes(published[PATHS[0]])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        ensure_downloaded(_specs(), home=home)
    message = str(info.value)
    assert "2 shard file(s)" in message and "HF_HUB_OFFLINE" in message
    assert PATHS[1] in message and PATHS[2] in message and PATHS[0] not in message
    assert "lalmbench download" in message
    assert hub.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(DataError, match="--no-download"):
        ensure_downloaded(_specs(), home=home, allow_download=False)
    assert hub.requests == []


def test_offline_hint_uses_catalog_names(tmp_path, monkeypatch):
    from lalmbench.config import load_eval_configs, load_train_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    specs = list(load_train_config("esc-50").train_data.values()) + [t.data for t in load_eval_configs("gtzan")]
    with pytest.raises(DataError) as info:
        ensure_downloaded(specs, home=tmp_path)
    assert "lalmbench download esc-50 gtzan" in str(info.value)
    assert "ESC-50/train/esc50_fold_1_0000000.tar.gz" in str(info.value)


def test_missing_token_gives_401_advice_and_token_is_sent(hub, tmp_path, monkeypatch):
    published = _publish(hub, PATHS)
    hub.require_token = "secret"
    home = tmp_path / "home"
    with pytest.raises(DataError) as info:
        ensure_downloaded(_specs(), home=home)
    assert "HTTP 401" in str(info.value) and "HF_TOKEN" in str(info.value) and hub.endpoint in str(info.value)
    assert not list(home.rglob("*.tar.gz"))
    monkeypatch.setenv("HF_TOKEN", "secret")
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, published)


def test_redirect_to_cdn_keeps_linked_headers_and_drops_token(tmp_path, monkeypatch):
    with HubServer(tmp_path / "server", redirect=True) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "secret")
        hub.require_token = "secret"
        hub.send_etag = False  # the sha256 can only come from X-Linked-Etag on the redirect
        published = _publish(hub, PATHS[:1])
        home = tmp_path / "home"
        download.download_files([download.RemoteFile(REPO, PATHS[0])], home, progress=False)
    assert (home / PATHS[0]).read_bytes() == published[PATHS[0]]
    record = json.loads((home / ".lalmbench-meta" / f"{PATHS[0]}.json").read_text())
    assert record["sha256"] == hashlib.sha256(published[PATHS[0]]).hexdigest()
    hub_request, cdn_request = hub.requests
    assert hub_request["authorization"] == "Bearer secret"
    assert cdn_request["path"].startswith("/cdn/") and cdn_request["authorization"] is None


def test_not_found_names_url_and_status(hub, tmp_path):
    _publish(hub, PATHS[:2])  # the test shard is missing on the server
    with pytest.raises(DataError) as info:
        ensure_downloaded(_specs(), home=tmp_path / "home")
    message = str(info.value)
    assert "HTTP 404" in message and f"{hub.endpoint}/datasets/{REPO}/resolve/main/{PATHS[2]}" in message
    assert (tmp_path / "home" / PATHS[0]).is_file()  # the others still arrived


def test_unreachable_server_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(download, "MAX_ATTEMPTS", 2)
    with pytest.raises(DataError, match="cannot reach http://127.0.0.1:9/datasets/"):
        ensure_downloaded(_specs(), home=tmp_path)


def test_download_command_with_yaml_target_and_split(hub, tmp_path, monkeypatch, capsys):
    published = _publish(hub, PATHS)
    train_yaml = tmp_path / "tiny_train.yaml"
    train_yaml.write_text(
        "train_data:\n  Tiny:\n    prompt: Classify.\n    data: ['Tiny/train/train_{0..1}.tar.gz']\n"
        f"    key: label\n    repo_id: {REPO}\n")
    monkeypatch.setenv("LALMBENCH_DATA_HOME", str(tmp_path / "home"))
    assert download_command([str(train_yaml)], workers=2, split="test") == 0
    assert "0 to fetch" in capsys.readouterr().out
    assert download_command([str(train_yaml)], workers=2, split="both") == 0
    assert "fetched 2 file(s)" in capsys.readouterr().out
    assert (tmp_path / "home" / PATHS[0]).read_bytes() == published[PATHS[0]]
    with pytest.raises(ConfigError, match="Suites: task1, task2, all"):
        download_command(["no-such-task"])


def test_specs_for_builtin_targets():
    specs = download.specs_for_targets(["esc-50"], split="both")
    files = download.remote_files(specs)
    assert [f.path for f in files] == [f"ESC-50/train/esc50_fold_{i}_0000000.tar.gz" for i in range(1, 5)] + [
        "ESC-50/test/esc50_fold_5_0000000.tar.gz"]
    assert len(download.remote_files(download.specs_for_targets(["task2"], split="test"))) == 20 + 12 + 5 + 2 + 10
    # gender shares the LibriSpeech shards: asking for both fetches them once
    both = download.remote_files(download.specs_for_targets(["librispeech", "librispeech-gender"]))
    assert len(both) == 40


def test_end_to_end_suite_on_downloaded_shards(hub, tmp_path, monkeypatch):
    runner = pytest.importorskip("lalmbench.runner")
    for i in range(2):
        hub.add_file(REPO, f"Tiny/train/train_{i}.tar.gz",
                     make_shard([{"label": ["low", "high"][j % 2], "_frequency": [200.0, 2000.0][j % 2]}
                                 for j in range(8)], seed=i))
    hub.add_file(REPO, "Tiny/test/test_0.tar.gz",
                 make_shard([{"label": ["low", "high"][j % 2], "_frequency": [200.0, 2000.0][j % 2]}
                             for j in range(4)], seed=9))
    hub.add_file(REPO, "Count/train/c_0.tar.gz", make_shard([{"n": j % 3} for j in range(6)], seed=3))
    hub.add_file(REPO, "Count/test/c_0.tar.gz", make_shard([{"n": j % 3} for j in range(3)], seed=4))
    train_yaml = tmp_path / "suite_train.yaml"
    train_yaml.write_text(
        "max_steps: 3\ntrain_data:\n"
        f"  Tiny: {{prompt: Classify the tone., data: ['Tiny/train/train_{{0..1}}.tar.gz'], key: label, "
        f"prob: 2, repo_id: {REPO}}}\n"
        f"  Count: {{prompt: Count., data: ['Count/train/c_0.tar.gz'], key: n, repo_id: {REPO}}}\n")
    eval_yaml = tmp_path / "suite_eval.yaml"
    eval_yaml.write_text(
        f"eval_tiny: {{data: {{data: ['Tiny/test/test_0.tar.gz'], key: label, prompt: Classify the tone., "
        f"repo_id: {REPO}}}, batch_size: 2, num_workers: 0, metric: Accuracy, metric_args: {{}}, weight: 1}}\n"
        f"eval_count: {{data: {{data: ['Count/test/c_0.tar.gz'], key: n, prompt: Count., repo_id: {REPO}}}, "
        "batch_size: 2, num_workers: 0, metric: Accuracy, metric_args: {}, weight: 1}\n")
    home = tmp_path / "home"
    output = tmp_path / "runs"
    rc = runner.run_command(encoder="lalmbench.encoders.LogMelEncoder", train=str(train_yaml),
                            eval=str(eval_yaml), model_args={},
                            overrides={"decoder_model_name": "tiny-random", "max_steps": 3,
                                       "data_home": str(home)},
                            output_dir=str(output), force=False, allow_download=True, write_report=False)
    assert rc == 0
    for path in ("Tiny/train/train_0.tar.gz", "Tiny/train/train_1.tar.gz", "Tiny/test/test_0.tar.gz",
                 "Count/train/c_0.tar.gz", "Count/test/c_0.tar.gz"):
        assert (home / path).is_file()
    scores = list(output.rglob("scores.tsv"))
    assert len(scores) == 1
    lines = scores[0].read_text().splitlines()
    assert lines[0].split("\t") == ["Task", "score", "weight"]
    assert {line.split("\t")[0] for line in lines[1:]} == {"eval_tiny", "eval_count", "Overall"}
