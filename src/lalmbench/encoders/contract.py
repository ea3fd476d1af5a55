"""The encoder contract (docs/protocol.md, "What the encoder must be"), checked before any training.

`validate_encoder` runs the official checker's checks and raises EncoderContractError naming the
failed check, what was expected and what came back. `FrozenEncoder` wraps a valid encoder: requires_grad
False, no_grad, and the older one-tensor template adapted to (features, None). Whether the encoder runs in
train mode during training depends on the protocol (FrozenEncoder.follow_train_mode).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from lalmbench.devices import module_device
from lalmbench.errors import EncoderContractError


# The checks `validate_encoder` runs, in order; EncoderContractError.check is one of these names.
OFFICIAL_CHECKS = ("nn.Module", "output_dim", "forward signature", "sampling_rate", "hop_size_in_ms",
                   "forward call", "output tuple", "features type", "features dims", "batch size", "feature dim",
                   "mask dims", "mask frames")


def forward_arity(encoder: nn.Module) -> int:
    """Positional parameters of forward (without self): 2 for the current contract, 1 for the old one."""
    params = [p for p in inspect.signature(encoder.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(params)


def call_encoder(encoder: nn.Module, audio: torch.Tensor, mask: torch.Tensor | None):
    """Call either contract style and return (features, feature_mask or None)."""
    if forward_arity(encoder) >= 2:
        return encoder(audio, mask)
    return encoder(audio), None


def validate_encoder(encoder: nn.Module, batch: int = 3, samples: int = 50_000, *,
                     facts: dict | None = None, keep_mode: bool = False) -> dict:
    """Run the official checks on `encoder`; return facts found (output_dim, frames) or raise.

    `facts`, when given, is filled as the checks go (arity, output type, shapes), so a caller that
    reports every check can show what was measured even when a later check raises.

    The check's forward runs in eval mode, unless `keep_mode`: then in the mode the encoder is in, as
    the published checker runs it when it builds the model (protocol official). A freshly built module
    is in train mode, so its BatchNorm statistics take one update from the random input and its
    dropout draws from the random generator, before training starts.
    """
    facts = {} if facts is None else facts
    if not isinstance(encoder, nn.Module):
        raise EncoderContractError("nn.Module", "an instance of torch.nn.Module", type(encoder).__name__,
                                   "subclass torch.nn.Module")
    output_dim = getattr(encoder, "output_dim", None)
    if not isinstance(output_dim, int) or isinstance(output_dim, bool) or output_dim < 1:
        raise EncoderContractError("output_dim", "an int attribute output_dim >= 1 (the feature size D)",
                                   repr(output_dim), "set self.output_dim = D in __init__")
    facts["output_dim"] = output_dim
    arity = forward_arity(encoder)
    facts["arity"] = arity
    if arity not in (1, 2):
        raise EncoderContractError("forward signature", "forward(audio, audio_attention_mask)",
                                   f"{arity} positional parameters", "define forward(self, audio, audio_attention_mask=None)")
    if arity == 1:
        for attribute in ("sampling_rate", "hop_size_in_ms"):
            if not hasattr(encoder, attribute):
                raise EncoderContractError(attribute, f"attribute {attribute} on a one-argument (older template) encoder",
                                           "missing", f"set self.{attribute}, or take (audio, audio_attention_mask)")
        rate = getattr(encoder, "sampling_rate")
        if rate != 16_000:
            raise EncoderContractError("sampling_rate", "16000", repr(rate), "resample inside the encoder or accept 16 kHz input")
    device = module_device(encoder)  # where the official checker puts its input
    audio = torch.randn(batch, samples, device=device)
    was_training = encoder.training
    if not keep_mode:
        encoder.eval()
    try:
        with torch.no_grad():
            output = encoder(audio, None) if arity == 2 else encoder(audio)
    except Exception as exc:
        raise EncoderContractError("forward call", f"forward to run on randn({batch}, {samples})",
                                   f"{type(exc).__name__}: {exc}", "run the encoder by hand on that input") from exc
    finally:
        encoder.train(was_training)
    facts["output_type"] = type(output).__name__ + (f" of length {len(output)}" if isinstance(output, (tuple, list)) else "")
    if arity == 2:
        if not isinstance(output, (tuple, list)) or len(output) != 2:
            got = f"{type(output).__name__}" + (f" of length {len(output)}" if isinstance(output, (tuple, list)) else "")
            raise EncoderContractError("output tuple", "a 2-tuple (features, feature_mask)", got,
                                       "return features, mask (mask may be None)")
        features, mask = output
    else:
        features, mask = output, None
    if isinstance(features, torch.Tensor):
        facts["features_shape"] = tuple(features.shape)
    facts["mask_shape"] = tuple(mask.shape) if isinstance(mask, torch.Tensor) else None
    if not isinstance(features, torch.Tensor):
        raise EncoderContractError("features type", "a torch.Tensor", type(features).__name__, "return a tensor")
    if features.dim() != 3:
        raise EncoderContractError("features dims", "3-D features [B, T', D]", f"shape {tuple(features.shape)}",
                                   "return [batch, frames, dim]")
    if features.shape[0] != batch:
        raise EncoderContractError("batch size", f"batch dimension {batch}", f"{features.shape[0]}",
                                   "keep the batch dimension first")
    if features.shape[-1] != output_dim:
        if features.shape[1] == output_dim:  # [B, D, T'], the layout of Conv1d outputs
            fix = (f"the features look transposed: [B, D, T'] = {list(features.shape)} with D = output_dim in "
                   f"dimension 1; return features.transpose(1, 2) ([B, T', D])")
        else:
            fix = "set output_dim to the real feature size"
        raise EncoderContractError("feature dim", f"last dimension == output_dim ({output_dim})",
                                   f"{features.shape[-1]}", fix)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            got = f"shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise EncoderContractError("mask dims", "None or a 2-D mask [B, T']", got, "return a [batch, frames] mask or None")
        if tuple(mask.shape) != tuple(features.shape[:2]):
            raise EncoderContractError("mask frames", f"mask shape {tuple(features.shape[:2])} (batch, frames of the features)",
                                       f"{tuple(mask.shape)}", "compute the mask on the output frame rate")
    facts.update({"output_dim": output_dim, "frames": int(features.shape[1]), "arity": arity})
    return {"output_dim": output_dim, "frames": int(features.shape[1]), "arity": arity}


class FrozenEncoder(nn.Module):
    """A frozen view of a user's encoder: its weights never change, and it always returns (features, mask).

    `follow_train_mode` decides what `train()` does to the encoder (AudioLLM sets it from the protocol):

    - False (protocol corrected): the encoder stays in eval mode, so training sees the features that
      evaluation sees.
    - True (protocol official): the encoder follows the model into train mode, as in the published
      system, whose trainer puts the whole model in train mode every step: dropout and layerdrop are
      active, BatchNorm normalizes with batch statistics and updates its running statistics, and
      evaluation (eval mode) uses the statistics training left. The weights still never change: no
      gradients, no_grad. The buffers training changes are `mutable_state()`; checkpoints keep them.
    """

    def __init__(self, encoder: nn.Module, follow_train_mode: bool = False):
        super().__init__()
        self.inner = encoder
        self.output_dim = int(encoder.output_dim)
        self.arity = forward_arity(encoder)
        self.follow_train_mode = follow_train_mode
        for parameter in self.inner.parameters():
            parameter.requires_grad_(False)
        self.inner.eval()

    def train(self, mode: bool = True):
        super().train(mode and self.follow_train_mode)
        return self

    def mutable_state(self) -> dict[str, torch.Tensor]:
        """The encoder tensors training may change (names within `inner`, live tensors, not copies).

        With follow_train_mode: the encoder's persistent buffers (BatchNorm running statistics and
        batch counters, and whatever else its train-mode forward updates). Otherwise nothing changes.
        """
        if not self.follow_train_mode:
            return {}
        parameters = {name for name, _ in self.inner.named_parameters()}
        return {name: tensor for name, tensor in self.inner.state_dict(keep_vars=True).items()
                if name not in parameters and isinstance(tensor, torch.Tensor)}

    def copy_mutable_state(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self.mutable_state().items()}

    @torch.no_grad()
    def load_mutable_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in self.mutable_state().items():
            tensor.copy_(state[name])

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None):
        features, mask = call_encoder(self.inner, audio, audio_attention_mask)
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
        return features, mask.to(device=features.device).long()
