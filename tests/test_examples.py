"""Every example encoder in examples/encoders passes `lalmbench check` with its tiny offline config."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from lalmbench.encoders.check import CheckOptions, run_checks
from lalmbench.encoders.loading import resolve_encoder_class

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "encoders"
# The official call and the 0.1 s / 30 s inputs stay as published; the cost run is shortened.
OPTIONS = CheckOptions(timing_batch=1, timing_seconds=2.0)


def dasheng_missing_reason() -> str | None:
    try:
        importlib.import_module("dasheng")
    except (ImportError, OSError) as exc:  # OSError: a torchaudio built for another torch
        return f"dasheng is not importable here ({type(exc).__name__}: {str(exc)[:120]})"
    return None


@pytest.mark.parametrize("file, model_args, frames_per_second", [
    ("logmel_encoder.py", {}, 25.0),
    ("logmel_encoder.py", {"n_mels": 40, "stack": 2}, 50.0),
    ("whisper_encoder.py", {"pretrained": None}, 50.0),
    ("wav2vec2_encoder.py", {"pretrained": None}, 50.0),
    ("wav2vec2_encoder.py", {"pretrained": None, "model_type": "hubert"}, 50.0),
    pytest.param("dasheng_encoder.py", {"pretrained": None}, 25.0,
                 marks=pytest.mark.skipif(dasheng_missing_reason() is not None,
                                          reason=str(dasheng_missing_reason()))),
])
def test_example_passes_every_check(file, model_args, frames_per_second):
    report = run_checks(str(EXAMPLES / file), model_args, options=OPTIONS)
    assert report.ok, "\n" + report.render_table()
    # The examples also keep padding out of the valid frames and follow the audio length.
    assert report.warnings == [], "\n" + report.render_table()
    assert report.get("frame rate").data["frames_per_second"]["30"] == pytest.approx(frames_per_second, rel=0.01)


def test_every_example_file_is_tested_and_has_one_encoder_name():
    files = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert files == ["dasheng_encoder.py", "logmel_encoder.py", "wav2vec2_encoder.py", "whisper_encoder.py"]
    for name in files:
        if name == "dasheng_encoder.py" and dasheng_missing_reason():
            continue
        assert resolve_encoder_class(str(EXAMPLES / name)).__name__.endswith("Encoder")


def test_dasheng_example_names_the_package_when_missing():
    if dasheng_missing_reason() is None:
        pytest.skip("dasheng is installed here")
    # The file itself imports without dasheng; building the encoder says what to install.
    cls = resolve_encoder_class(str(EXAMPLES / "dasheng_encoder.py"))
    with pytest.raises(ImportError, match="pip install dasheng"):
        cls(pretrained=None)
    report = run_checks(str(EXAMPLES / "dasheng_encoder.py"), {"pretrained": None}, options=OPTIONS)
    assert [r.name for r in report.failed] == ["constructor"] and "pip install dasheng" in report.get("constructor").value


def test_whisper_log_mel_matches_the_feature_extractor():
    import torch
    from transformers import WhisperFeatureExtractor

    encoder = resolve_encoder_class(str(EXAMPLES / "whisper_encoder.py"))(pretrained=None)
    audio = torch.randn(1, 24_000) * 0.1
    reference = WhisperFeatureExtractor(feature_size=80)(audio[0].numpy(), sampling_rate=16_000,
                                                         return_tensors="pt").input_features
    ours = encoder.log_mel(torch.nn.functional.pad(audio, (0, 480_000 - 24_000)))
    assert torch.allclose(ours, reference, atol=1e-4)
