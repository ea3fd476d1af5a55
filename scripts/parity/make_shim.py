"""Build a minimal `torchaudio` stand-in for the published system under $PARITY_WORK/shim.

    python scripts/parity/make_shim.py [--wheel torchaudio-2.11.0-*.whl] [--out DIR]

The published system imports torchaudio for two things only: `torchaudio.load` and
`torchaudio.functional.resample`. The C extension of the torchaudio 2.11 wheel does not load with torch
2.13, but the resampler is plain torch code. So this script reads `torchaudio/functional/functional.py`
from the wheel (`pip download --no-deps torchaudio==2.11.0`, done for you when no --wheel is given), keeps
`resample` and the module-level definitions it reaches (found with `ast`), unchanged, and adds a `load(path)`
that reads with soundfile. The result is generated at setup time on your machine; nothing of torchaudio is
kept in this repository. Never install torchaudio itself into the parity environment.
"""

from __future__ import annotations

import argparse
import ast
import glob
import subprocess
import sys
import zipfile
from pathlib import Path

from kit import WHEELS, WORK

VERSION = "2.11.0"
MEMBER = "torchaudio/functional/functional.py"
ROOTS = ("resample",)

INIT = '''"""torchaudio stand-in for running the published system (scripts/parity/make_shim.py).
functional.resample comes unchanged from the torchaudio {version} wheel; load() reads with soundfile."""
from . import functional
import soundfile as _soundfile
import torch as _torch


def load(path):
    data, rate = _soundfile.read(path, dtype="float32", always_2d=True)  # [samples, channels]
    return _torch.from_numpy(data.T.copy()), rate
'''


def wheel_path(given: str | None) -> Path:
    if given:
        return Path(given)
    pattern = str(WHEELS / f"torchaudio-{VERSION}-*.whl")
    if not glob.glob(pattern):
        WHEELS.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", f"torchaudio=={VERSION}", "-d", str(WHEELS)]
        print("running:", " ".join(command))
        subprocess.run(command, check=True)
    found = sorted(glob.glob(pattern))
    if not found:
        raise SystemExit(f"no torchaudio-{VERSION} wheel in {WHEELS}; download one and pass --wheel")
    return Path(found[0])


def names_bound(statement: ast.stmt) -> set[str]:
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in statement.names}
    if isinstance(statement, (ast.Assign, ast.AnnAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return {node.id for target in targets for node in ast.walk(target) if isinstance(node, ast.Name)}
    return set()


def names_used(statement: ast.stmt) -> set[str]:
    return {node.id for node in ast.walk(statement) if isinstance(node, ast.Name)}


def keep_reachable(source: str) -> tuple[list[str], list[str]]:
    """(names kept, source of the statements that define them, in file order)."""
    body = ast.parse(source).body
    where: dict[str, list[int]] = {}
    for index, statement in enumerate(body):
        for name in names_bound(statement):
            where.setdefault(name, []).append(index)
    kept: dict[int, set[str]] = {}
    pending, seen = list(ROOTS), set()
    while pending:
        name = pending.pop()
        if name in seen or name not in where:  # builtins and locals are not module-level definitions
            continue
        seen.add(name)
        for index in where[name]:
            kept.setdefault(index, set()).add(name)
            if not isinstance(body[index], (ast.Import, ast.ImportFrom)):
                pending.extend(names_used(body[index]))
    if "torchaudio" in seen:
        raise SystemExit("the resampler needs the torchaudio package itself; a stand-in cannot provide that")
    parts = []
    for index in sorted(kept):
        statement = body[index]
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            if isinstance(statement, ast.ImportFrom) and statement.level:
                raise SystemExit(f"{sorted(kept[index])} come from a relative import: {ast.unparse(statement)}")
            statement.names = [a for a in statement.names if (a.asname or a.name).split(".")[0] in kept[index]]
            parts.append(ast.unparse(statement))
        elif isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
            decorators = "".join("@" + ast.get_source_segment(source, d) + "\n" for d in statement.decorator_list)
            parts.append("\n\n" + decorators + ast.get_source_segment(source, statement))
        else:
            parts.append(ast.get_source_segment(source, statement))
    return sorted(seen), parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help=f"a torchaudio-{VERSION} wheel (default: fetched into $PARITY_WORK/wheels)")
    parser.add_argument("--out", default=str(WORK / "shim"), help="folder that gets torchaudio/ (put it on PYTHONPATH)")
    args = parser.parse_args()
    wheel = wheel_path(args.wheel)
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(MEMBER).decode("utf-8")
    names, parts = keep_reachable(source)
    package = Path(args.out) / "torchaudio"
    package.mkdir(parents=True, exist_ok=True)
    header = f'"""Generated by make_shim.py from {wheel.name}:{MEMBER}; kept: {", ".join(names)}."""\n'
    (package / "functional.py").write_text(header + "\n".join(parts) + "\n")
    (package / "__init__.py").write_text(INIT.format(version=VERSION))
    print(f"wrote {package} ({', '.join(names)})")
    sys.path.insert(0, str(Path(args.out)))  # the generated package, never an installed torchaudio
    import torch
    import torchaudio

    assert Path(torchaudio.__file__).parent == package.resolve(), torchaudio.__file__
    print("check: 2 x 44100 samples at 44.1 kHz ->", tuple(torchaudio.functional.resample(torch.randn(2, 44100), 44100, 16000).shape))


if __name__ == "__main__":
    main()
