"""`lalmbench check`: encoders broken in exactly one way fail (or warn on) exactly that check, with its fix."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lalmbench.encoders.check import CheckOptions, check_command, run_checks
from lalmbench.encoders.contract import validate_encoder
from lalmbench.errors import EncoderContractError

# Short audio keeps each run well under a second; the official call (randn(3, 50000)) stays as published.
FAST = CheckOptions(long_seconds=4.0, frame_rate_seconds=(1.0, 2.0, 4.0), timing_batch=2, timing_seconds=1.0)
FRAME = 320


class GoodEncoder(nn.Module):
    """50 frames per second: a linear map of 20 ms chunks, with a correct mask."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(FRAME, 8)
        self.output_dim = 8

    def frames(self, audio, audio_attention_mask):
        batch, samples = audio.shape
        n = max(1, -(-samples // FRAME))
        chunks = F.pad(audio, (0, n * FRAME - samples)).reshape(batch, n, FRAME)
        lengths = (torch.full((batch,), samples) if audio_attention_mask is None
                   else audio_attention_mask.long().sum(-1))
        valid = torch.div(lengths + FRAME - 1, FRAME, rounding_mode="floor").clamp(min=1)
        return chunks, (torch.arange(n)[None] < valid[:, None]).long()

    def forward(self, audio, audio_attention_mask=None):
        chunks, mask = self.frames(audio, audio_attention_mask)
        return self.proj(chunks), mask


class NoOutputDim(GoodEncoder):
    def __init__(self):
        super().__init__()
        del self.output_dim


class ThreeArgForward(GoodEncoder):
    def forward(self, audio, audio_attention_mask, extra):
        return super().forward(audio, audio_attention_mask)


class Raises(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        raise RuntimeError("boom")


class FeaturesOnly(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        return super().forward(audio, audio_attention_mask)[0]


class TwoDimFeatures(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        features, mask = super().forward(audio, audio_attention_mask)
        return features.mean(1), mask


class DropsBatch(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        features, mask = super().forward(audio, audio_attention_mask)
        return features[:1], mask[:1]


class WrongOutputDim(GoodEncoder):
    def __init__(self):
        super().__init__()
        self.output_dim = 9


class ThreeDimMask(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        features, mask = super().forward(audio, audio_attention_mask)
        return features, mask[..., None]


class MaskOnSampleRate(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        features, _ = super().forward(audio, audio_attention_mask)
        return features, torch.ones_like(audio, dtype=torch.long)


class NaNOutput(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        features, mask = super().forward(audio, audio_attention_mask)
        if audio.shape[0] == 3:  # only on the batch-3 input, so the other checks see finite values
            features = features.log()  # log of negative values
        return features, mask


class FailsShort(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        if audio.shape[-1] < 2000:
            raise ValueError("input shorter than the 125 ms window")
        return super().forward(audio, audio_attention_mask)


class FailsLong(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        if audio.shape[-1] > 60_000:  # longer than the official 50000-sample call
            raise RuntimeError("sequence longer than the position table")
        return super().forward(audio, audio_attention_mask)


class NormalisesOverPadding(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        features, mask = super().forward(audio, audio_attention_mask)
        return features - features.mean(dim=1, keepdim=True), mask  # the mean takes in the padded frames


class IgnoresAudioMask(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        return super().forward(audio, None)


class NoMask(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        return super().forward(audio, audio_attention_mask)[0], None


class RandomOnOfficialInput(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        features, mask = super().forward(audio, audio_attention_mask)
        if audio.shape[0] == 3:  # only the batch-3 input the determinism check repeats
            features = features + torch.randn_like(features)
        return features, mask


class FixedLength(GoodEncoder):
    def forward(self, audio, audio_attention_mask=None):
        audio = F.pad(audio, (0, max(0, 16_000 - audio.shape[-1])))[:, :16_000]
        features, _ = super().forward(audio, None)
        return features, torch.ones(features.shape[:2], dtype=torch.long)


class OldTemplate(nn.Module):
    def __init__(self, hop=True):
        super().__init__()
        self.inner = GoodEncoder()
        self.output_dim = 8
        self.sampling_rate = 16_000
        if hop:
            self.hop_size_in_ms = 20

    def forward(self, audio):
        return self.inner(audio)[0]


def problems(report):
    return {r.name: r.status for r in report.results if r.status in ("fail", "warn")}


def test_good_encoder_passes_every_check():
    report = run_checks(GoodEncoder(), options=FAST)
    assert report.ok and problems(report) == {}
    names = [r.name for r in report.results]
    for name in ("load", "output_dim", "forward call", "mask frames", "finite output", "short input", "long input",
                 "padding invariance", "deterministic", "frame rate", "parameters", "peak memory", "speed", "T4 budget"):
        assert name in names
    assert report.get("frame rate").data["frames_per_second"] == {"1": 50.0, "2": 50.0, "4": 50.0}
    assert report.get("parameters").data["parameters"] == FRAME * 8 + 8
    assert "estimate" in report.get("T4 budget").value


@pytest.mark.parametrize("encoder, check, fix", [
    (NoOutputDim(), "output_dim", "self.output_dim = D"),
    (ThreeArgForward(), "forward signature", "forward(self, audio, audio_attention_mask=None)"),
    (Raises(), "forward call", "run the encoder by hand"),
    (FeaturesOnly(), "output tuple", "return features, mask"),
    (TwoDimFeatures(), "features dims", "[batch, frames, dim]"),
    (DropsBatch(), "batch size", "keep the batch dimension"),
    (WrongOutputDim(), "feature dim", "set output_dim"),
    (ThreeDimMask(), "mask dims", "[batch, frames] mask"),
    (MaskOnSampleRate(), "mask frames", "output frame rate"),
])
def test_official_check_fails_alone(encoder, check, fix):
    report = run_checks(encoder, options=FAST)
    assert not report.ok
    assert problems(report) == {check: "fail"}
    assert fix in report.get(check).fix
    after = [r for r in report.results[[r.name for r in report.results].index(check) + 1:]]
    assert after and all(r.status == "skip" for r in after)
    # The table and the training pipeline's validate_encoder agree on the check's name.
    with pytest.raises(EncoderContractError) as caught:
        validate_encoder(encoder)
    assert caught.value.check == check


@pytest.mark.parametrize("encoder, check, status, fix", [
    (NaNOutput(), "finite output", "fail", "add an epsilon"),
    (FailsShort(), "short input", "fail", "run it by hand"),
    (FailsLong(), "long input", "fail", "run it by hand"),
    (NormalisesOverPadding(), "padding invariance", "warn", "padding leaks into the valid frames"),
    (IgnoresAudioMask(), "padding invariance", "warn", "sum of audio_attention_mask"),
    (NoMask(), "padding invariance", "warn", "return a [B, T'] feature mask"),
    (RandomOnOfficialInput(), "deterministic", "warn", "remove randomness"),
    (FixedLength(), "frame rate", "warn", "trim fixed-length padding"),
])
def test_extra_check_fails_alone(encoder, check, status, fix):
    report = run_checks(encoder, options=FAST)
    assert problems(report) == {check: status}
    assert fix in report.get(check).fix
    assert report.ok == (status == "warn")  # warnings are informational: the exit status stays 0


def test_older_template_passes_and_needs_its_attributes():
    report = run_checks(OldTemplate(), options=FAST)
    assert report.ok and problems(report) == {}
    assert report.get("forward call").value.startswith("encoder(randn(2, 50000))")
    assert report.get("padding invariance").status == "skip"
    broken = run_checks(OldTemplate(hop=False), options=FAST)
    assert problems(broken) == {"hop_size_in_ms": "fail"} and "self.hop_size_in_ms" in broken.get("hop_size_in_ms").fix


GOOD_FILE = """
import torch
from torch import nn

class FileEncoder(nn.Module):
    def __init__(self, dim=4):
        super().__init__()
        self.output_dim = dim
    def forward(self, audio, audio_attention_mask=None):
        frames = max(1, audio.shape[-1] // 640)
        return torch.zeros(audio.shape[0], frames, self.output_dim), None
"""


@pytest.mark.parametrize("source, model_args, check, fix", [
    ("import torch\nclass FileEncoder(:\n", {}, "load", "fix the error in the encoder file"),
    (GOOD_FILE + "\nOtherEncoder = FileEncoder\n", {}, "class name", "exactly one *Encoder"),
    (GOOD_FILE.replace("FileEncoder", "FileModel"), {}, "class name", "end in 'Encoder'"),
    (GOOD_FILE, {"width": 3}, "constructor", "keyword arguments the constructor takes"),
    ("class FileEncoder:\n    output_dim = 4\n", {}, "nn.Module", "subclass torch.nn.Module"),
])
def test_loading_failures_name_their_check(tmp_path, source, model_args, check, fix):
    path = tmp_path / "encoder.py"
    path.write_text(source)
    report = run_checks(str(path), model_args, options=FAST)
    assert problems(report) == {check: "fail"}
    assert fix in report.get(check).fix
    assert all(r.status == "skip" for r in report.results if r.name not in ("load", "class name", "constructor", "nn.Module"))


def test_file_encoder_with_args_and_cli_output(tmp_path, capsys):
    path = tmp_path / "encoder.py"
    path.write_text(GOOD_FILE)
    assert check_command(str(path), {"dim": 6}, as_json=True, options=FAST) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["class_name"] == "FileEncoder" and result["failed"] == []
    assert {c["name"]: c["status"] for c in result["checks"]}["feature dim"] == "pass"
    # No mask: the padding check warns, but the exit status stays 0.
    assert result["warnings"] == ["padding invariance"]
    assert check_command(str(path), {"dim": 6}, options=FAST) == 0
    table = capsys.readouterr().out
    assert "RESULT: PASS" in table and "must" in table and "info" in table and "return a [B, T'] feature" in table


def test_failure_table_names_the_fix_and_exit_status(tmp_path, capsys):
    path = tmp_path / "encoder.py"
    path.write_text(textwrap.dedent(GOOD_FILE).replace("self.output_dim = dim", "self.output_dim = str(dim)"))
    assert check_command(str(path), {}, options=FAST) == 1
    table = capsys.readouterr().out
    assert "RESULT: FAIL: 1 mandatory check(s) failed: output_dim" in table
    assert "FAIL" in table and "set self.output_dim = D" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_requested_without_cuda():
    report = run_checks(GoodEncoder(), device="cuda", options=FAST)
    assert problems(report) == {"device": "fail"} and "--device cpu" in report.get("device").fix


def test_failed_constructor_is_not_buried_under_skipped_rows(tmp_path):
    path = tmp_path / "encoder.py"
    path.write_text(GOOD_FILE)
    table = run_checks(str(path), {"width": 3}, options=FAST).render_table()
    rows = [line.split()[0] for line in table.splitlines()[3:] if line[:1].isalpha()]  # first column only
    assert rows[:4] == ["load", "class", "constructor", "not"]
    assert "SKIP" not in table
    folded = [line for line in table.splitlines() if line.startswith("not run (")]
    assert len(folded) == 1 and "the encoder could not be built" in folded[0] and "T4 budget" in table


class TransposedOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.output_dim = 8

    def forward(self, audio, audio_attention_mask=None):
        frames = audio.shape[-1] // 320
        return torch.zeros(audio.shape[0], self.output_dim, frames), None  # [B, D, T']


def test_transposed_features_get_the_transpose_hint():
    report = run_checks(TransposedOutput(), options=FAST)
    assert problems(report) == {"feature dim": "fail"}
    assert "transpose(1, 2)" in report.get("feature dim").fix
    assert "set output_dim" not in report.get("feature dim").fix
