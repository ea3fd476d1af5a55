"""Encoder-feature cache: each clip's encoder output computed once and reused (TrainConfig.feature_cache).

The encoder is frozen, so the features of a clip are a function of the encoder (its code and
arguments) and of the exact samples it receives. The cache key is therefore

    namespace = hash(encoder identity, model_args, sample rate)         one per encoder
    clip key  = hash(shard, key, the float32 samples of the clip)       one per (clip, crop)

Hashing the samples themselves (a few ms per 30 s clip) covers everything that shapes them: decoding,
resampling and the random training crop. A clip longer than `crop_audio_length` gets another crop in
every epoch (the crop start is drawn from (seed, epoch, clip)), so it hits only when the same crop
comes back; a clip no longer than the crop is never cut, its samples are the same in every epoch, and
it hits from its second use on. With the protocol's 30 s crop that is almost every training clip.

Exactness: a hit returns the features the encoder computed for the same samples, so the cache is exact
when the encoder is deterministic and a clip's valid frames do not depend on its batch mates (padding).
Encoders that let padding leak into valid frames give features of whichever batch first saw the clip.
On a miss the encoder runs on the whole batch, exactly as without a cache, and every row is stored.

Under protocol official the encoder runs in train mode during training (FrozenEncoder) and the
published layout places every row's text after the batch's whole frame block. The cache then is exact
only for an encoder whose output is the same in train and eval mode (no active dropout, layerdrop or
BatchNorm) and whose train-mode forward draws no random numbers (a hit skips it, which would shift
later draws), whose valid frames do not depend on padding, and whose longest clip has no masked frames
(so a batch assembled from the store has the encoder's frame count). `attach_feature_cache` checks
these on a probe batch and refuses the cache otherwise (`probe_official_exactness`).

Modes: `memory` keeps features on the CPU in this process (bounded by `max_bytes`; beyond it new
entries are not stored); `disk` writes one file per clip under `<run dir>/feature_cache/<namespace>/`,
kept with the run (a resumed run reads it back), read back when the clip comes again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from lalmbench.errors import ConfigError

log = logging.getLogger("lalmbench")
DEFAULT_MAX_BYTES = 8 * 2**30


def cache_namespace(encoder_identity: dict, model_args: dict | None, sample_rate: int) -> str:
    text = json.dumps({"encoder": encoder_identity, "model_args": model_args or {}, "sample_rate": sample_rate},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def clip_digest(ref, samples: torch.Tensor) -> str:
    """Key of one clip as the encoder receives it: its origin and the exact samples (crop included)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{getattr(ref, 'shard', '')}\0{getattr(ref, 'key', '')}\0".encode())
    digest.update(samples.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """callable(batch) -> (features [B, T', D], mask [B, T']): the AudioLLM feature hook."""

    def __init__(self, encoder, namespace: str, mode: str = "memory", directory: str | Path | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        if mode not in ("memory", "disk"):
            raise ValueError(f"feature cache mode must be memory or disk, got {mode!r}")
        if mode == "disk" and directory is None:
            raise ValueError("a disk feature cache needs a directory")
        self.encoder, self.namespace, self.mode = encoder, namespace, mode
        self.directory = Path(directory) / namespace if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.memory: dict[str, torch.Tensor] = {}
        self.bytes = 0
        self.hits = self.misses = self.not_stored = 0

    # -- storage ----------------------------------------------------------------------------------------
    def _path(self, digest: str) -> Path:
        return self.directory / digest[:2] / f"{digest}.pt"

    def _get(self, digest: str) -> torch.Tensor | None:
        if self.mode == "memory":
            return self.memory.get(digest)
        path = self._path(digest)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: recompute and overwrite it
            log.warning("feature cache: unreadable %s (%s); recomputing", path, exc)
            return None

    def _put(self, digest: str, features: torch.Tensor) -> None:
        features = features.detach().to("cpu").clone()
        if self.mode == "memory":
            size = features.numel() * features.element_size()
            if self.bytes + size > self.max_bytes:
                self.not_stored += 1
                return
            self.memory[digest] = features
            self.bytes += size
            return
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(features, tmp)
        os.replace(tmp, path)
        self.bytes += features.numel() * features.element_size()

    # -- the hook -------------------------------------------------------------------------------------
    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        audio, audio_mask = batch["audio"], batch["audio_mask"]
        lengths = audio_mask.long().sum(-1).tolist()
        refs = batch.get("refs") or [None] * len(lengths)
        digests = [clip_digest(ref, audio[row, :length]) for row, (ref, length) in enumerate(zip(refs, lengths))]
        found = [self._get(d) for d in digests]
        device = _device_of(self.encoder)
        if any(f is None for f in found):
            self.misses += sum(f is None for f in found)
            self.hits += sum(f is not None for f in found)
            features, mask = self.encoder(audio.to(device), audio_mask.to(device))
            mask = mask.bool()
            for row, (digest, cached) in enumerate(zip(digests, found)):
                if cached is None:
                    self._put(digest, features[row][mask[row]])
            return features, mask.long()
        self.hits += len(found)
        longest = max(f.shape[0] for f in found)
        features = found[0].new_zeros(len(found), longest, found[0].shape[-1])
        mask = torch.zeros(len(found), longest, dtype=torch.long)
        for row, rows in enumerate(found):
            features[row, : rows.shape[0]] = rows
            mask[row, : rows.shape[0]] = 1
        return features.to(device, non_blocking=True), mask.to(device)

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {"mode": self.mode, "hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / total if total else 0.0, "entries": len(self.memory) if self.mode == "memory"
                else None, "bytes_stored": self.bytes, "not_stored_over_budget": self.not_stored}


def _device_of(module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


# Probe clips for probe_official_exactness: noise of 1.0 s and 0.55 s at 16 kHz, from a fixed generator.
PROBE_SAMPLES = (16_000, 8_800)
# Relative difference below which two encoder outputs count as equal: float rounding between kernels
# (PyTorch's fused eval-mode transformer path, for one) stays far below it; dropout or batch statistics
# do not.
PROBE_TOLERANCE = 1e-4


def _probe_batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    audio = torch.zeros(len(PROBE_SAMPLES), max(PROBE_SAMPLES))
    mask = torch.zeros(len(PROBE_SAMPLES), max(PROBE_SAMPLES), dtype=torch.long)
    for row, samples in enumerate(PROBE_SAMPLES):
        audio[row, :samples] = 0.1 * torch.randn(samples, generator=generator)
        mask[row, :samples] = 1
    return audio.to(device), mask.to(device)


def _generator_states(device: torch.device) -> list[torch.Tensor]:
    """The random generator states an encoder forward on `device` can advance (CPU, and its GPU)."""
    states = [torch.random.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    return float((a.float() - b.float()).abs().max()) / scale


def probe_official_exactness(encoder) -> list[str]:
    """Why a feature cache would not be exact for `encoder` (a FrozenEncoder) under protocol official:
    one line per failed condition, empty when it is exact. Leaves the encoder's mode, buffers and the
    random generators as they were."""
    device = _device_of(encoder)
    audio, audio_mask = _probe_batch(device)
    was_training, follow = encoder.training, encoder.follow_train_mode
    encoder.follow_train_mode = True  # train() below reaches the encoder; its buffers are restored
    saved = encoder.copy_mutable_state()
    problems = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        try:
            encoder.train()
            generators_before = _generator_states(device)
            trained, trained_mask = encoder(audio, audio_mask)
            draws = any(not torch.equal(a, b) for a, b in zip(generators_before, _generator_states(device)))
            encoder.load_mutable_state(saved)
            encoder.eval()
            evaluated, mask = encoder(audio, audio_mask)
            alone, alone_mask = encoder(audio[1:, :PROBE_SAMPLES[1]], audio_mask[1:, :PROBE_SAMPLES[1]])
        finally:
            encoder.load_mutable_state(saved)
            encoder.follow_train_mode = follow
            encoder.train(was_training)
    mask, trained_mask = mask.bool(), trained_mask.bool()
    if trained.shape != evaluated.shape or not torch.equal(mask, trained_mask):
        problems.append(f"its output differs between train mode and eval mode (shapes {tuple(trained.shape)} "
                        f"and {tuple(evaluated.shape)}, or other masks)")
    else:
        difference = _relative_difference(trained[mask], evaluated[mask])
        if difference > PROBE_TOLERANCE:
            problems.append(f"its output differs between train mode (training steps) and eval mode: max "
                            f"difference {difference:.3g} relative to the largest feature (dropout, layerdrop or "
                            f"BatchNorm batch statistics), so cached features would not be those of the step")
    if draws:
        problems.append("its train-mode forward draws from the random generator, so skipping it on a cache hit "
                        "would shift every later random draw (LoRA dropout masks)")
    short = int(mask[1].sum())
    alone_valid = alone[0][alone_mask[0].bool()]
    if alone_valid.shape[0] != short:
        problems.append(f"a clip's valid frames depend on its batch mates' padding ({short} valid frames in a "
                        f"padded batch, {alone_valid.shape[0]} alone; an encoder that returns no mask does this)")
    elif _relative_difference(alone_valid, evaluated[1][mask[1]]) > PROBE_TOLERANCE:
        problems.append("a clip's valid frames change with its batch mates' padding")
    longest_valid, frames = int(mask[0].sum()), mask.shape[1]
    if longest_valid != frames:
        problems.append(f"its mask marks {frames - longest_valid} of the {frames} frames of the longest clip as "
                        f"padding, so a batch assembled from the cache would have another frame count")
    return problems


def attach_feature_cache(model, config, encoder_identity: dict, model_args: dict | None, run_dir: str | Path,
                         max_bytes: int = DEFAULT_MAX_BYTES) -> FeatureCache:
    """Install a FeatureCache as `model.feature_hook` for `config.feature_cache` (memory or disk).

    Under protocol official (the encoder follows the model into train mode) the cache must be exact
    for this encoder (`probe_official_exactness`), else ConfigError.
    """
    if model.encoder.follow_train_mode:
        problems = probe_official_exactness(model.encoder)
        if problems:
            name = encoder_identity.get("file") or encoder_identity.get("class") or type(model.encoder.inner).__name__
            mode = config.feature_cache
            raise ConfigError(
                f"feature_cache {mode!r} would change the results of encoder {name} under protocol official: "
                + "; ".join(problems) + ". Train without the cache (--args '{\"feature_cache\": \"off\"}'), or "
                f"under protocol corrected, where the encoder stays in eval mode (--args '{{\"protocol\": "
                f"\"corrected\", \"feature_cache\": \"{mode}\"}}').")
    namespace = cache_namespace(encoder_identity, model_args, config.sample_rate)
    directory = Path(run_dir) / "feature_cache" if config.feature_cache == "disk" else None
    cache = FeatureCache(model.encoder, namespace, config.feature_cache, directory, max_bytes)
    model.feature_hook = cache
    log.info("encoder-feature cache: %s (namespace %s)", config.feature_cache, namespace)
    return cache
