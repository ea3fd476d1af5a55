"""HEAR-API modules as encoders: `lalmbench run hear:MODULE` (also `check` and `package`).

A HEAR module (https://hearbenchmark.com/hear-api.html) offers `load_model(model_file_path="")`,
whose model has `sample_rate` and `timestamp_embedding_size`, and
`get_timestamp_embeddings(audio [B, samples], model) -> (embeddings [B, T', D], timestamps [B, T'] in ms)`.
`HearEncoder` makes one a challenge encoder:

    16 kHz audio [B, samples] + mask --(resampled to model.sample_rate, as the official resampler)-->
    get_timestamp_embeddings --> features [B, T', timestamp_embedding_size]
                                 frame mask: the frame's timestamp (its centre) lies inside the clip

MODULE is an importable module name (`hearbaseline`, `hearbaseline.wav2vec2`) or a .py file. Keyword
arguments (`--model-args`) go to `load_model`: `model_file_path` first, any others as keywords.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from lalmbench.devices import module_device
from lalmbench.errors import EncoderContractError, EncoderRuntimeError

PREFIX = "hear:"
INPUT_RATE = 16_000
"""The rate the challenge feeds every encoder."""
API = ("load_model", "get_timestamp_embeddings")


def is_hear_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def hear_target(spec: str) -> str:
    """`hear:MODULE` -> MODULE, checked to be non-empty."""
    target = spec[len(PREFIX):].strip()
    if not target:
        raise EncoderContractError("load", "hear:MODULE (a HEAR module name or .py file)", repr(spec),
                                   "name the module, e.g. hear:hearbaseline")
    return target


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or Path(target).is_file()


def import_hear_module(target: str) -> ModuleType:
    """Import the HEAR module `target` (name or .py file) and check that it has the HEAR functions."""
    if _is_file_target(target):
        path = Path(target)
        if not path.is_file():
            raise EncoderContractError("load", "an existing HEAR module file", f"{target} (no such file)",
                                       "check the path")
        name = f"lalmbench_hear_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise EncoderContractError("import", f"{path} to import", f"{type(exc).__name__}: {exc}",
                                           "fix the error in the module (run it with python to see the "
                                           "traceback)") from exc
            sys.modules[name] = module
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise EncoderContractError("import", f"HEAR module {target!r} to import",
                                       f"{type(exc).__name__}: {exc}",
                                       "install the package that provides it (pip install ...), or pass a "
                                       ".py file: hear:path/to/module.py") from exc
    missing = [name for name in API if not callable(getattr(module, name, None))]
    if missing:
        raise EncoderContractError("load", f"a HEAR module with {' and '.join(API)}",
                                   f"{target} lacks {', '.join(missing)}",
                                   "point hear: at the module that defines the HEAR API functions "
                                   "(for a package, often a submodule such as hearbaseline.wav2vec2)")
    return module


def hear_display_name(spec: str) -> str:
    """`hear:pkg.mod` -> `hear-mod`; `hear:path/to/mod.py` -> `hear-mod` (a run directory name)."""
    target = hear_target(spec)
    stem = Path(target).stem if _is_file_target(target) else target.rsplit(".", 1)[-1]
    return f"hear-{stem}"


class HearEncoder(nn.Module):
    """A HEAR module's timestamp embeddings as encoder frames. Built by `hear_encoder_class(spec)`.

    output_dim = model.timestamp_embedding_size. Audio arrives at 16 kHz and is resampled to
    model.sample_rate when that differs. A frame counts as audio when its timestamp (HEAR: the centre of
    the frame, in ms) is before the end of the clip; a clip with any audio keeps at least its first frame.
    """

    hear_module: str = ""
    """The MODULE of `hear:MODULE`; set on the subclass `hear_encoder_class` returns."""

    def __init__(self, model_file_path: str = "", **load_kwargs):
        super().__init__()
        model = self.api.load_model(model_file_path, **load_kwargs)
        for attribute in ("sample_rate", "timestamp_embedding_size"):
            value = getattr(model, attribute, None)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EncoderContractError(
                    "output_dim" if attribute == "timestamp_embedding_size" else "sampling_rate",
                    f"model.{attribute}, a positive int (HEAR API)", repr(value),
                    f"the HEAR module's load_model must return a model with {attribute}")
        self.model = model  # an nn.Module becomes a submodule: frozen and moved with this encoder
        self.model_rate = int(model.sample_rate)
        self.output_dim = int(model.timestamp_embedding_size)
        self.sampling_rate = INPUT_RATE

    @property
    def api(self) -> ModuleType:
        # looked up, not stored: a module object in the encoder would stop it being copied or pickled
        return import_hear_module(self.hear_module)

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        from lalmbench.data.resample import resample_sinc

        if audio.dim() == 1:
            audio = audio[None]
        audio = audio.float()
        batch, samples = audio.shape
        if audio_attention_mask is None:
            lengths = torch.full((batch,), samples, device=audio.device)
        else:
            lengths = audio_attention_mask.to(audio.device).long().sum(-1)
        model_audio = resample_sinc(audio, INPUT_RATE, self.model_rate)
        device = module_device(self.model, None) if isinstance(self.model, nn.Module) else None
        if device is not None:
            model_audio = model_audio.to(device)
        embeddings, timestamps = self.api.get_timestamp_embeddings(model_audio, self.model)
        embeddings = torch.as_tensor(embeddings).to(device=audio.device, dtype=torch.float32)
        timestamps = torch.as_tensor(timestamps).to(device=audio.device, dtype=torch.float64)
        if embeddings.dim() != 3 or embeddings.shape[0] != batch:
            raise EncoderRuntimeError(
                f"HEAR module {self.hear_module}: get_timestamp_embeddings returned embeddings of shape "
                f"{tuple(embeddings.shape)} for {batch} clips; the HEAR API asks for [n_sounds, n_timestamps, "
                "embedding_size]")
        if timestamps.dim() == 1:  # some modules give one row for the whole batch
            timestamps = timestamps[None].expand(batch, -1)
        if tuple(timestamps.shape) != tuple(embeddings.shape[:2]):
            raise EncoderRuntimeError(
                f"HEAR module {self.hear_module}: timestamps of shape {tuple(timestamps.shape)} do not match "
                f"embeddings {tuple(embeddings.shape)}; the HEAR API asks for [n_sounds, n_timestamps] in ms")
        clip_ms = lengths.to(torch.float64) * (1000.0 / INPUT_RATE)
        mask = timestamps < clip_ms[:, None]
        if mask.shape[1]:
            mask[:, 0] |= lengths > 0
        return embeddings, mask.long()


def hear_encoder_class(spec: str) -> type[HearEncoder]:
    """The encoder class for `hear:MODULE`: imports the module now, so a bad name fails at load time.

    The class claims the HEAR module as its module, so the run identity (which hashes the encoder class's
    module and the local modules it imports, or records an installed package's version) follows the
    HEAR module's code, not this wrapper's.
    """
    target = hear_target(spec)
    module = import_hear_module(target)
    return type("HearEncoder", (HearEncoder,), {"hear_module": target, "__module__": module.__name__,
                                                "__doc__": f"HEAR module {target} as an encoder."})
