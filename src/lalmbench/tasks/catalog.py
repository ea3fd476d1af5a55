"""The catalog of built-in train and eval configs shipped as package data.

Train configs live in `tasks/train/<name>.yaml`, eval configs in `tasks/eval/<name>.yaml`.
"""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def builtin_names(kind: str) -> list[str]:
    folder = _ROOT / kind
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def builtin_config_path(kind: str, name: str) -> Path | None:
    if kind not in ("train", "eval"):
        raise ValueError(f"kind must be train or eval, got {kind!r}")
    path = _ROOT / kind / f"{name}.yaml"
    return path if path.is_file() else None
