"""wav2vec 2.0 / HuBERT encoder (transformers), 50 frames per second, mask from the conv output lengths.

    lalmbench check examples/encoders/wav2vec2_encoder.py                                   # facebook/wav2vec2-base
    lalmbench check examples/encoders/wav2vec2_encoder.py --model-args '{"model_type": "hubert", "pretrained": "facebook/hubert-base-ls960"}'
    lalmbench check examples/encoders/wav2vec2_encoder.py --model-args '{"pretrained": null}'   # tiny, random

Checkpoints whose feature extractor uses group norm (wav2vec2-base, hubert-base) were trained without an
attention mask on zero-padded batches; like Hugging Face, this wrapper passes the mask only to
layer-norm checkpoints, so for group-norm ones `lalmbench check` warns that padding changes the features.
"""

from __future__ import annotations

import torch
from torch import nn

MODEL_TYPES = ("wav2vec2", "hubert")


class Wav2Vec2Encoder(nn.Module):
    def __init__(self, pretrained: str | None = "facebook/wav2vec2-base", model_type: str = "wav2vec2",
                 normalize: bool | None = None):
        super().__init__()
        import transformers

        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        prefix = "Wav2Vec2" if model_type == "wav2vec2" else "Hubert"
        model_class = getattr(transformers, f"{prefix}Model")
        if pretrained:
            self.model = model_class.from_pretrained(pretrained)
            if normalize is None:  # follow the checkpoint's own preprocessing (do_normalize)
                extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(pretrained)
                normalize = bool(extractor.do_normalize)
        else:  # a tiny random model with the real conv front-end strides, for offline tests
            config = getattr(transformers, f"{prefix}Config")(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                conv_dim=(32,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=32)
            self.model = model_class(config)
        self.normalize = True if normalize is None else normalize
        self.use_mask = self.model.config.feat_extract_norm == "layer"
        self.output_dim = self.model.config.hidden_size

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        audio = audio.float()
        if audio_attention_mask is None:
            audio_attention_mask = torch.ones_like(audio, dtype=torch.long)
        keep = (audio_attention_mask != 0).to(audio.dtype)
        lengths = keep.sum(-1).long()
        if self.normalize:  # zero mean, unit variance over each clip's valid samples (Wav2Vec2FeatureExtractor)
            count = keep.sum(-1, keepdim=True).clamp(min=1)
            mean = (audio * keep).sum(-1, keepdim=True) / count
            var = (((audio - mean) * keep) ** 2).sum(-1, keepdim=True) / count
            audio = (audio - mean) / torch.sqrt(var + 1e-7)
        audio = audio * keep
        # The conv front-end needs 400 samples (25 ms) for one frame: pad shorter input with zeros.
        if audio.shape[-1] < 400:
            audio = nn.functional.pad(audio, (0, 400 - audio.shape[-1]))
            keep = nn.functional.pad(keep, (0, 400 - keep.shape[-1]))
        mask_in = keep.long() if self.use_mask else None
        hidden = self.model(audio, attention_mask=mask_in).last_hidden_state
        frames = self.model._get_feat_extract_output_lengths(lengths.clamp(min=400))
        mask = (torch.arange(hidden.shape[1], device=audio.device)[None] < frames[:, None]).long()
        return hidden, mask
