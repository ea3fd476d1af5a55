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


def attach_feature_cache(model, config, encoder_identity: dict, model_args: dict | None, run_dir: str | Path,
                         max_bytes: int = DEFAULT_MAX_BYTES) -> FeatureCache:
    """Install a FeatureCache as `model.feature_hook` for `config.feature_cache` (memory or disk)."""
    namespace = cache_namespace(encoder_identity, model_args, config.sample_rate)
    directory = Path(run_dir) / "feature_cache" if config.feature_cache == "disk" else None
    cache = FeatureCache(model.encoder, namespace, config.feature_cache, directory, max_bytes)
    model.feature_hook = cache
    log.info("encoder-feature cache: %s (namespace %s)", config.feature_cache, namespace)
    return cache
