"""`lalmbench package DIR`: check the encoder of a submission directory and write its ZIP with a manifest.

Flow: find the encoder file (submission.json, else the one top-level *encoder*.py) -> run every check
(`check.run_checks`) -> refuse with the failed checks and their fixes, or collect the files (no caches,
no hidden files, weight files only with --include-weights) -> write DIR.zip atomically with
MANIFEST.json inside: each file's size and sha256, the checker's JSON result, the lalmbench version.
An existing ZIP is never replaced: an explicit --output that exists is refused; the default name moves
on to DIR-2.zip, DIR-3.zip, ... and says so.
"""

from __future__ import annotations

import json
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from lalmbench.encoders.check import CheckOptions, run_checks
from lalmbench.errors import PackageError
from lalmbench.identity import file_sha256
from lalmbench.io_utils import atomic_path

WEIGHT_SUFFIXES = (".pt", ".bin", ".safetensors", ".ckpt", ".pth")
SKIPPED_DIRS = {"__pycache__", ".git", ".venv", "venv", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints"}
MANIFEST_NAME = "MANIFEST.json"


def find_encoder_file(directory: Path) -> tuple[Path, str, dict]:
    """The encoder file, how to load it (its path, or `hear:<path>` for a HEAR module) and its
    constructor arguments: from submission.json, else the only candidate."""
    spec_file = directory / "submission.json"
    if spec_file.is_file():
        try:
            spec = json.loads(spec_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PackageError(f"{spec_file} is not valid JSON ({exc}); fix it or delete it") from exc
        named = str(spec.get("encoder", ""))
        hear = named.startswith("hear:")  # a HEAR-API module file: {"encoder": "hear:my_module.py"}
        encoder = directory / named.removeprefix("hear:")
        if not named.removeprefix("hear:") or not encoder.is_file():
            raise PackageError(f"{spec_file} names encoder {spec.get('encoder')!r}, which is not a file in "
                               f"{directory}; set \"encoder\" to your encoder's .py file (or "
                               "\"hear:<module>.py\" for a HEAR-API module)")
        model_args = spec.get("model_args") or {}
        if not isinstance(model_args, dict):
            raise PackageError(f"{spec_file}: model_args must be a JSON object, got {model_args!r}")
        return encoder, f"hear:{encoder}" if hear else str(encoder), model_args
    candidates = sorted(p for p in directory.glob("*.py")
                        if not p.name.startswith(("test_", "setup", "conftest")))
    named = [p for p in candidates if "encoder" in p.stem.lower()]
    chosen = named if len(named) == 1 else candidates
    if len(chosen) != 1:
        raise PackageError(f"cannot tell which file in {directory} is the encoder (candidates: "
                           f"{[p.name for p in candidates]}); write submission.json: "
                           '{"encoder": "my_encoder.py", "model_args": {}}')
    return chosen[0], str(chosen[0]), {}


def collect_files(directory: Path, include_weights: bool, exclude: set[Path]) -> tuple[list[Path], list[Path]]:
    """(files to pack, weight files left out), as paths relative to `directory`."""
    packed, left_out = [], []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if not path.is_file() or path.resolve() in exclude:
            continue
        if any(part in SKIPPED_DIRS or part.startswith(".") and part != ".gitignore" for part in relative.parts):
            continue
        if path.suffix in (".pyc", ".part", ".zip") or path.name.endswith(".tmp"):
            continue
        if path.suffix in WEIGHT_SUFFIXES and not include_weights:
            left_out.append(relative)
            continue
        packed.append(relative)
    return packed, left_out


def _choose_output(directory: Path, output: str | None) -> tuple[Path, str]:
    if output is not None:
        path = Path(output)
        if path.exists():
            raise PackageError(f"{path} already exists; nothing was written. Pass another --output or move the "
                               f"old ZIP away")
        return path, ""
    base = directory.resolve()
    path = base.with_name(f"{base.name}.zip")
    if not path.exists():
        return path, ""
    number = 2
    while base.with_name(f"{base.name}-{number}.zip").exists():
        number += 1
    new = base.with_name(f"{base.name}-{number}.zip")
    return new, f"{path} already exists and was kept; writing {new.name} instead"


def package_command(directory: str, include_weights: bool = False, output: str | None = None,
                    options: CheckOptions | None = None) -> int:
    """`lalmbench package DIR`: 0 with the ZIP written, 1 when the encoder fails a mandatory check."""
    from lalmbench import __version__

    root = Path(directory)
    if not root.is_dir():
        raise PackageError(f"{root} is not a directory; pass the submission directory (made by new-encoder)")
    encoder_file, encoder, model_args = find_encoder_file(root)
    report = run_checks(encoder, model_args, device="cpu", options=options)
    if not report.ok:
        print(f"lalmbench package: {encoder} fails {len(report.failed)} mandatory check(s); no ZIP written.",
              file=sys.stderr)
        for result in report.failed:
            expected = f" (expected {result.expected})" if result.expected else ""
            print(f"  - {result.name}: {result.value}{expected}. Fix: {result.fix}", file=sys.stderr)
        print(f"Run `lalmbench check {encoder}` for the full table.", file=sys.stderr)
        return 1
    zip_path, note = _choose_output(root, output)
    files, left_out = collect_files(root, include_weights, exclude={zip_path.resolve()})
    entries = [{"path": p.as_posix(), "size": (root / p).stat().st_size, "sha256": file_sha256(root / p)} for p in files]
    manifest = {
        "lalmbench_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder_file": encoder_file.relative_to(root).as_posix(),
        "hear_module": encoder.startswith("hear:"),
        "class_name": report.class_name,
        "model_args": model_args,
        "include_weights": include_weights,
        "files": entries,
        "weights_left_out": [p.as_posix() for p in left_out],
        "check": report.to_dict(),
    }
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for relative in files:
                archive.write(root / relative, relative.as_posix())
            archive.writestr(MANIFEST_NAME, json.dumps(manifest, indent=2, default=str) + "\n")
    if note:
        print(f"lalmbench package: {note}")
    total = sum(e["size"] for e in entries)
    # The ZIP holds the submission's files and the manifest: count both, as an unzip listing would.
    print(f"Wrote {zip_path}: {len(entries) + 1} files ({len(entries)} from {root} and {MANIFEST_NAME}), "
          f"{total:,} bytes of submission files, checks passed"
          + (f" ({len(report.warnings)} warning(s): {', '.join(r.name for r in report.warnings)})" if report.warnings else ""))
    if left_out:
        print(f"Left out weight files {[p.as_posix() for p in left_out]}: the encoder must download them on first "
              f"use, or pass --include-weights")
    return 0
