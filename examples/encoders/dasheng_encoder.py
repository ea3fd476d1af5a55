"""Dasheng encoder (the `dasheng` package, pip install dasheng), 25 frames per second (40 ms).

    lalmbench check examples/encoders/dasheng_encoder.py                          # dasheng_base (downloads)
    lalmbench check examples/encoders/dasheng_encoder.py --model-args '{"pretrained": "dasheng_06B"}'
    lalmbench check examples/encoders/dasheng_encoder.py --model-args '{"pretrained": null}'   # tiny, random

`dasheng` imports torchaudio, which must be the build made for your torch (same version, same CPU/CUDA
flavour); a mismatched torchaudio fails at import with an OSError about _torchaudio.so.
"""

from __future__ import annotations

import torch
from torch import nn

HOP = 160 * 4  # 10 ms mel hop, 4 mel frames per patch
N_FFT = 512


def _import_dasheng():
    try:
        import dasheng
        from dasheng.pretrained import pretrained
    except (ImportError, OSError) as exc:  # OSError: torchaudio built for another torch
        raise ImportError(
            f"dasheng_encoder.py needs the `dasheng` package (pip install dasheng) and the torchaudio "
            f"built for your torch {torch.__version__} (see pytorch.org/get-started; cause: "
            f"{type(exc).__name__}: {exc})") from exc
    return dasheng, pretrained


class DashengEncoder(nn.Module):
    def __init__(self, pretrained: str | None = "dasheng_base"):
        super().__init__()
        dasheng, module = _import_dasheng()
        if pretrained:  # dasheng_base, dasheng_06B, dasheng_12B: weights come from Zenodo on first use
            self.model = getattr(dasheng, pretrained)()
        else:
            self.model = module.Dasheng(embed_dim=32, depth=1, num_heads=2)
        self.output_dim = self.model.embed_dim

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        audio = audio.float()
        if audio_attention_mask is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], device=audio.device)
        else:
            lengths = audio_attention_mask.long().sum(-1)
            audio = audio * (audio_attention_mask != 0)
        # Zeros after every clip, so its last STFT windows see zeros whether it is alone or padded in a
        # batch (the front end reflects at the array's end); x_length masks the extra patches in attention.
        audio = nn.functional.pad(audio, (0, N_FFT))
        features = self.model(audio, x_length=lengths)
        valid = torch.div(lengths, HOP, rounding_mode="floor").clamp(min=1)
        frames = min(int(valid.max()), features.shape[1])
        mask = (torch.arange(frames, device=audio.device)[None] < valid[:, None]).long()
        return features[:, :frames], mask
