"""Load an encoder class from a `.py` file or a dotted path and build it with keyword arguments.

File: exactly one module attribute whose name ends in `Encoder` (classes imported into the file count
too, as in the published system). Dotted path: `package.module.ClassName`. `hear:MODULE`: a HEAR-API
module wrapped by `encoders.hear.HearEncoder`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import torch

from lalmbench.encoders.hear import hear_display_name, hear_encoder_class, is_hear_spec
from lalmbench.errors import EncoderContractError


def _load_from_file(path: Path):
    module_name = f"lalmbench_user_encoder_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise EncoderContractError("load", "an importable Python file", str(path), "pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's module failed to import: say so, with the cause
        raise EncoderContractError("import", f"{path} to import", f"{type(exc).__name__}: {exc}",
                                   "fix the error in the encoder file (run it with python to see the traceback)"
                                   ) from exc
    candidates = sorted(name for name in vars(module) if name.endswith("Encoder") and not name.startswith("_"))
    if len(candidates) != 1:
        raise EncoderContractError(
            "class name", f"exactly one attribute whose name ends in 'Encoder' in {path.name}",
            f"{len(candidates)}: {candidates}",
            "rename your class to end in 'Encoder' and import other *Encoder classes under another name"
            if not candidates else "keep exactly one *Encoder attribute (import others as modules)")
    return getattr(module, candidates[0])


def _load_from_dotted(path: str):
    module_path, _, attribute = path.rpartition(".")
    if not module_path:
        raise EncoderContractError("load", "a .py file or a dotted path package.module.ClassName", repr(path),
                                   "check the spelling; a file path must exist")
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise EncoderContractError("import", f"module {module_path!r} to import", f"{type(exc).__name__}: {exc}",
                                   "install the package that provides it, or pass a .py file") from exc
    if not hasattr(module, attribute):
        raise EncoderContractError("load", f"attribute {attribute!r} in {module_path}", "no such attribute",
                                   f"available: {sorted(n for n in vars(module) if not n.startswith('_'))[:20]}")
    return getattr(module, attribute)


def resolve_encoder_class(spec: str):
    if is_hear_spec(spec):
        return hear_encoder_class(spec)
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise EncoderContractError("load", "an existing encoder file", f"{spec} (no such file)",
                                       "check the path")
        return _load_from_file(path)
    return _load_from_dotted(spec)


def load_encoder(spec: str, model_args: dict | None = None) -> torch.nn.Module:
    """Build the encoder named by `spec` with `model_args`; the contract is checked separately."""
    cls = resolve_encoder_class(spec)
    if not callable(cls):
        raise EncoderContractError("nn.Module", "a class", type(cls).__name__, "point to the encoder class")
    try:
        encoder = cls(**(model_args or {}))
    except TypeError as exc:
        raise EncoderContractError("constructor", f"{getattr(cls, '__name__', cls)} to accept --model-args "
                                   f"{sorted((model_args or {}).keys())}", str(exc),
                                   "pass only keyword arguments the constructor takes") from exc
    if not isinstance(encoder, torch.nn.Module):
        raise EncoderContractError("nn.Module", "an instance of torch.nn.Module", type(encoder).__name__,
                                   "subclass torch.nn.Module")
    return encoder


def encoder_display_name(spec: str) -> str:
    if is_hear_spec(spec):
        return hear_display_name(spec)
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        return path.stem
    return spec.rsplit(".", 1)[-1]


def encoder_identity(spec: str, model_args: dict | None = None) -> dict:
    """What the encoder's results depend on: the file content (or module and class) and its arguments."""
    path = Path(spec)
    if path.is_file():
        source = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    else:
        cls = resolve_encoder_class(spec)
        source = {"class": spec}
        try:
            source["sha256"] = hashlib.sha256(inspect.getsource(inspect.getmodule(cls)).encode()).hexdigest()
        except (TypeError, OSError):
            pass
    return {"encoder": source, "model_args": dict(model_args or {})}
