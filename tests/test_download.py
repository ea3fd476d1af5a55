"""Downloads through huggingface_hub against a real HTTP server on 127.0.0.1 that answers like the hub
(tests/hub_server.py)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest
from hub_server import HubServer, make_shard

from lalmbench.config import DatasetSpec
from lalmbench.data import download
from lalmbench.data.download import data_revisions, download_command, ensure_downloaded, find_missing
from lalmbench.errors import ConfigError, DataError

REPO = "test-org/tiny_data"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LALMBENCH_DATA_HOME", "XARES_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # in case the shell that started pytest set it
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/token")  # no token from a login


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer(tmp_path / "server") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def _publish(hub: HubServer, paths: list[str], examples: int = 4, revision: str = "main",
             seed: int = 0) -> dict[str, bytes]:
    out = {}
    for index, path in enumerate(paths):
        data = make_shard([{"label": f"class{i % 2}"} for i in range(examples)], seed=seed + index)
        hub.add_file(REPO, path, data, revision=revision)
        out[path] = data
    return out


def _specs(revision: str | None = None) -> list[DatasetSpec]:
    return [DatasetSpec(data=["Tiny/train/train_{0..1}.tar.gz"], key="label", prompt="Classify.",
                        repo_id=REPO, revision=revision, name="Tiny"),
            DatasetSpec(data=["Tiny/test/test_0.tar.gz"], key="label", prompt="Classify.", repo_id=REPO,
                        revision=revision, name="eval_tiny"),
            DatasetSpec(data=["/nonexistent/local_{0..3}.tar"], name="Local")]  # local: ignored


PATHS = ["Tiny/train/train_0.tar.gz", "Tiny/train/train_1.tar.gz", "Tiny/test/test_0.tar.gz"]


def _first() -> list[DatasetSpec]:
    """A dataset of PATHS[0] alone."""
    return [DatasetSpec(data=[PATHS[0]], key="label", prompt="Classify.", repo_id=REPO, name="Tiny")]


def _listing(request: dict) -> bool:
    """snapshot_download's own listing of the repo's files at the commit: the tree API (huggingface_hub 1.x,
    once per commit, then kept in the data home) or the repo info at the commit (0.x, each call)."""
    return "/tree/" in request["path"] or bool(re.search(r"/revision/[0-9a-f]{40}$", request["path"]))


def _ours(hub: HubServer) -> list[dict]:
    """The requests lalmbench's download makes, the library's listing of the repo left out."""
    return [r for r in hub.requests if not _listing(r)]


def _assert_fetched(home: Path, published: dict[str, bytes]) -> None:
    for path, data in published.items():
        assert (home / path).read_bytes() == data
    assert not list(home.rglob("*.incomplete"))


def test_full_download_records_the_commit_then_nothing_to_do(hub, tmp_path):
    published = _publish(hub, PATHS)
    home = tmp_path / "home"
    revisions = ensure_downloaded(_specs(), home=home, workers=3)
    _assert_fetched(home, published)
    main = hub.commit_of(REPO, "main")
    assert revisions == [{"repo_id": REPO, "revision": "main", "commits": [main], "files": 3, "unrecorded_files": 0}]
    record = download.read_record(home, PATHS[0])
    assert record.commit == main and record.etag == hashlib.sha256(published[PATHS[0]]).hexdigest()
    # one commit lookup, then a HEAD and a GET per file, each at that commit
    assert sorted(r["method"] for r in _ours(hub)) == ["GET"] * 4 + ["HEAD"] * 3
    assert [r["path"] for r in _ours(hub) if "/api/" in r["path"]] == [f"/api/datasets/{REPO}/revision/main"]
    assert any(_listing(r) for r in hub.requests)  # huggingface_hub's snapshot_download did the transfers
    assert all(f"/resolve/{main}/" in r["path"] for r in hub.requests if "/resolve/" in r["path"])
    hub.requests.clear()
    ensure_downloaded(_specs(), home=home)  # complete files are checked locally, not fetched again
    assert hub.requests == [] and find_missing(_specs(), home) == []


def test_dropped_connection_is_resumed_with_range(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # the client writes whole chunks (10 MB by default): with 16 KiB ones a 150 kB file resumes mid-way
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16384)
    published = _publish(hub, PATHS[:1], examples=20)
    half = len(published[PATHS[0]]) // 2
    hub.drop_after[PATHS[0]] = half
    ensure_downloaded(_first(), home=tmp_path / "home")
    assert (tmp_path / "home" / PATHS[0]).read_bytes() == published[PATHS[0]]
    kept = half // 16384 * 16384
    assert kept > 0 and [r["range"] for r in hub.downloads_of(PATHS[0])] == [None, f"bytes={kept}-"]


def test_server_ignoring_range_after_a_drop_gives_the_right_bytes(hub, tmp_path):
    published = _publish(hub, PATHS[:1], examples=20)
    hub.drop_after[PATHS[0]] = 1000
    hub.honour_range = False
    ensure_downloaded(_first(), home=tmp_path / "home")
    assert (tmp_path / "home" / PATHS[0]).read_bytes() == published[PATHS[0]]
    assert len(hub.downloads_of(PATHS[0])) == 2


def _fast_client_retries(monkeypatch) -> None:
    """huggingface_hub >= 1.0 retries a cut body 5 times itself, a second apart: no waiting here."""
    import types

    from huggingface_hub import file_download

    if hasattr(file_download, "time"):
        clock = {name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
        monkeypatch.setattr(file_download, "time", types.SimpleNamespace(**{**clock, "sleep": lambda seconds: None}))


def test_a_connection_that_keeps_dropping_is_a_network_error_not_a_content_check(hub, tmp_path, monkeypatch):
    _fast_client_retries(monkeypatch)
    _publish(hub, PATHS[:1], examples=20)

    class AlwaysDrop(dict):
        def pop(self, key, default=None):
            return 1000

    hub.drop_after = AlwaysDrop()
    home = tmp_path / "home"
    with pytest.raises(DataError) as info:
        ensure_downloaded(_first(), home=home)
    message = str(info.value)
    assert "content check" not in message, message
    assert PATHS[0] in message and f"{hub.endpoint}/datasets/{REPO}/resolve/" in message
    assert f"the connection kept dropping, {download.MAX_NETWORK_TRIES} attempts cut short" in message  # the cause
    assert "ChunkedEncodingError" in message or "RemoteProtocolError" in message or "ReadError" in message
    # the advice: try again, check the network or HF_ENDPOINT, or run offline on what is here
    assert "try again" in message and "HF_ENDPOINT" in message and "HF_HUB_OFFLINE=1" in message
    assert len(hub.downloads_of(PATHS[0])) >= download.MAX_NETWORK_TRIES  # newer clients also retry on their own
    assert not (home / PATHS[0]).exists()


def test_a_drop_then_a_bad_file_counts_each_failure_in_its_own_kind(hub, tmp_path, monkeypatch):
    # The first attempt's connection drops (every body, the client's own retries included), the second
    # attempt's file is corrupt, the third is good: one failure of each kind, each within its own limit.
    # Each attempt starts with a HEAD for the file's metadata; the client's own retries do not.
    published = _publish(hub, PATHS[:1], examples=20)

    def attempt() -> int:
        return sum(1 for r in hub.requests if r["method"] == "HEAD" and r["path"].endswith("/" + PATHS[0]))

    class CutInFirstAttempt(dict):
        def pop(self, key, default=None):
            return 1000 if attempt() == 1 else None

    class CorruptInSecondAttempt(dict):
        def pop(self, key, default=None):
            return attempt() == 2

    _fast_client_retries(monkeypatch)
    hub.drop_after, hub.corrupt = CutInFirstAttempt(), CorruptInSecondAttempt()
    ensure_downloaded(_first(), home=tmp_path / "home")
    assert (tmp_path / "home" / PATHS[0]).read_bytes() == published[PATHS[0]]
    assert attempt() == 3


@pytest.mark.parametrize("etag_style", ["lfs", "git", "opaque"])
def test_checksum_mismatch_is_detected_and_fetched_again(hub, tmp_path, etag_style):
    """sha256 (large files), git blob sha1 (small files), or without a hash the gzip/tar check."""
    published = _publish(hub, PATHS)
    hub.etag_style = etag_style
    hub.corrupt[PATHS[2]] = True
    home = tmp_path / "home"
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, published)
    assert [r["range"] for r in hub.downloads_of(PATHS[2])] == [None, None]  # deleted, fetched whole again
    assert len(hub.downloads_of(PATHS[0])) == 1


def test_always_corrupt_gives_up_and_keeps_nothing(hub, tmp_path):
    _publish(hub, PATHS[:1])
    home = tmp_path / "home"

    class AlwaysCorrupt(dict):
        def pop(self, key, default=None):
            return True

    hub.corrupt = AlwaysCorrupt()
    with pytest.raises(DataError, match="failed its content check.*sha256") as info:
        ensure_downloaded(_first(), home=home)
    assert f"{hub.endpoint}/datasets/{REPO}/resolve/" in str(info.value)
    assert not (home / PATHS[0]).exists() and not list(home.rglob("*.incomplete"))
    assert len(hub.downloads_of(PATHS[0])) == download.MAX_TRIES
    assert find_missing(_first(), home)[0][1] == "missing"


def test_damaged_existing_file_is_fetched_again(hub, tmp_path, caplog):
    published = _publish(hub, PATHS)
    home = tmp_path / "home"
    ensure_downloaded(_specs(), home=home)
    time.sleep(1.1)  # the client's record allows one second between its time stamp and the file's
    (home / PATHS[0]).write_bytes(published[PATHS[0]][:100])
    assert [(r.path, p) for r, p in find_missing(_specs(), home)] == [(PATHS[0], "changed since it was downloaded")]
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, published)
    assert len(hub.downloads_of(PATHS[0])) == 2 and len(hub.downloads_of(PATHS[1])) == 1
    # cut short with its time kept: the client's record still vouches for it, the gzip check does not
    times = (home / PATHS[2]).stat()
    (home / PATHS[2]).write_bytes(published[PATHS[2]][:10])
    os.utime(home / PATHS[2], ns=(times.st_atime_ns, times.st_mtime_ns))
    assert [p for _, p in find_missing(_specs(), home)] == ["not a complete gzip file"]
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, published)
    assert len(hub.downloads_of(PATHS[2])) == 2
    assert "content check" not in caplog.text  # fetched anew at once, not first taken as it was and rejected


def test_files_touched_but_unchanged_are_hashed_not_fetched_again(hub, tmp_path):
    """A data home copied without its file times: the client compares the sha256, nothing is downloaded."""
    published = _publish(hub, PATHS)
    home = tmp_path / "home"
    ensure_downloaded(_specs(), home=home)
    time.sleep(1.1)
    (home / PATHS[1]).touch()
    assert [p for _, p in find_missing(_specs(), home)] == ["changed since it was downloaded"]
    hub.requests.clear()
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, published)
    assert [r["method"] for r in _ours(hub)] == ["GET", "HEAD"] and hub.downloads_of(PATHS[1]) == []
    assert find_missing(_specs(), home) == []


def test_cache_of_the_published_system_is_used_as_it_is(hub, tmp_path):
    """Files at <home>/<path> without the client's record (as the published system leaves them)."""
    published = _publish(hub, PATHS)
    home = tmp_path / "home"
    for path, data in published.items():
        (home / path).parent.mkdir(parents=True, exist_ok=True)
        (home / path).write_bytes(data)
    assert ensure_downloaded(_specs(), home=home) == [
        {"repo_id": REPO, "revision": "main", "commits": [], "files": 3, "unrecorded_files": 3}]
    assert hub.requests == []


def test_pinned_revision_fetches_that_revision(hub, tmp_path):
    """Two revisions served; the pinned one (tag or commit) is fetched, recorded, and enforced offline."""
    main_files = _publish(hub, PATHS, seed=0)
    v1_files = _publish(hub, PATHS, seed=10, revision="v1")
    assert main_files[PATHS[0]] != v1_files[PATHS[0]]
    v1 = hub.commit_of(REPO, "v1")
    home = tmp_path / "home"
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, main_files)

    # pinned by commit: the main copies are not that commit's, so the local check sends them back
    assert {p for _, p in find_missing(_specs(v1), home)} == {
        f"from commit {hub.commit_of(REPO, 'main')[:12]}, not the pinned {v1[:12]}"}
    hub.requests.clear()
    revisions = ensure_downloaded(_specs(v1), home=home)
    _assert_fetched(home, v1_files)
    assert revisions == [{"repo_id": REPO, "revision": v1, "commits": [v1], "files": 3, "unrecorded_files": 0}]
    resolves = [r for r in hub.requests if "/resolve/" in r["path"]]
    assert len(resolves) == 6 and all(f"/resolve/{v1}/" in r["path"] for r in resolves)

    # pinned by tag: resolved online to the same commit, so nothing is fetched again
    hub.requests.clear()
    assert ensure_downloaded(_specs("v1"), home=home)[0]["commits"] == [v1]
    assert [r["path"] for r in hub.requests] == [f"/api/datasets/{REPO}/revision/v1"]


def test_pinned_tag_with_the_hub_down_uses_the_files_here(hub, tmp_path, monkeypatch, caplog):
    _publish(hub, PATHS, revision="v1")
    home = tmp_path / "home"
    ensure_downloaded(_specs("v1"), home=home)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    revisions = ensure_downloaded(_specs("v1"), home=home)
    assert revisions[0]["commits"] == [hub.commit_of(REPO, "v1")]
    assert "HF_HUB_OFFLINE=1" in caplog.text


def test_pinned_revision_that_does_not_exist(hub, tmp_path):
    _publish(hub, PATHS)
    with pytest.raises(DataError, match="revision 'v9' does not exist in test-org/tiny_data"):
        ensure_downloaded(_specs("v9"), home=tmp_path / "home")


def test_revision_in_yaml_is_read_and_written(tmp_path):
    from lalmbench.config import load_train_config

    path = tmp_path / "train.yaml"
    path.write_text(f"train_data:\n  Tiny: {{prompt: Classify., data: ['a.tar'], key: label, repo_id: {REPO}, "
                    "revision: v1}\n")
    spec = load_train_config(str(path)).train_data["Tiny"]
    assert spec.revision == "v1" and spec.model_dump()["revision"] == "v1"
    assert "revision" not in DatasetSpec(data=["a.tar"], repo_id=REPO).model_dump()


def test_same_path_at_two_revisions_is_a_config_error():
    specs = [DatasetSpec(data=["a.tar"], repo_id=REPO, name="A"),
             DatasetSpec(data=["a.tar"], repo_id=REPO, revision="v1", name="B")]
    with pytest.raises(ConfigError, match="revision main.*revision v1"):
        download.remote_files(specs)


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


def test_missing_token_gives_401_advice_and_the_token_is_sent(hub, tmp_path, monkeypatch):
    published = _publish(hub, PATHS)
    hub.require_token = "secret"
    home = tmp_path / "home"
    with pytest.raises(DataError) as info:
        ensure_downloaded(_specs(), home=home)
    message = str(info.value)
    assert "HTTP 401" in message and "set HF_TOKEN" in message and hub.endpoint in message
    assert not list(home.rglob("*.tar.gz"))
    monkeypatch.setenv("HF_TOKEN", "wrong")
    with pytest.raises(DataError, match="HF_TOKEN is set but the hub rejected it"):
        ensure_downloaded(_specs(), home=home)
    monkeypatch.setenv("HF_TOKEN", "secret")
    hub.requests.clear()
    ensure_downloaded(_specs(), home=home)
    _assert_fetched(home, published)
    assert len(_ours(hub)) == 7 and {r["authorization"] for r in hub.requests} == {"Bearer secret"}


def test_redirect_to_cdn_keeps_linked_headers_and_drops_the_token(tmp_path, monkeypatch):
    with HubServer(tmp_path / "server", redirect=True) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "secret")
        hub.require_token = "secret"
        published = _publish(hub, PATHS[:1])
        home = tmp_path / "home"
        hub.corrupt[PATHS[0]] = True  # only the sha256 from the redirect's X-Linked-Etag can catch this
        ensure_downloaded(_first(), home=home)
    assert (home / PATHS[0]).read_bytes() == published[PATHS[0]]
    on_hub = [r for r in _ours(hub) if not r["path"].startswith("/cdn/")]
    on_cdn = [r for r in hub.requests if r["path"].startswith("/cdn/")]
    assert [r["method"] for r in on_hub] == ["GET", "HEAD", "HEAD"] and [r["method"] for r in on_cdn] == ["GET"] * 2
    assert {r["authorization"] for r in on_hub} == {"Bearer secret"}
    assert {r["authorization"] for r in on_cdn} == {None} and {r["host"].split(":")[0] for r in on_cdn} == {"localhost"}


def test_not_found_names_url_and_status(hub, tmp_path):
    _publish(hub, PATHS[:2])  # the test shard is missing on the server
    with pytest.raises(DataError) as info:
        ensure_downloaded(_specs(), home=tmp_path / "home")
    message = str(info.value)
    assert "1 of 3 downloads failed" in message and "HTTP 404" in message and "shard pattern" in message
    assert f"{hub.endpoint}/datasets/{REPO}/resolve/{hub.commit_of(REPO)}/{PATHS[2]}" in message
    assert (tmp_path / "home" / PATHS[0]).is_file()  # the others still arrived


def test_a_file_the_hub_refuses_fails_alone_and_the_others_arrive(hub, tmp_path):
    published = _publish(hub, PATHS)
    hub.refuse[PATHS[1]] = 403
    home = tmp_path / "home"
    with pytest.raises(DataError) as info:
        ensure_downloaded(_specs(), home=home, workers=1)
    message = str(info.value)
    assert "1 of 3 downloads failed" in message and "HTTP 403" in message and "gated" in message
    assert f"{hub.endpoint}/datasets/{REPO}/resolve/{hub.commit_of(REPO)}/{PATHS[1]}" in message
    assert PATHS[0] not in message and PATHS[2] not in message
    for path in (PATHS[0], PATHS[2]):  # fetched once each, in the same parallel round (not asked for alone)
        assert (home / path).read_bytes() == published[path] and len(hub.downloads_of(path)) == 1
    assert not (home / PATHS[1]).exists()


def test_unreachable_hub_fails_fast_listing_the_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    started = time.monotonic()
    with pytest.raises(DataError) as info:
        ensure_downloaded(_specs(), home=tmp_path)
    assert time.monotonic() - started < 5  # no rounds of retries with back-off
    message = str(info.value)
    assert "http://127.0.0.1:9/api/datasets/" in message and "Connection refused" in message
    assert "3 shard file(s) are not in the data home" in message and all(p in message for p in PATHS)
    assert "HF_HUB_OFFLINE" not in message  # going offline would not bring missing files (issue 19)


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
    out = capsys.readouterr().out
    assert "fetched 2 file(s)" in out and f"{REPO}@main = commit {hub.commit_of(REPO)}" in out
    assert (tmp_path / "home" / PATHS[0]).read_bytes() == published[PATHS[0]]
    with pytest.raises(ConfigError, match="Suites: task1, task2"):
        download_command(["no-such-task"])


def test_progress_into_a_file_or_pipe_draws_no_bar(hub, tmp_path, monkeypatch, capfd):
    """stderr is no terminal here (pytest captures it): the hub client's bars stay off, the summary is printed."""
    _publish(hub, PATHS)
    train_yaml = tmp_path / "tiny_train.yaml"
    train_yaml.write_text(f"train_data:\n  Tiny: {{prompt: Classify., data: ['Tiny/train/train_{{0..1}}.tar.gz'], "
                          f"key: label, repo_id: {REPO}}}\n")
    monkeypatch.setenv("LALMBENCH_DATA_HOME", str(tmp_path / "home"))
    assert download_command([str(train_yaml)]) == 0
    out, err = capfd.readouterr()
    assert "fetched 2 file(s)" in out and "\r" not in err and "it/s" not in err and "B/s" not in err


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
    import json

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
                            overrides={"decoder_model_name": "tiny-random", "max_steps": 3, "max_new_tokens": 4,
                                       "data_home": str(home)},
                            output_dir=str(output), force=False, allow_download=True, write_report=False)
    assert rc == 0
    for path in ("Tiny/train/train_0.tar.gz", "Tiny/train/train_1.tar.gz", "Tiny/test/test_0.tar.gz",
                 "Count/train/c_0.tar.gz", "Count/test/c_0.tar.gz"):
        assert (home / path).is_file()
    scores = list(output.rglob("scores.tsv"))
    assert len(scores) == 1
    lines = scores[0].read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["Task", "score", "weight"]
    assert {line.split("\t")[0] for line in lines[1:]} == {"eval_tiny", "eval_count", "Overall"}
    summary = json.loads((scores[0].parent / "run_summary.json").read_text())
    assert summary["data_revisions"] == [{"repo_id": REPO, "revision": "main", "commits": [hub.commit_of(REPO)],
                                          "files": 5, "unrecorded_files": 0}]
