"""Command-line flags generated from the config models: one `--field-name` per field, its doc as help.

The help of a flag is its field's description in `config.py` (the attribute docstring under the field,
read by pydantic), so a field documented there is documented in `lalmbench run --help` with nothing to
keep in step. Values are parsed by the field's type (int, float, str or one of a few strings, bool as
`--x/--no-x`, `T | None` taking `none`), then go through the same validation as YAML and `--args` values.
Only flags given on the command line become overrides; precedence stays: flags over `--args` over YAML
over defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from lalmbench.errors import ConfigError

OVERRIDE_PREFIX = "override__"  # namespace attribute prefix of generated flags


def _parser_for(annotation: Any, name: str):
    """A function str -> value for a field's type; None for structured fields (mappings, lists)."""
    # kept by hand: pydantic-settings' CLI would own the whole parser, and the CLI's sub-parsers are argparse's
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else annotation
    convert = str if typing.get_origin(base) is Literal else {int: int, float: float, str: str}.get(base)
    if convert is None:
        return None

    def parse(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')}: expected {convert.__name__}"
                                             f"{' or none' if optional else ''}, got {text!r}") from None

    parse.__name__ = convert.__name__  # argparse names the type in its own messages
    return parse


def add_config_flags(parser: argparse.ArgumentParser, model: type[BaseModel], title: str, skip: tuple[str, ...] = (),
                     defaults: dict[str, Any] | None = None) -> None:
    """Add a group of flags for every field of config model `model` (except `skip`).

    `defaults` replaces the model's defaults shown in the help, for a command whose own defaults differ
    (the demo's training settings)."""
    group = parser.add_argument_group(title)
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        if flag in parser._option_string_actions:  # the command has an option of that name with its own meaning
            continue
        default = (defaults or {}).get(name, field.get_default(call_default_factory=True))
        help_text = f"{' '.join((field.description or '').split())} (default: {default!r})".replace("%", "%%")
        dest = OVERRIDE_PREFIX + name
        if field.annotation is bool:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)
            continue
        parse = _parser_for(field.annotation, name)
        if parse is None:
            continue  # structured fields (mappings) stay in YAML / --args
        group.add_argument(flag, dest=dest, type=parse, default=argparse.SUPPRESS, metavar=parse.__name__.upper(),
                           help=help_text)


def collect_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The generated flags that were given, as {field name: value}."""
    return {key[len(OVERRIDE_PREFIX):]: value for key, value in vars(namespace).items()
            if key.startswith(OVERRIDE_PREFIX)}


def parse_mapping_arg(text: str | None, option: str) -> dict:
    """`--args`/`--model-args`: a JSON object, a YAML mapping (`{max_steps: 100}`), or a YAML file's path.
    The one parser of a mapping argument."""
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
