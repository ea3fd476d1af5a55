"""The hub reachability probe: an unreachable hub switches the process to cached files at once."""

from __future__ import annotations

import time

import pytest
from hub_server import HubServer

from lalmbench import hub

UNREACHABLE = "http://127.0.0.1:9"  # discard port: connection refused


@pytest.fixture(autouse=True)
def _fresh_probe(monkeypatch):
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_probed", {})


def test_unreachable_hub_switches_to_offline_with_a_warning(monkeypatch, caplog):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    assert hub.offline_if_unreachable() is True
    assert constants.HF_HUB_OFFLINE is True
    assert f"the hub at {UNREACHABLE} does not answer (ConnectError" in caplog.text
    assert "HF_HUB_OFFLINE=1" in caplog.text
    assert hub.offline_if_unreachable() is False  # already offline: no second probe, no second warning


def test_a_hub_that_answers_is_left_alone(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with HubServer(tmp_path) as server:  # answers 404 to the probe: an answer all the same
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        assert hub.offline_if_unreachable() is False
    assert constants.HF_HUB_OFFLINE is False


def test_offline_by_environment_is_not_probed(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline_if_unreachable() is False and hub._probed == {}


def test_check_of_an_encoder_that_downloads_fails_fast_when_the_hub_is_down(tmp_path, monkeypatch):
    """Without the probe the hub client retries the missing file with back-off (about 25 s here)."""
    from lalmbench.encoders.check import run_checks

    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    encoder = tmp_path / "hub_encoder.py"
    encoder.write_text(
        "import torch\nfrom huggingface_hub import hf_hub_download\n\n"
        "class HubEncoder(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        f"        hf_hub_download('no-org/no-model', 'config.json', cache_dir={str(tmp_path / 'cache')!r})\n")
    started = time.monotonic()
    report = run_checks(str(encoder))
    assert time.monotonic() - started < 10
    constructor = next(r for r in report.results if r.name == "constructor")
    assert constructor.status == "fail" and "HF_HUB_OFFLINE=1" in constructor.fix
