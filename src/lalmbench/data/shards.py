"""Shard patterns -> local shard files.

A dataset with a `repo_id` names shards relative to its hub repo; they live in the data home with the
hub's relative layout (`<data home>/ESC-50/train/esc50_fold_1_0000000.tar.gz`), the same layout the
published system's cache uses, so an existing cache is reused as is. A dataset without `repo_id` names
local files: brace expansion, then globs.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import braceexpand

from lalmbench.config import DatasetSpec
from lalmbench.errors import ConfigError, DataError

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def data_home(explicit: str | os.PathLike | None = None) -> Path:
    """$LALMBENCH_DATA_HOME, else $XARES_DATA_HOME, else ./xares_data (an explicit path wins)."""
    if explicit:
        return Path(explicit).expanduser()
    for variable in ("LALMBENCH_DATA_HOME", "XARES_DATA_HOME"):
        value = os.environ.get(variable)
        if value:
            return Path(value).expanduser()
    return Path.cwd() / "xares_data"


def expand_braces(pattern: str) -> list[str]:
    return list(braceexpand.braceexpand(pattern))


def hub_relative_paths(spec: DatasetSpec, home: str | os.PathLike | None = None) -> list[str]:
    """The repo-relative file paths a hub dataset names, in order, duplicates removed; each one checked to
    stay below the data home `home` (`check_inside_data_home`)."""
    seen: dict[str, None] = {}
    for pattern in spec.data:
        for path in expand_braces(pattern):
            check_inside_data_home(path, spec, pattern, home)
            seen.setdefault(path, None)
    return list(seen)


def check_inside_data_home(path: str, spec: DatasetSpec, pattern: str, home: str | os.PathLike | None) -> None:
    """ConfigError unless the hub path `path` names a file below the data home. A YAML is read from anywhere,
    and its paths decide where downloads are written and which files are read: an absolute path, a drive
    (C:) or a `..` segment would take them out of the data home."""
    unix = path.replace("\\", "/")  # a backslash separates folders on Windows
    if not path.strip():
        problem = "empty"
    elif unix.startswith("/") or (len(unix) > 1 and unix[1] == ":"):
        problem = "absolute"
    elif ".." in unix.split("/"):
        problem = "going up with '..'"
    else:
        return
    shown = f"{path!r}" + (f" (from pattern {pattern!r})" if pattern != path else "")
    raise ConfigError(
        f"{spec.name or 'dataset'} (repo_id {spec.repo_id}): shard path {shown} is {problem}. Hub shard paths are "
        f"relative to the dataset repo and stored below the data home ({data_home(home)}); they may not leave it. "
        "Write the path as it is in the repo (for example ESC-50/train/esc50_fold_1_0000000.tar.gz), or drop "
        "repo_id to name local files.")


def resolve_shards(spec: DatasetSpec, home: str | os.PathLike | None = None, must_exist: bool = True) -> list[Path]:
    """Local shard files of `spec`, sorted within each pattern, in pattern order."""
    if spec.repo_id:
        root = data_home(home)
        paths = [root / rel for rel in hub_relative_paths(spec, root)]
        if must_exist:
            missing = [p for p in paths if not p.is_file()]
            if missing:
                shown = "\n    ".join(str(p) for p in missing[:10])
                more = f"\n    ... and {len(missing) - 10} more" if len(missing) > 10 else ""
                raise DataError(
                    f"{spec.name or 'dataset'}: {len(missing)} of {len(paths)} shards are not downloaded "
                    f"(data home {root}):\n    {shown}{more}\n"
                    f"Fetch them with: lalmbench download {spec.name or '<task>'}")
        return paths
    found: dict[Path, None] = {}
    for pattern in spec.data:
        for expanded in expand_braces(os.path.expanduser(pattern)):
            if any(ch in expanded for ch in "*?["):
                matches = sorted(glob.glob(expanded))
            else:
                matches = [expanded] if os.path.isfile(expanded) else []
            if not matches and must_exist:
                directory = Path(expanded).parent
                raise DataError(
                    f"{spec.name or 'dataset'}: shard pattern {pattern!r} matches nothing "
                    f"(looked for {expanded!r} in directory {directory.resolve()}"
                    f"{'' if directory.is_dir() else ', which does not exist'}). "
                    "Check the path, or set repo_id to fetch the shards from the hub.")
            for match in matches:
                found.setdefault(Path(match), None)
    return list(found)
