"""Encoder-feature cache: each clip's encoder output computed once and reused (TrainConfig.feature_cache).

The encoder is frozen, so the features of a clip are a function of the encoder (its code and
arguments), of how it computes (train or eval mode, device, autocast precision) and of the exact
samples it receives. The cache key is therefore

    namespace = hash(encoder identity, model_args and the files they name, sample rate, torch version)
    clip key  = hash(compute context, shard, key, the float32 samples of the clip)

The namespace names one directory per encoder; the compute context (train or eval mode, device and,
on a GPU, its name and the TF32 and determinism switches, autocast dtype) keeps apart features that
the same encoder computes differently, so a bf16 run never reads what an fp32 run stored.

Hashing the samples themselves (a few ms per 30 s clip) covers everything that shapes them: decoding,
resampling and the random training crop. A clip longer than `crop_audio_length` gets another crop in
every epoch (the crop start is drawn from (seed, epoch, clip)), so it hits only when the same crop
comes back; a clip no longer than the crop is never cut, its samples are the same in every epoch and
in every run, and it hits from its second use on. With the protocol's 30 s crop that is almost every
training clip.

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
entries are not stored). `disk` writes one file per clip under `<root>/<namespace>/`, the root being
`--cache-dir` or `<data home>/feature_cache` (`feature_cache_root`): every run of the same encoder
reads what earlier runs stored, whatever its other settings (`max_steps`, the decoder, the tasks).
Several processes may fill one directory at once: an entry is written to a temporary file in its
own directory and renamed into place (readers see the whole entry or none), and it carries its key,
shape and a checksum of its bytes, so a torn or damaged file is detected, recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zlib
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from lalmbench.devices import module_device
from lalmbench.errors import ConfigError
from lalmbench.io_utils import current_umask

log = logging.getLogger("lalmbench")
DEFAULT_MAX_BYTES = 8 * 2**30

# A disk entry: MAGIC, the header's length (4 bytes, little endian), the header (JSON: key, dtype, shape,
# CRC-32 of the payload), the payload (the tensor's bytes, row major).
ENTRY_MAGIC = b"lalmbench feature cache entry 1\n"
ENTRY_SUFFIX = ".features"
_DTYPES = {str(dtype): dtype for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}


def feature_cache_root(config) -> Path:
    """Where `feature_cache: disk` keeps its entries: `cache_dir`, else `<data home>/feature_cache`."""
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    from lalmbench.data.shards import data_home

    return data_home(config.data_home) / "feature_cache"


def namespace_identity(encoder_identity: dict, model_args: dict | None, sample_rate: int,
                       model_arg_files: dict | None = None) -> dict:
    """What an encoder's features depend on besides the clip: its code (identity.encoder_identity), its
    arguments and the content of the files they name, the sample rate it receives, the torch version."""
    return {"encoder": encoder_identity, "model_args": model_args or {}, "model_arg_files": model_arg_files or {},
            "sample_rate": sample_rate, "torch": torch.__version__}


def cache_namespace(encoder_identity: dict, model_args: dict | None, sample_rate: int,
                    model_arg_files: dict | None = None) -> str:
    text = json.dumps(namespace_identity(encoder_identity, model_args, sample_rate, model_arg_files),
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    try:
        enabled, dtype = torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch before 2.4: one function per device type
        if device_type == "cpu":
            enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return dtype if enabled else None


def compute_context(encoder) -> str:
    """How `encoder` computes right now: mode, device (on a GPU its name, TF32 and determinism switches),
    autocast dtype. Part of every clip key: the same samples computed otherwise are another entry."""
    device = module_device(encoder)
    parts = ["train" if encoder.training else "eval", device.type]
    if device.type == "cuda":
        parts += [torch.cuda.get_device_name(device), f"tf32={torch.backends.cuda.matmul.allow_tf32}",
                  f"cudnn_tf32={torch.backends.cudnn.allow_tf32}",
                  f"deterministic={torch.are_deterministic_algorithms_enabled()}"]
    autocast = _autocast_dtype(device.type)
    parts.append(f"autocast={autocast}" if autocast is not None else "autocast=off")
    return "|".join(parts)


def clip_digest(ref, samples: torch.Tensor, context: str = "") -> str:
    """Key of one clip as the encoder receives it: the compute context, its origin and the exact samples
    (crop included)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{context}\0{getattr(ref, 'shard', '')}\0{getattr(ref, 'key', '')}\0".encode())
    digest.update(samples.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


# -- disk entries -------------------------------------------------------------------------------------------
def _entry_parts(digest: str, features: torch.Tensor) -> tuple[bytes, memoryview]:
    """(ENTRY_MAGIC + header length + header, payload) of one disk entry; the payload is not copied."""
    if str(features.dtype) not in _DTYPES:
        features = features.float()
    payload = memoryview(features.contiguous().reshape(-1).view(torch.uint8).numpy())
    # CRC-32 (zlib's, several GB/s) finds damage; the byte count finds truncation.
    header = json.dumps({"key": digest, "dtype": str(features.dtype), "shape": list(features.shape),
                         "crc32": zlib.crc32(payload)}).encode()
    return ENTRY_MAGIC + len(header).to_bytes(4, "little") + header, payload


def encode_entry(digest: str, features: torch.Tensor) -> bytes:
    """The bytes of one disk entry (ENTRY_MAGIC, header, payload)."""
    prefix, payload = _entry_parts(digest, features)
    return prefix + payload.tobytes()


def decode_entry(data: bytes | bytearray, digest: str) -> torch.Tensor:
    """The tensor of a disk entry; ValueError saying what is wrong when it is not a whole, intact entry
    for `digest` (truncated, damaged, another key, another format). A bytearray is used in place."""
    view = memoryview(data)
    if view[:len(ENTRY_MAGIC)] != ENTRY_MAGIC:
        raise ValueError("not a feature cache entry (no header)")
    start = len(ENTRY_MAGIC) + 4
    length = int.from_bytes(view[len(ENTRY_MAGIC):start], "little")
    try:
        header = json.loads(bytes(view[start:start + length]))
        dtype, shape, key, checksum = _DTYPES[header["dtype"]], header["shape"], header["key"], header["crc32"]
        expected = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable header ({type(exc).__name__}: {exc})") from None
    if key != digest:
        raise ValueError(f"it holds key {key}")
    payload = view[start + length:]
    if len(payload) != expected:
        raise ValueError(f"{len(payload)} bytes of features where shape {shape} needs {expected} (truncated)")
    if zlib.crc32(payload) != checksum:
        raise ValueError("its checksum does not match its bytes (damaged)")
    if not expected:
        return torch.empty(shape, dtype=dtype)
    if isinstance(data, bytes):
        payload = bytearray(payload)  # torch wants a writable buffer
    return torch.frombuffer(payload, dtype=torch.uint8).view(dtype).reshape(shape)


def _read_file(path: Path) -> bytearray:
    with open(path, "rb") as handle:
        data = bytearray(os.fstat(handle.fileno()).st_size)
        read = handle.readinto(data)
    return data[:read] if read < len(data) else data


class FeatureCache:
    """callable(batch) -> (features [B, T', D], mask [B, T']): the AudioLLM feature hook."""

    def __init__(self, encoder, namespace: str, mode: str = "memory", directory: str | Path | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, identity: dict | None = None):
        """`directory`: the root holding one folder per namespace (disk mode); `identity`: what the
        namespace hashes, written beside the entries as identity.json so a person can tell the folders apart."""
        if mode not in ("memory", "disk"):
            raise ValueError(f"feature cache mode must be memory or disk, got {mode!r}")
        if mode == "disk" and directory is None:
            raise ValueError("a disk feature cache needs a directory")
        self.encoder, self.namespace, self.mode = encoder, namespace, mode
        self.directory = Path(directory) / namespace if mode == "disk" else None
        if self.directory is not None:
            self._prepare_directory(identity)
        self.max_bytes = max_bytes
        self.memory: dict[str, torch.Tensor] = {}
        self.bytes = 0
        self.hits = self.misses = self.not_stored = self.recomputed = self.encoder_calls = 0
        self._write_failed = False

    def _prepare_directory(self, identity: dict | None) -> None:
        from lalmbench.io_utils import atomic_write_json

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if identity is not None and not (self.directory / "identity.json").is_file():
                atomic_write_json(self.directory / "identity.json", identity)
        except OSError as exc:  # OutputDirError is one too
            raise ConfigError(
                f"cannot use the feature cache directory {self.directory}: {exc}. Pass --cache-dir DIR on a "
                f"writable disk, or --feature-cache memory (nothing written).") from None

    # -- storage ----------------------------------------------------------------------------------------
    def _path(self, digest: str) -> Path:
        return self.directory / digest[:2] / f"{digest}{ENTRY_SUFFIX}"

    def _get(self, digest: str) -> torch.Tensor | None:
        if self.mode == "memory":
            return self.memory.get(digest)
        path = self._path(digest)
        try:
            data = _read_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("feature cache: cannot read %s (%s); recomputing it", path, exc)
            self.recomputed += 1
            return None
        try:
            return decode_entry(data, digest)
        except ValueError as exc:  # a torn or damaged file: recompute, and the new entry replaces it
            log.warning("feature cache: %s is not a valid entry (%s); recomputing it", path, exc)
            self.recomputed += 1
            return None

    def _put(self, digest: str, features: torch.Tensor) -> None:
        features = features.detach().to("cpu").clone()
        size = features.numel() * features.element_size()
        if self.mode == "memory":
            if self.bytes + size > self.max_bytes:
                self.not_stored += 1
                return
            self.memory[digest] = features
            self.bytes += size
            return
        path = self._path(digest)
        tmp = None
        try:
            path.parent.mkdir(exist_ok=True)
            # A temporary name unique to this writer, in the entry's own directory (a rename within one
            # file system is atomic): two processes storing the same clip each rename a whole entry, and
            # the last one stays. No fsync: an entry torn by a crash fails its checksum and is recomputed.
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            prefix, payload = _entry_parts(digest, features)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o666 & ~current_umask())  # mkstemp's 0600 -> the usual permissions
                handle.write(prefix)
                handle.write(payload)
            os.replace(tmp, path)
        except OSError as exc:  # disk full, permissions: the run goes on, this clip is just not stored
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            self.not_stored += 1
            if not self._write_failed:
                self._write_failed = True
                log.warning("feature cache: cannot write %s (%s); features that cannot be stored are "
                            "recomputed when they come again", path, exc)
            return
        self.bytes += size

    # -- the hook -------------------------------------------------------------------------------------
    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        audio, audio_mask = batch["audio"], batch["audio_mask"]
        lengths = audio_mask.long().sum(-1).tolist()
        refs = batch.get("refs") or [None] * len(lengths)
        context = compute_context(self.encoder)
        digests = [clip_digest(ref, audio[row, :length], context)
                   for row, (ref, length) in enumerate(zip(refs, lengths))]
        found = [self._get(d) for d in digests]
        device = module_device(self.encoder)
        if any(f is None for f in found):
            self.misses += sum(f is None for f in found)
            self.hits += sum(f is not None for f in found)
            self.encoder_calls += 1
            features, mask = self.encoder(audio.to(device), audio_mask.to(device))
            mask = mask.bool()
            for row, (digest, cached) in enumerate(zip(digests, found)):
                if cached is None:
                    self._put(digest, features[row][mask[row]])
            return features, mask.long()
        self.hits += len(found)
        features = pad_sequence(found, batch_first=True)
        mask = (torch.arange(features.shape[1]) < torch.tensor([f.shape[0] for f in found])[:, None]).long()
        return features.to(device, non_blocking=True), mask.to(device)

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {"mode": self.mode, "directory": str(self.directory) if self.directory is not None else None,
                "hits": self.hits, "misses": self.misses, "hit_rate": self.hits / total if total else 0.0,
                "encoder_calls": self.encoder_calls,
                "entries": len(self.memory) if self.mode == "memory" else None, "bytes_stored": self.bytes,
                "not_stored": self.not_stored, "invalid_entries_recomputed": self.recomputed}


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
    device = module_device(encoder)
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


def attach_feature_cache(model, config, encoder_identity: dict, model_args: dict | None,
                         root: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                         model_arg_files: dict | None = None) -> FeatureCache:
    """Install a FeatureCache as `model.feature_hook` for `config.feature_cache` (memory or disk).

    `encoder_identity` is identity.encoder_identity(...) of the encoder; `model_arg_files` the content
    fingerprints of the files its arguments name (identity.model_arg_files, computed when not given).
    A disk cache lives under `root`, by default `feature_cache_root(config)`.

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
    if model_arg_files is None:
        from lalmbench.identity import model_arg_files as fingerprint_files

        model_arg_files = fingerprint_files(model_args)
    identity = namespace_identity(encoder_identity, model_args, config.sample_rate, model_arg_files)
    namespace = cache_namespace(encoder_identity, model_args, config.sample_rate, model_arg_files)
    directory = None
    if config.feature_cache == "disk":
        directory = Path(root) if root is not None else feature_cache_root(config)
    cache = FeatureCache(model.encoder, namespace, config.feature_cache, directory, max_bytes, identity)
    model.feature_hook = cache
    where = f" in {cache.directory}" if cache.directory is not None else ""
    log.info("encoder-feature cache: %s (namespace %s)%s", config.feature_cache, namespace, where)
    return cache
