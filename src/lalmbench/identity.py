"""What a run's results depend on, in two layers: the run directory, reuse and resume are keyed by them.

    training identity    everything the trained weights depend on
      - the encoder: its file and the local modules it imports (their content), or the installed
        package and version that provides it; the installed packages those modules import, by version
      - files and directories named in --model-args (their content) and the arguments themselves
      - the decoder: hub name and commit, or the content of a local directory / .gguf file, or for
        `tiny-random` its generated weights and tokenizer
      - each training dataset's shards: the hub's commit and ETag per file, or size and modification
        time of local files (shards are too large to read at every start)
      - the versions of lalmbench, torch, transformers and peft
      - every training setting (TrainConfig.identity_dict: the protocol included)
    evaluation identity  one per test set: the training identity, the evaluation-only settings
                         (TrainConfig.evaluation_dict), the test set's config and its shards

Changing an evaluation-only setting re-evaluates and never retrains; anything in the training identity
starts a new run. Hashes are of canonical JSON, so the dicts written to run_identity.json explain them.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import site
import sysconfig
from pathlib import Path
from typing import Any

import torch

from lalmbench import __version__
from lalmbench.config import DatasetSpec, EvalTaskConfig, TrainConfig

LIBRARIES = ("torch", "transformers", "peft")
_CHUNK = 1 << 20


def digest(obj: Any) -> str:
    """sha256 of canonical JSON: the hash of an identity dict."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# -- files ------------------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def content_fingerprint(path: Path) -> dict | str:
    """A file's sha256, or for a directory {relative path: sha256} of every file in it (hidden ones too)."""
    if path.is_file():
        return file_sha256(path)
    return {str(p.relative_to(path)): file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def stat_fingerprint(path: Path) -> dict:
    """Size and modification time: cheap for shards of many gigabytes, and changed by any rewrite."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


# -- the encoder ------------------------------------------------------------------------------------------------
@functools.cache
def _installed_roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(site-packages directories, standard library directories)."""
    installed = [*site.getsitepackages(), site.getusersitepackages()]
    paths = sysconfig.get_paths()
    stdlib = [paths["stdlib"], paths["platstdlib"]]
    return tuple(str(Path(p).resolve()) for p in installed), tuple(str(Path(p).resolve()) for p in stdlib)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _package_version(module: str) -> dict | None:
    """{distribution: version} of the installed distribution providing top-level `module`."""
    names = _distributions().get(module.split(".")[0])
    if not names:
        return None
    return {name: importlib.metadata.version(name) for name in sorted(set(names))}


def _classify(origin: str) -> str:
    """'installed', 'stdlib' or 'local' for a module file."""
    resolved = str(Path(origin).resolve())
    installed, stdlib = _installed_roots()
    if any(resolved.startswith(root + os.sep) for root in installed):
        return "installed"
    if any(resolved.startswith(root + os.sep) for root in stdlib):
        return "stdlib"
    return "local"


def _imported_names(path: Path, package: str | None) -> list[str]:
    """Modules a source file imports (`from a import b` names both a and a.b: b may be a submodule)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    names: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if not package:
                    continue
                try:
                    base = importlib.util.resolve_name("." * node.level + base, package)
                except ImportError:
                    continue
            names[base] = None
            names.update((f"{base}.{alias.name}", None) for alias in node.names if alias.name != "*")
    return list(names)


def _find(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None  # a name that is not a module (`from pkg import function`) or cannot be found


def module_sources(root: Path, package: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """({module: sha256} of the local modules `root` imports, directly or through other local modules;
    {distribution: version} of the installed packages they import). The standard library is left out."""
    local: dict[str, str] = {}
    installed: dict[str, str] = {}
    pending = [(root, package)]
    seen_files = {str(root.resolve())}
    while pending:
        path, parent = pending.pop()
        for name in _imported_names(path, parent):
            spec = _find(name)
            if spec is None or not spec.origin or not spec.has_location:
                continue
            kind = _classify(spec.origin)
            if kind == "installed":
                installed.update(_package_version(name) or {})
            elif kind == "local" and str(Path(spec.origin).resolve()) not in seen_files:
                seen_files.add(str(Path(spec.origin).resolve()))
                local[name] = file_sha256(Path(spec.origin))
                is_package = spec.submodule_search_locations is not None
                pending.append((Path(spec.origin), name if is_package else name.rpartition(".")[0] or None))
    return local, installed


def encoder_identity(spec: str) -> dict:
    """The encoder's code: a file with the local modules it imports, or an installed package's version."""
    path = Path(spec)
    if path.is_file():
        local, installed = module_sources(path, None)
        return {"file": path.name, "sha256": file_sha256(path), "local_modules": local, "packages": installed}
    from lalmbench.encoders.loading import resolve_encoder_class

    module = inspect.getmodule(resolve_encoder_class(spec))
    origin = getattr(module, "__file__", None)
    if origin is None:
        return {"class": spec}
    if _classify(origin) == "installed":
        return {"class": spec, "packages": _package_version(module.__name__) or {}}
    package = module.__name__ if Path(origin).name == "__init__.py" else module.__name__.rpartition(".")[0]
    local, installed = module_sources(Path(origin), package or None)
    return {"class": spec, "sha256": file_sha256(Path(origin)), "local_modules": local, "packages": installed}


def model_arg_files(model_args: dict | None) -> dict[str, Any]:
    """{argument value: content fingerprint} for every argument (nested ones too) that names a file or
    directory: a checkpoint edited in place is another encoder."""
    found: dict[str, Any] = {}

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, str) and value and len(value) < 4096:
            path = Path(value).expanduser()
            if path.exists():
                found[value] = content_fingerprint(path)

    visit(model_args or {})
    return found


# -- the decoder ------------------------------------------------------------------------------------------------
def decoder_identity(name: str, model: torch.nn.Module, tokenizer) -> dict:
    """Hub: name and commit. Local directory or .gguf: their content. tiny-random: the generated weights
    and tokenizer (they depend on the seed and on library versions, not on files)."""
    from lalmbench.model.decoder import TINY_RANDOM

    if name == TINY_RANDOM:
        weights = hashlib.sha256()
        for key, tensor in sorted(model.state_dict().items()):
            weights.update(key.encode())
            weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        vocabulary = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else ""
        return {"name": name, "weights_sha256": weights.hexdigest(),
                "tokenizer_sha256": hashlib.sha256(vocabulary.encode()).hexdigest()}
    path = Path(name).expanduser()
    if path.exists():
        return {"name": name, "files": content_fingerprint(path)}
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return {"name": name, "revision": commit}


# -- data -------------------------------------------------------------------------------------------------------
def shards_identity(spec: DatasetSpec, shards: list[Path], home: Path) -> dict:
    """Hub shards: the commit and ETag the client recorded per file (else size and mtime); local shards:
    size and mtime per file."""
    files = {}
    if spec.repo_id:
        from lalmbench.data.download import read_record

        for path in shards:
            relative = str(path.relative_to(home)) if path.is_relative_to(home) else str(path)
            record = read_record(home, relative)
            if record is not None and not record.stale:
                files[relative] = {"commit": record.commit, "etag": record.etag, "size": path.stat().st_size}
            else:
                files[relative] = stat_fingerprint(path)
        return {"repo_id": spec.repo_id, "revision": getattr(spec, "revision", None), "files": files}
    return {"files": {str(path): stat_fingerprint(path) for path in shards}}


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


REPORTED_LIBRARIES = ("torch", "transformers", "peft", "huggingface_hub", "tokenizers", "numpy", "scikit-learn",
                      "jiwer", "webdataset", "soundfile", "soxr", "pydantic", "accelerate", "mecat")


def lalmbench_commit() -> dict:
    """The git commit lalmbench runs from, when it runs from a checkout (an editable install), and whether
    that checkout had uncommitted changes; empty for an installed wheel."""
    import subprocess

    package = Path(__file__).resolve().parent
    try:
        root = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        if not (Path(root) / "src" / "lalmbench").is_dir():  # some other repository around an installed copy
            return {}
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", "src"],
                                capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "uncommitted_changes": bool(status.strip())}


def run_environment() -> dict:
    """What produced a run, for run_summary.json: lalmbench's version and commit, Python and library versions."""
    import platform

    versions = {name: version for name, version in library_versions(REPORTED_LIBRARIES).items()
                if version != "absent"}
    return {"lalmbench_version": __version__, "lalmbench_source": lalmbench_commit(),
            "python": platform.python_version(), "libraries": versions}


# -- the two identities -----------------------------------------------------------------------------------------
def training_identity(encoder: str, model_args: dict | None, config: TrainConfig, decoder: dict,
                      train_shards: dict[str, list[Path]], home: Path) -> dict:
    """Everything the trained weights depend on (module docstring). `decoder` is decoder_identity(...)."""
    return {
        "lalmbench": __version__,
        "libraries": library_versions(),
        "encoder": encoder_identity(encoder),
        "model_args": dict(model_args or {}),
        "model_arg_files": model_arg_files(model_args),
        "decoder": decoder,
        "train_data": {name: shards_identity(config.train_data[name], shards, home)
                       for name, shards in sorted(train_shards.items())},
        "train": config.identity_dict(),
    }


def evaluation_identity(training_hash: str, config: TrainConfig, task: EvalTaskConfig, shards: list[Path],
                        home: Path) -> dict:
    """What one test set's score depends on: the trained weights (by their identity), the evaluation-only
    settings, the test set's config and its shards."""
    return {"training": training_hash, "settings": config.evaluation_dict(), "task": task.model_dump(),
            "test_data": shards_identity(task.data, shards, home)}
