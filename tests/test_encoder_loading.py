"""Loading encoders from files and dotted paths, the contract checks, freezing, LogMelEncoder."""

import textwrap

import pytest
import torch

from lalmbench.encoders import FrozenEncoder, LogMelEncoder, load_encoder, validate_encoder
from lalmbench.errors import EncoderContractError

GOOD = """
import torch
class GoodEncoder(torch.nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.output_dim = dim
        self.proj = torch.nn.Linear(160, dim)
    def forward(self, audio, audio_attention_mask=None):
        frames = audio[:, : audio.shape[1] // 160 * 160].reshape(audio.shape[0], -1, 160)
        return self.proj(frames), None
"""


def _file(tmp_path, body, name="enc.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_file_and_dotted_path_and_model_args(tmp_path):
    encoder = load_encoder(_file(tmp_path, GOOD), {"dim": 5})
    assert encoder.output_dim == 5
    assert validate_encoder(encoder)["frames"] == 50000 // 160
    assert isinstance(load_encoder("lalmbench.encoders.LogMelEncoder", {"n_mels": 32}), LogMelEncoder)


@pytest.mark.parametrize("body, check", [
    ("import torch\n", "class name"),
    (GOOD + "\nclass OtherEncoder(GoodEncoder):\n    pass\n", "class name"),
    ("raise RuntimeError('boom')\n", "import"),
    (GOOD.replace("self.output_dim = dim", "self.output_dim = 'x'"), "output_dim"),
    (GOOD.replace("return self.proj(frames), None", "return self.proj(frames)"), "output tuple"),
    (GOOD.replace("return self.proj(frames), None", "return self.proj(frames)[0], None"), "features dims"),
    (GOOD.replace("return self.proj(frames), None", "return self.proj(frames)[:1], None"), "batch size"),
    (GOOD.replace("self.output_dim = dim", "self.output_dim = dim + 1"), "feature dim"),
    (GOOD.replace("return self.proj(frames), None", "return self.proj(frames), torch.ones(3)"), "mask dims"),
    (GOOD.replace("return self.proj(frames), None", "return self.proj(frames), torch.ones(3, 7)"), "mask frames"),
    (GOOD.replace("def forward(self, audio, audio_attention_mask=None):", "def forward(self, audio, mask, extra):"), "forward signature"),
    (GOOD.replace("def forward(self, audio, audio_attention_mask=None):", "def forward(self, audio):")
         .replace("return self.proj(frames), None", "return self.proj(frames)"), "sampling_rate"),
])
def test_each_bad_encoder_gets_its_own_error(tmp_path, body, check):
    with pytest.raises(EncoderContractError) as info:
        validate_encoder(load_encoder(_file(tmp_path, body)))
    assert info.value.check == check
    assert "expected" in str(info.value) and "got" in str(info.value)


def test_constructor_arguments_are_named(tmp_path):
    with pytest.raises(EncoderContractError, match="constructor|accept --model-args"):
        load_encoder(_file(tmp_path, GOOD), {"width": 3})


def test_older_template_encoder_is_adapted(tmp_path):
    body = GOOD.replace("def forward(self, audio, audio_attention_mask=None):", "def forward(self, audio):") \
               .replace("return self.proj(frames), None", "return self.proj(frames)") \
               .replace("self.output_dim = dim", "self.output_dim = dim\n        self.sampling_rate = 16000\n        self.hop_size_in_ms = 10")
    encoder = load_encoder(_file(tmp_path, body))
    assert validate_encoder(encoder)["arity"] == 1
    frozen = FrozenEncoder(encoder)
    features, mask = frozen(torch.randn(2, 1600), None)
    assert features.shape == (2, 10, 8) and mask.shape == (2, 10) and bool(mask.all())


def test_frozen_encoder_has_no_gradients_and_stays_in_eval(tmp_path):
    frozen = FrozenEncoder(load_encoder(_file(tmp_path, GOOD)))
    frozen.train()
    assert not frozen.inner.training
    assert all(not p.requires_grad for p in frozen.parameters())
    features, _ = frozen(torch.randn(1, 3200), None)
    assert not features.requires_grad


def test_logmel_mask_and_padding_invariance():
    encoder = LogMelEncoder()
    audio = torch.randn(2, 32000)
    audio[1, 16000:] = 0
    mask = torch.ones(2, 32000, dtype=torch.long)
    mask[1, 16000:] = 0
    features, frame_mask = encoder(audio, mask)
    alone, alone_mask = encoder(audio[1:, :16000], None)
    # 10 ms hop, stack 4: 1 s -> 100 frames -> 25 stacked frames; 2 s -> 50.
    assert frame_mask.sum(-1).tolist() == [50, 25]
    assert alone.shape[1] == 25 and int(alone_mask.sum()) == 25
    assert torch.allclose(features[1, :25], alone[0], atol=1e-5)
