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
import typing
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
    model_args = dict(model_args or {})
    refused = _refused_keywords(cls, model_args)
    if refused is not None:
        raise refused
    try:
        encoder = cls(**model_args)
    except (TypeError, ValueError) as exc:  # the keywords bind: a value the constructor cannot use
        raise _value_error(cls, model_args, exc) from exc
    if not isinstance(encoder, torch.nn.Module):
        raise EncoderContractError("nn.Module", "an instance of torch.nn.Module", type(encoder).__name__,
                                   "subclass torch.nn.Module")
    return encoder


def _constructor_signature(cls) -> inspect.Signature | None:
    try:
        return inspect.signature(cls)
    except (TypeError, ValueError):  # a builtin or C extension type: nothing to inspect
        return None


def _refused_keywords(cls, model_args: dict) -> EncoderContractError | None:
    """The error for --model-args keywords the constructor has no parameter for, or None when they bind."""
    signature = _constructor_signature(cls)
    if signature is None:
        return None
    try:
        signature.bind(**model_args)
        return None
    except TypeError as exc:
        name = getattr(cls, "__name__", str(cls))
        named = [p.name for p in signature.parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [key for key in model_args if key not in named]
        what = f"{name} does not accept {', '.join(unknown)}" if unknown else f"{name}(**{model_args}) ({exc})"
        return EncoderContractError("constructor", f"{name} to accept --model-args {sorted(model_args)}", what,
                                    f"pass only keyword arguments the constructor takes; it takes: "
                                    f"{', '.join(named) if named else 'none'}")


def _value_error(cls, model_args: dict, exc: Exception) -> EncoderContractError:
    """The constructor accepted the keywords and then failed: name the values, their annotated types and
    the exception, since the cause is most likely a value of the wrong type or range."""
    name = getattr(cls, "__name__", str(cls))
    call = f"{name}({', '.join(f'{k}={v!r}' for k, v in model_args.items())})"
    signature = _constructor_signature(cls)
    parameters = signature.parameters if signature is not None else {}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: fall back to what the signature holds
        hints = {}
    mismatches = []
    for key, value in model_args.items():
        annotation = hints.get(key, parameters[key].annotation if key in parameters else inspect.Parameter.empty)
        if isinstance(annotation, type) and annotation is not inspect.Parameter.empty:
            fits = isinstance(value, annotation) or (annotation is float and isinstance(value, int)
                                                     and not isinstance(value, bool))
            if not fits:
                mismatches.append(f"{key}={value!r} is a {type(value).__name__}; the constructor annotates it "
                                  f"{annotation.__name__}")
    got = f"{name} accepts {', '.join(model_args)}, but {call} raised {type(exc).__name__}: {exc}"
    if mismatches:
        got += " (" + "; ".join(mismatches) + ")"
    return EncoderContractError("constructor", f"{call} to build", got,
                                "pass --model-args values of the types the constructor expects, as JSON "
                                "(numbers unquoted: '{\"dim\": 256}')")


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
