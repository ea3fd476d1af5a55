"""`lalmbench new-encoder DIR`: a submission repository that passes `lalmbench check` as generated.

It writes, into a new directory (built aside and renamed into place, so a failure leaves nothing):
    <snake_name>.py                 the encoder: log-mel -> two strided convolutions, correct masks,
                                    weights loaded from a bundled file or downloaded on first use
    README.md                       the contract and the three commands (check, test, package)
    requirements.txt                what the encoder needs at run time
    submission.json                 which file and constructor arguments `lalmbench package` checks
    tests/test_<snake_name>.py      pytest: the encoder passes `lalmbench check`
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lalmbench.errors import ScaffoldError
from lalmbench.io_utils import atomic_directory


def snake_case(class_name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", class_name).lower()


ENCODER_TEMPLATE = '''"""{class_name}: an audio encoder for the Interspeech 2026 Audio Encoder Capability Challenge.

Contract: forward(audio [B, T] float32 16 kHz, audio_attention_mask [B, T] or None)
          -> (features [B, T', output_dim], feature_mask [B, T'] with 1 = real audio, 0 = padding).
This starting point: log-mel (10 ms hop) -> two stride-2 convolutions -> 25 frames per second.
Replace the layers with your model; keep the masks right (`lalmbench check` tells you when not).

Weights: `{weights_file}` next to this file is loaded when present. When it is not bundled, set
WEIGHTS_URL and it is downloaded there on first use. With neither, the layers stay randomly initialised.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms
WINDOW = 400  # 25 ms
N_FFT = 512
WEIGHTS_FILE = Path(__file__).resolve().with_name("{weights_file}")
# Where to fetch the weights when they are not bundled, e.g.
# "https://huggingface.co/<user>/<repo>/resolve/main/{weights_file}". Empty: keep the random init.
WEIGHTS_URL = ""


def mel_filters(n_mels: int) -> torch.Tensor:
    """Triangular HTK-mel filters, [N_FFT // 2 + 1, n_mels]."""
    to_mel = lambda hz: 2595.0 * math.log10(1.0 + hz / 700.0)
    mels = torch.linspace(0.0, to_mel(SAMPLE_RATE / 2), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)[:, None]
    rising = (bins - hz[:-2]) / (hz[1:-1] - hz[:-2])
    falling = (hz[2:] - bins) / (hz[2:] - hz[1:-1])
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def download_weights(url: str, path: Path) -> Path:
    """Fetch `url` to `path` once; a clear error when offline."""
    partial = path.with_suffix(path.suffix + ".part")
    try:
        torch.hub.download_url_to_file(url, str(partial), progress=True)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"{{path.name}} is not bundled and downloading it from {{url}} failed "
            f"({{type(exc).__name__}}: {{exc}}). Run once with internet access, or put {{path.name}} next to "
            f"{{Path(__file__).name}}.") from exc
    os.replace(partial, path)
    return path


class {class_name}(nn.Module):
    def __init__(self, n_mels: int = 64, dim: int = 256, weights: str | None = None):
        super().__init__()
        self.output_dim = dim  # D: the size of each output frame
        self.register_buffer("filters", mel_filters(n_mels), persistent=False)
        self.register_buffer("window", torch.hann_window(WINDOW), persistent=False)
        with torch.random.fork_rng(devices=[]):  # the same random init every time, without touching global RNG
            torch.manual_seed(0)
            self.norm = nn.LayerNorm(n_mels)
            self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, stride=2, padding=1)
            self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        self.load_weights(weights)

    def load_weights(self, weights: str | None) -> None:
        path = Path(weights) if weights else WEIGHTS_FILE
        if not path.is_file():
            if weights:
                raise FileNotFoundError(f"weights file {{path}} does not exist")
            if not WEIGHTS_URL:
                return  # no trained weights yet: random init
            download_weights(WEIGHTS_URL, path)
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    @staticmethod
    def _halve(lengths: torch.Tensor) -> torch.Tensor:
        """Frames after a stride-2 convolution with padding 1 and kernel 3."""
        return torch.div(lengths + 1, 2, rounding_mode="floor")

    @staticmethod
    def _mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
        return (torch.arange(frames, device=lengths.device)[None] < lengths[:, None]).long()

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        audio = audio.float()
        batch, samples = audio.shape
        if audio_attention_mask is None:
            lengths = torch.full((batch,), samples, device=audio.device)
        else:
            lengths = audio_attention_mask.long().sum(-1)
            audio = audio * (audio_attention_mask != 0)
        # Frame i covers samples [i*HOP, i*HOP + WINDOW); pad on the right only, with zeros, so a clip's
        # frames are the same alone or padded inside a batch.
        frames = max(1, math.ceil(samples / HOP))
        audio = nn.functional.pad(audio, (0, (frames - 1) * HOP + N_FFT - samples))
        windows = audio.unfold(-1, N_FFT, HOP)[:, :frames, :WINDOW] * self.window
        power = torch.fft.rfft(windows, n=N_FFT).abs().pow(2)
        x = self.norm(torch.log(power @ self.filters + 1e-6))  # [B, frames, n_mels]
        valid = torch.div(lengths + HOP - 1, HOP, rounding_mode="floor").clamp(min=1)
        # Zero the padded frames before each convolution: its kernel reaches one frame past the end, and
        # that frame must look the same (zero) whether the clip was padded or not.
        x = x * self._mask(valid, x.shape[1]).unsqueeze(-1)
        x = nn.functional.gelu(self.conv1(x.transpose(1, 2)))
        valid = self._halve(valid)
        x = x * self._mask(valid, x.shape[-1]).unsqueeze(1)
        x = nn.functional.gelu(self.conv2(x))
        valid = self._halve(valid)
        features = x.transpose(1, 2)  # [B, T', dim]
        return features, self._mask(valid, features.shape[1])
'''

TEST_TEMPLATE = '''"""The encoder passes every mandatory check of `lalmbench check` (pip install lalmbench pytest)."""

from pathlib import Path

import pytest

ENCODER = Path(__file__).resolve().parents[1] / "{encoder_file}"


def test_encoder_passes_lalmbench_check():
    check = pytest.importorskip("lalmbench.encoders.check")
    # A shorter cost measurement than the default 4 x 30 s keeps the test quick; run
    # `lalmbench check {encoder_file}` for the full figures.
    report = check.run_checks(str(ENCODER), {{}}, options=check.CheckOptions(timing_seconds=5.0))
    assert report.ok, "\\n" + report.render_table()
'''

README_TEMPLATE = '''# {class_name}

An audio encoder for the Interspeech 2026 Audio Encoder Capability Challenge, made with
`lalmbench new-encoder`.

## The contract
- `{encoder_file}` holds exactly one name ending in `Encoder`: the class `{class_name}`, a `torch.nn.Module`
  with an int attribute `output_dim`.
- `forward(audio, audio_attention_mask)`: audio float32 `[B, T]`, mono, 16 kHz; the mask `[B, T]` or `None`
  (1 = audio, 0 = padding). It returns `(features [B, T', output_dim], feature_mask [B, T'] or None)`.
- It must run in a Google Colab T4 runtime (16 GB GPU, 12 GB RAM).

## Three commands
```
lalmbench check {encoder_file}     # every contract check, with what to fix
pytest                              # the same, as a test
lalmbench package .                 # check again and write the submission ZIP with a manifest
```
Constructor arguments for the checks live in `submission.json` (`model_args`).

## Weights
`{weights_file}` next to `{encoder_file}` is loaded when present. Large weights are better hosted (set
`WEIGHTS_URL` in `{encoder_file}`; they are downloaded on first use); `lalmbench package . --include-weights`
puts weight files into the ZIP instead.
'''

REQUIREMENTS = '''# What the encoder needs at run time.
torch>=2.1
# For the checks and the test: pip install lalmbench pytest
'''


def scaffold_files(class_name: str) -> dict[str, str]:
    """Relative path -> content of every scaffolded file."""
    snake = snake_case(class_name)
    encoder_file = f"{snake}.py"
    fields = {"class_name": class_name, "encoder_file": encoder_file, "weights_file": f"{snake}_weights.pt"}
    return {
        encoder_file: ENCODER_TEMPLATE.format(**fields),
        "README.md": README_TEMPLATE.format(**fields),
        "requirements.txt": REQUIREMENTS,
        "submission.json": json.dumps({"encoder": encoder_file, "model_args": {}}, indent=2) + "\n",
        f"tests/test_{snake}.py": TEST_TEMPLATE.format(**fields),
        ".gitignore": "__pycache__/\n*.pyc\n*.part\n",
    }


def new_encoder_command(directory: str, class_name: str = "MyEncoder") -> int:
    """`lalmbench new-encoder DIR [--name CLASS]`: write the scaffold; refuses a non-empty DIR."""
    if not class_name.isidentifier() or not class_name.endswith("Encoder") or class_name == "Encoder":
        raise ScaffoldError(f"class name {class_name!r} is not usable: it must be a Python identifier ending in "
                            f"'Encoder' (the loader looks for that suffix), e.g. --name MyAudioEncoder")
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise ScaffoldError(f"{target} exists and is a file; pick a directory name that does not exist")
    if target.is_dir() and any(target.iterdir()):
        entries = sorted(p.name for p in target.iterdir())
        raise ScaffoldError(f"{target} exists and is not empty ({len(entries)} entries: {entries[:5]}); nothing was "
                            f"written. Pick a new directory, or empty this one")
    files = scaffold_files(class_name)
    with atomic_directory(target) as tmp:
        for relative, content in files.items():
            path = tmp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    encoder_file = next(iter(files))
    print(f"Wrote {target}/ with {', '.join(sorted(files))}.\nNext:\n"
          f"  cd {target}\n  lalmbench check {encoder_file}\n  pytest\n  lalmbench package .")
    return 0
