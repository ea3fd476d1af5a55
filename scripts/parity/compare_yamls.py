"""Compare lalmbench's built-in task YAMLs with the published XARES-LLM ones, field by field.

    python scripts/parity/compare_yamls.py PUBLISHED [--project DIR] [--write-fixture FILE]

PUBLISHED is a checkout of xiaomi-research/xares-llm (or its `src/xares_llm/tasks` folder), e.g. from the bare
mirror: `mkdir -p /tmp/xares && git -C MIRROR archive 105be68 | tar -x -C /tmp/xares`. Each published YAML is
paired with the built-in config it corresponds to:

    <suite>/train/*.yaml                 -> src/lalmbench/tasks/train/<suite>.yaml   (task1, task2, all)
    <suite>/eval/*.yaml                  -> src/lalmbench/tasks/eval/<suite>.yaml
    single/train/<name>_config.yaml      -> src/lalmbench/tasks/train/<name>.yaml
    single/eval/<name>_test_config.yaml  -> src/lalmbench/tasks/eval/<name>.yaml

Both sides are parsed and compared as data (key order, comments and YAML spelling do not count; 1 and 1.0 are
equal, a missing field differs from one set to its default). Every difference is printed as a path with both
values, then `N pairs compared, M differ`; the exit status is 1 when any pair differs.

--write-fixture FILE writes the published values in the compact form that tests/test_tasks.py checks the
built-in YAMLs against (tests/fixtures/published_task_configs.json), so CI needs no published checkout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUITES = ("task1", "task2", "all")


def published_tasks_dir(root: Path) -> Path:
    for candidate in (root / "src" / "xares_llm" / "tasks", root):
        if (candidate / "single" / "train").is_dir():
            return candidate
    raise SystemExit(f"{root} holds no published task YAMLs (expected src/xares_llm/tasks/single/train inside); "
                     f"pass the root of an xares-llm checkout")


def project_counterpart(relative: Path) -> tuple[str, str] | None:
    """A published YAML's path (relative to its tasks folder) -> (train|eval, built-in name), None if no rule."""
    parts = relative.parts
    if len(parts) != 3 or parts[1] not in ("train", "eval"):
        return None
    group, kind, filename = parts
    if group in SUITES:
        return kind, group
    suffix = "_config.yaml" if kind == "train" else "_test_config.yaml"
    if group == "single" and filename.endswith(suffix):
        return kind, filename[: -len(suffix)]
    return None


def read(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def differences(published: Any, ours: Any, path: str = "") -> list[str]:
    if isinstance(published, dict) and isinstance(ours, dict):
        lines = []
        for key in sorted(set(published) | set(ours), key=str):
            here = f"{path}/{key}"
            if key not in ours:
                lines.append(f"  {here}: published {published[key]!r}, missing in lalmbench")
            elif key not in published:
                lines.append(f"  {here}: not in the published file, lalmbench {ours[key]!r}")
            else:
                lines += differences(published[key], ours[key], here)
        return lines
    if isinstance(published, list) and isinstance(ours, list) and len(published) == len(ours):
        return [line for i, (a, b) in enumerate(zip(published, ours)) for line in differences(a, b, f"{path}[{i}]")]
    # bool is an int in Python; keep True distinct from 1
    same = published == ours and isinstance(published, bool) == isinstance(ours, bool)
    return [] if same else [f"  {path or '/'}: published {published!r}, lalmbench {ours!r}"]


def compact_fixture(published: dict[tuple[str, str], tuple[str, dict]], revision: str) -> dict:
    """The published configs as facts: shared dataset definitions once, then what each config sets."""
    train_sets: dict[str, dict] = {}
    eval_sets: dict[str, dict] = {}
    train: dict[str, dict] = {}
    evals: dict[str, dict] = {}
    # the suites first, so that a dataset's shared test definition is the suites' one
    order = sorted(published, key=lambda item: (item[1] not in SUITES, item))
    for kind, name in order:
        source, content = published[(kind, name)]
        if kind == "train":
            entry = {k: v for k, v in content.items() if k != "train_data"}
            entry["train_data"] = {}
            for dataset, spec in content["train_data"].items():
                shared = {k: spec[k] for k in ("prompt", "data", "repo_id")}
                if train_sets.setdefault(dataset, shared) != shared:
                    raise SystemExit(f"{source}: {dataset} is defined differently from another published config")
                entry["train_data"][dataset] = {k: v for k, v in spec.items() if k not in shared}
            train[name] = {"published": source, **entry}
        else:
            entry = {}
            for task, spec in content.items():
                data = spec["data"]
                shared = eval_sets.setdefault(task, {k: data[k] for k in ("prompt", "data", "repo_id")})
                facts = {k: v for k, v in spec.items() if k != "data"}
                facts["key"] = data["key"]
                own = {k: data[k] for k in shared if data[k] != shared[k]}
                if own:  # a single config with its own shards (published fsd50k, nsynth)
                    facts["data_override"] = own
                entry[task] = facts
            evals[name] = {"published": source, "tasks": entry}
    return {"source": f"xiaomi-research/xares-llm {revision}, src/xares_llm/tasks "
                      f"(written by scripts/parity/compare_yamls.py --write-fixture)",
            "train_sets": train_sets, "eval_sets": eval_sets, "train": train, "eval": evals}


def expand_fixture(fixture: dict, kind: str, name: str) -> dict:
    """The published config `name` as parsed YAML, rebuilt from the compact fixture (tests use the same rule)."""
    if kind == "train":
        entry = {k: v for k, v in fixture["train"][name].items() if k != "published"}
        entry["train_data"] = {dataset: {**fixture["train_sets"][dataset], **facts}
                               for dataset, facts in entry["train_data"].items()}
        return entry
    out = {}
    for task, facts in fixture["eval"][name]["tasks"].items():
        facts = dict(facts)
        data = {**fixture["eval_sets"][task], "key": facts.pop("key"), **facts.pop("data_override", {})}
        out[task] = {"data": data, **facts}
    return out


def fixture_text(fixture: dict) -> str:
    """JSON with one line per dataset definition and per dataset or test set of a config (short diffs)."""
    inline_below = {"train_sets": 1, "eval_sets": 1, "train": 3, "eval": 3}

    def render(value: Any, depth: int, inline_depth: int, indent: str) -> str:
        if not isinstance(value, dict) or depth >= inline_depth:
            return json.dumps(value, ensure_ascii=False)
        inner = indent + " "
        items = [f"{inner}{json.dumps(k)}: {render(v, depth + 1, inline_depth, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"

    sections = [f' {json.dumps(k)}: {render(v, 0, inline_below.get(k, 0), " ")}' for k, v in fixture.items()]
    return "{\n" + ",\n".join(sections) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("published", type=Path, help="xares-llm checkout (or its src/xares_llm/tasks folder)")
    parser.add_argument("--project", type=Path, default=PROJECT_ROOT, help="lalmbench checkout (default: this one)")
    parser.add_argument("--write-fixture", type=Path, default=None, metavar="FILE",
                        help="also write the published values as the test fixture")
    parser.add_argument("--revision", default="105be68",
                        help="published commit the checkout holds, recorded in the fixture (default: 105be68)")
    args = parser.parse_args(argv)
    published_dir = published_tasks_dir(args.published)
    ours_dir = args.project / "src" / "lalmbench" / "tasks"

    published: dict[tuple[str, str], tuple[str, dict]] = {}
    pairs = differ = 0
    for path in sorted(published_dir.rglob("*.yaml")):
        relative = path.relative_to(published_dir)
        target = project_counterpart(relative)
        pairs += 1
        if target is None:
            differ += 1
            print(f"{relative}: no built-in counterpart rule")
            continue
        kind, name = target
        ours_path = ours_dir / kind / f"{name}.yaml"
        content = read(path)
        published[target] = (relative.as_posix(), content)
        if not ours_path.is_file():
            differ += 1
            print(f"{relative}: lalmbench has no {kind}/{name}.yaml")
            continue
        lines = differences(content, read(ours_path))
        if lines:
            differ += 1
            print(f"{relative} vs {kind}/{name}.yaml:")
            print("\n".join(lines))
    paired = {f"{kind}/{name}.yaml" for kind, name in published}
    extra = sorted(p.relative_to(ours_dir).as_posix() for p in ours_dir.glob("*/*.yaml")
                   if p.parent.name in ("train", "eval") and p.relative_to(ours_dir).as_posix() not in paired)
    if extra:
        print(f"lalmbench only (not published): {', '.join(extra)}")

    if args.write_fixture is not None:
        fixture = compact_fixture(published, args.revision)
        for kind, name in published:  # the compact form must rebuild every published file exactly
            assert expand_fixture(fixture, kind, name) == published[(kind, name)][1], (kind, name)
        args.write_fixture.parent.mkdir(parents=True, exist_ok=True)
        text = fixture_text(fixture)
        assert json.loads(text) == fixture
        args.write_fixture.write_text(text, encoding="utf-8")
        print(f"wrote {args.write_fixture} ({len(published)} published configs)")
    print(f"{pairs} pairs compared, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
