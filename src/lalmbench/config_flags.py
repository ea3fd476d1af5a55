"""Command-line flags generated from the config dataclasses: one `--field-name` per field, its doc as help.

The docs are the attribute docstrings written under each field in `config.py`, read with `ast`, so a
field documented there is documented in `lalmbench run --help` with nothing to keep in step. Values are
parsed by the field's annotation (int, float, str, bool as `--x/--no-x`, `T | None` taking `none`),
then go through the same validation as YAML and `--args` values. Only flags given on the command line
become overrides; precedence stays: flags over `--args` over YAML over defaults.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
from typing import Any

OVERRIDE_PREFIX = "override__"  # namespace attribute prefix of generated flags


def field_docs(cls) -> dict[str, str]:
    """{field name: its docstring} for a dataclass whose fields carry a string literal below them."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _parser_for(annotation: str, name: str):
    """A function str -> value for the field's annotation (a string: config.py uses postponed annotations)."""
    parts = [p.strip() for p in annotation.split("|")]
    optional = "None" in parts
    base = next((p for p in parts if p != "None"), "str")
    convert = {"int": int, "float": float, "str": str}.get(base)
    if convert is None:
        return None

    def parse(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')}: expected {base}"
                                             f"{' or none' if optional else ''}, got {text!r}") from None

    parse.__name__ = base  # argparse names the type in its own messages
    return parse


def add_config_flags(parser: argparse.ArgumentParser, cls, title: str, skip: tuple[str, ...] = (),
                     defaults: dict[str, Any] | None = None) -> None:
    """Add a group of flags for every public field of dataclass `cls` (except `skip`).

    `defaults` replaces the dataclass defaults shown in the help, for a command whose own defaults differ
    (the demo's training settings)."""
    docs = field_docs(cls)
    group = parser.add_argument_group(title)
    shown = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)} | dict(defaults or {})
    for f in dataclasses.fields(cls):
        if f.name.startswith("_") or f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if flag in parser._option_string_actions:  # the command has an option of that name with its own meaning
            continue
        default = shown[f.name]
        doc = docs.get(f.name, "")
        help_text = f"{doc} (default: {default!r})".replace("%", "%%")
        dest = OVERRIDE_PREFIX + f.name
        annotation = str(f.type)
        if annotation == "bool":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)
            continue
        parse = _parser_for(annotation, f.name)
        if parse is None:
            continue  # structured fields (mappings) stay in YAML / --args
        group.add_argument(flag, dest=dest, type=parse, default=argparse.SUPPRESS, metavar=parse.__name__.upper(),
                           help=help_text)


def collect_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The generated flags that were given, as {field name: value}."""
    return {key[len(OVERRIDE_PREFIX):]: value for key, value in vars(namespace).items()
            if key.startswith(OVERRIDE_PREFIX)}


def parse_mapping_arg(text: str | None, option: str) -> dict:
    """`--args`/`--model-args`: a JSON object, a YAML mapping (`{max_steps: 100}`), or a YAML file's path."""
    import json
    import os
    from pathlib import Path

    import yaml

    from lalmbench.errors import ConfigError

    if not text:
        return {}
    source = text
    usage = (f"{option} takes a JSON object, a YAML mapping or the path of a YAML file, e.g. "
             f"{option} '{{\"max_steps\": 100}}' or {option} overrides.yaml")
    looks_like_path = not text.lstrip().startswith("{") and not any(c in text for c in ":\n")
    if looks_like_path and Path(text).is_dir():
        raise ConfigError(f"{option}: {text} is a directory, not a YAML file. {usage}")
    if not text.lstrip().startswith("{") and Path(text).is_file():
        source = Path(text).read_text(encoding="utf-8")
    elif looks_like_path and (text.endswith((".yaml", ".yml", ".json")) or "/" in text or os.sep in text):
        where = "" if Path(text).is_absolute() else f" (looked in the working directory {Path.cwd()})"
        raise ConfigError(f"{option}: the file {text} does not exist{where}. {usage}")
    try:
        value = json.loads(source)
    except json.JSONDecodeError as json_error:
        try:
            value = yaml.safe_load(source)
        except yaml.YAMLError:
            raise ConfigError(f"{option} is neither JSON ({json_error.msg} at column {json_error.colno}) nor a YAML "
                              f"mapping: {text!r}. Example: {option} '{{\"max_steps\": 100}}' or "
                              f"{option} '{{max_steps: 100}}' or {option} overrides.yaml") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a mapping like '{{\"key\": value}}' (JSON or YAML) or a YAML file "
                          f"holding one, got {text!r}")
    return value
