"""HEAR-API modules as encoders (`hear:MODULE`), with a small HEAR module written by the tests."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import zipfile

import pytest
import torch

from lalmbench.encoders.contract import validate_encoder
from lalmbench.encoders.hear import hear_encoder_class
from lalmbench.encoders.loading import encoder_display_name, encoder_identity, load_encoder
from lalmbench.errors import EncoderContractError

# Frames centred every HOP samples (zero padding of half a window on each side, like stft(center=True));
# per frame its mean, RMS and zero-crossing rate, through one linear layer.
HEAR_MODULE = '''
"""A HEAR-API module for lalmbench's tests."""
import torch

SAMPLE_RATE = {rate}
HOP = SAMPLE_RATE // 40        # 25 ms
WINDOW = 2 * HOP               # 50 ms
EMBEDDING = 5
OFFSET_MS = 0.0                # added to every timestamp (some modules stamp the first frame late)


class FrameModel(torch.nn.Module):
    sample_rate = SAMPLE_RATE
    timestamp_embedding_size = EMBEDDING
    scene_embedding_size = EMBEDDING

    def __init__(self):
        super().__init__()
        self.project = torch.nn.Linear(3, EMBEDDING)
        with torch.no_grad():  # features 0-2: mean, RMS, zero-crossing rate; 3: RMS + rate; 4: 1
            self.project.weight.copy_(torch.tensor([[1., 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [0, 0, 0]]))
            self.project.bias.copy_(torch.tensor([0., 0, 0, 0, 1]))


def load_model(model_file_path: str = ""):
    model = FrameModel()
    if model_file_path:
        model.load_state_dict(torch.load(model_file_path))
    return model


def get_timestamp_embeddings(audio, model):
    padded = torch.nn.functional.pad(audio, (HOP, HOP))
    frames = padded.unfold(-1, WINDOW, HOP)
    crossings = (frames[..., 1:] * frames[..., :-1] < 0).float().mean(-1)
    stats = torch.stack([frames.mean(-1), frames.pow(2).mean(-1).sqrt(), crossings], -1)
    timestamps = torch.arange(frames.shape[1]) * (1000.0 * HOP / SAMPLE_RATE) + OFFSET_MS
    return model.project(stats), timestamps[None].expand(audio.shape[0], -1)


def get_scene_embeddings(audio, model):
    return get_timestamp_embeddings(audio, model)[0].mean(1)
'''


@pytest.fixture
def hear_modules(tmp_path, monkeypatch):
    """`tests_module` (8 kHz) and `tests_module_16k` importable by name; forgotten afterwards."""
    (tmp_path / "tests_module.py").write_text(HEAR_MODULE.format(rate=8000))
    (tmp_path / "tests_module_16k.py").write_text(HEAR_MODULE.format(rate=16000))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("tests_module", "tests_module_16k"):
        sys.modules.pop(name, None)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sine(seconds: float, rate: int, frequency: float = 1000.0, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * frequency * t + 0.3)).float()


def test_timestamp_embeddings_are_the_frames_and_audio_is_resampled(hear_modules):
    encoder = load_encoder("hear:tests_module")
    assert encoder.output_dim == 5 and encoder.model_rate == 8000
    features, mask = encoder(_sine(1.0, 16000)[None], None)
    # 16000 samples at 16 kHz -> 8000 at 8 kHz -> frames centred at 0, 200, ..., 8000: 41
    assert features.shape == (1, 41, 5) and mask.tolist() == [[1] * 40 + [0]]
    inside = features[0, 2:38]  # frames whose 50 ms window lies inside the clip
    assert inside[:, 0].abs().max() < 0.02  # mean of a sine
    assert torch.allclose(inside[:, 1], torch.full((36,), 0.5 / math.sqrt(2)), atol=3e-3)  # its RMS
    assert torch.allclose(inside[:, 2], torch.full((36,), 0.25), atol=0.01)  # 2 crossings per 8 samples
    assert torch.allclose(inside[:, 4], torch.ones(36))
    # the same as the module on the tone made at 8 kHz (resampling keeps a 1 kHz tone)
    direct, _ = encoder.api.get_timestamp_embeddings(_sine(1.0, 8000)[None], encoder.model)
    assert torch.allclose(features[0, 2:38], direct[0, 2:38], atol=3e-3)


def test_a_16k_module_gets_the_audio_as_it_is(hear_modules):
    encoder = load_encoder("hear:tests_module_16k")
    audio = _sine(0.5, 16000)[None]
    features, _ = encoder(audio, None)
    direct, _ = encoder.api.get_timestamp_embeddings(audio, encoder.model)
    assert features.shape == (1, 21, 5) and torch.equal(features, direct)


def test_frame_mask_follows_the_audio_mask_and_the_timestamps(hear_modules):
    encoder = load_encoder("hear:tests_module")
    lengths = [16000, 8000, 160]  # 1 s, 0.5 s, 10 ms
    audio = torch.zeros(3, 16000)
    for row, length in enumerate(lengths):
        audio[row, :length] = _sine(length / 16000, 16000)
    audio_mask = (torch.arange(16000)[None] < torch.tensor(lengths)[:, None]).long()
    features, mask = encoder(audio, audio_mask)
    # a frame counts while its centre (0, 25, 50, ... ms) is before the end of the clip
    assert mask.sum(-1).tolist() == [40, 20, 1]
    alone, alone_mask = encoder(audio[1:2, :8000], None)
    assert alone_mask.sum().item() == 20
    assert torch.allclose(features[1, :20], alone[0, :20], atol=1e-5)  # padding changes no valid frame

    module = encoder.api
    module.OFFSET_MS = 25.0  # the first frame stamped at 25 ms: a 10 ms clip still keeps one frame
    _, late_mask = encoder(audio, audio_mask)
    assert late_mask.sum(-1).tolist() == [39, 19, 1]


def test_model_file_path_goes_to_load_model(hear_modules, tmp_path):
    model = load_encoder("hear:tests_module").model
    with torch.no_grad():
        model.project.weight.zero_()
        model.project.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    encoder = load_encoder("hear:tests_module", {"model_file_path": str(weights)})
    features, _ = encoder(_sine(0.2, 16000)[None], None)
    assert torch.equal(features[0], torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]).expand(9, 5))


def test_contract_identity_and_names(hear_modules):
    encoder = load_encoder("hear:tests_module")
    assert validate_encoder(encoder) == {"output_dim": 5, "frames": 126, "arity": 2}  # 50000 samples -> 25000
    identity = encoder_identity("hear:tests_module", {})["encoder"]  # the HEAR module's code, not the wrapper's
    assert identity == {"class": "hear:tests_module", "sha256": _sha256(hear_modules / "tests_module.py")}
    assert encoder_display_name("hear:tests_module") == "hear-tests_module"
    assert encoder_display_name("hear:hearbaseline.wav2vec2") == "hear-wav2vec2"
    by_file = f"hear:{hear_modules / 'tests_module.py'}"
    assert load_encoder(by_file).output_dim == 5 and encoder_display_name(by_file) == "hear-tests_module"


def test_modules_that_are_not_hear_are_refused(hear_modules):
    with pytest.raises(EncoderContractError, match="pip install"):
        hear_encoder_class("hear:no_such_hear_module")
    (hear_modules / "not_hear.py").write_text("def load_model(model_file_path=''):\n    return None\n")
    with pytest.raises(EncoderContractError, match="not_hear lacks get_timestamp_embeddings"):
        hear_encoder_class("hear:not_hear")
    (hear_modules / "no_rate.py").write_text(
        HEAR_MODULE.format(rate=8000).replace("    sample_rate = SAMPLE_RATE\n", ""))
    with pytest.raises(EncoderContractError, match="model.sample_rate"):
        load_encoder("hear:no_rate")
    (hear_modules / "wrong_size.py").write_text(
        HEAR_MODULE.format(rate=8000).replace("timestamp_embedding_size = EMBEDDING", "timestamp_embedding_size = 7"))
    with pytest.raises(EncoderContractError, match="feature dim"):
        validate_encoder(load_encoder("hear:wrong_size"))


def test_check_command_on_a_hear_module(hear_modules, capsys):
    from lalmbench.cli import main

    assert main(["check", "hear:tests_module"]) == 0
    table = capsys.readouterr().out
    assert "HEAR module" in table and "HearEncoder" in table


def test_package_a_hear_module(hear_modules, tmp_path):
    from lalmbench.encoders.package import package_command

    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "my_hear.py").write_text(HEAR_MODULE.format(rate=8000))
    (submission / "submission.json").write_text(json.dumps({"encoder": "hear:my_hear.py", "model_args": {}}))
    assert package_command(str(submission)) == 0
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        manifest = json.loads(archive.read("MANIFEST.json"))
        assert sorted(archive.namelist()) == ["MANIFEST.json", "my_hear.py", "submission.json"]
    assert manifest["encoder_file"] == "my_hear.py" and manifest["hear_module"] is True
    assert manifest["class_name"] == "HearEncoder" and manifest["check"]["ok"] is True


def test_tiny_run_with_a_hear_module(hear_modules, demo_suite, tmp_path):
    import yaml

    from lalmbench.cli import main

    train_yaml, eval_yaml, _ = demo_suite
    train = yaml.safe_load(open(train_yaml))  # one demo task keeps the run short
    train["train_data"] = {"tones": train["train_data"]["tones"]}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({"eval_tones": yaml.safe_load(open(eval_yaml))["eval_tones"]}))
    output = tmp_path / "runs"
    args = {"max_steps": 3, "shuffle_buffer": 8, "sort_buffer": 4, "max_new_tokens": 4}
    assert main(["run", "hear:tests_module", str(tmp_path / "train.yaml"), str(tmp_path / "eval.yaml"),
                 "--args", json.dumps(args), "--output-dir", str(output), "--no-report"]) == 0
    run_dir = output / "train" / "hear-tests_module"
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["encoder"] == "hear:tests_module" and summary["steps"] == 3
    assert list(summary["tasks"]) == ["eval_tones"]
    assert len((run_dir / "predictions_eval_tones.csv").read_text().splitlines()) == 1 + 8
    identity = json.loads((run_dir / "run_identity.json").read_text())["identity"]
    assert identity["encoder"]["class"] == "hear:tests_module"
    assert identity["encoder"]["sha256"] == _sha256(hear_modules / "tests_module.py")
