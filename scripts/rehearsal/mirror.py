"""The loopback mirror: small shards in the real data repositories' layout, with planted faults.

For every shard that the built-in `task1`, `task2` and `all` configs name (train and eval), this writes a
small gzip WebDataset shard under the same path, in the hub server's tree
`<root>/<repo_id>/main/<path in repo>` (tests/hub_server.py serves it on 127.0.0.1). The shard paths, repo
ids and JSON keys come from lalmbench's built-in task YAMLs; what the audio and labels look like comes from
the recipe table `datasets.tsv` beside this file (sample rate, channels, container, clip lengths, label
field and type, vocabulary).

Audio is synthetic: tone bursts (the label picks the pitch, so a model could learn it) with silent gaps
and a little noise, written in the dataset's container at its rate and channel count. Clips past the 30 s
training crop are added where the real data has them.

Planted faults (variant "main"), each recorded in the manifest (`faults`: which shard, which key, how the
bad-data account should take it). They sit at the start of the first shard the published sampler
opens (`_fault_shards`), so a run has read every one of them. In every dataset's training shards:
  undecodable   an audio member cut off inside its header (no decoder can open it)      -> one bad example
  broken_json   a JSON member cut off mid-object                                         -> one bad example
  empty_label   the label field present but empty: "" for a string, [] for a list, null for a number
  stray_member  a README.txt member that belongs to no example                           -> not an example
  wide_clip     a valid 48 kHz stereo clip                                                -> used, not bad
In one test set (MISSING_LABEL_TEST): one example whose JSON lacks the label field      -> one bad example

How an empty label counts depends on the protocol: under `official` (as the published pipeline) an
empty string is a target like any other; an empty list or null falls through to the next key and, with no
other key present, is counted as a missing key. `expected_bad` in the manifest follows that rule.

Variant "truncated" writes the same mirror with one training shard (TRUNCATED_SHARD) cut short (the gzip
stream ends in the middle of a member); a run that reads it must stop and name it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RECIPE_FILE = Path(__file__).with_name("datasets.tsv")
SUITES = ("task1", "task2", "all")
REVISION = "main"
TRAIN_CROP_SECONDS = 30.0

MISSING_LABEL_TEST = "eval_asvspoof2015"
TRUNCATED_DATASET = "Songdescriber"
TRUNCATED_SHARD = "Songdescriber/train/train_song_describer_000000.tar.gz"
TRUNCATE_AT = 0.6  # fraction of the gzip bytes kept
WIDE_RATE, WIDE_CHANNELS = 48_000, 2
MP3_POOL_LENGTHS = 3  # mp3 encoding is slow (about 20x real time): clips reuse a few encoded lengths per pitch

FAULTS = ("undecodable", "broken_json", "empty_label", "stray_member", "wide_clip")


@dataclass(frozen=True)
class Recipe:
    dataset: str
    eval: str
    sample_rates: tuple[int, ...]
    channels: tuple[int, ...]
    container: str
    seconds: tuple[float, float]
    long: tuple[float, ...]
    train_per_shard: int
    test_per_shard: int
    train_field: str
    test_field: str
    label_type: str
    vocabulary: tuple[str, ...]
    source: str


LABEL_TYPES = ("label", "label_list", "multilabel", "number", "caption", "caption_list", "transcript_en",
               "transcript_zh")
CONTAINERS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", None)}


def read_recipes(path: Path = RECIPE_FILE) -> dict[str, Recipe]:
    """The recipe table, one Recipe per dataset; a malformed row raises ValueError naming it."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    recipes = {}
    for row in csv.DictReader(lines, delimiter="\t"):
        where = f"{path.name}, dataset {row.get('dataset')!r}"
        try:
            low, _, high = row["seconds"].partition("-")
            recipe = Recipe(
                dataset=row["dataset"], eval=row["eval"],
                sample_rates=tuple(int(v) for v in row["sample_rate"].split(",")),
                channels=tuple(int(v) for v in row["channels"].split(",")),
                container=row["container"], seconds=(float(low), float(high or low)),
                long=tuple(float(v) for v in row["long"].split(",")) if row["long"] != "-" else (),
                train_per_shard=int(row["train_per_shard"]), test_per_shard=int(row["test_per_shard"]),
                train_field=row["train_field"], test_field=row["test_field"], label_type=row["label_type"],
                vocabulary=tuple(v.strip() for v in row["vocabulary"].split(",")), source=row["source"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if recipe.label_type not in LABEL_TYPES:
            raise ValueError(f"{where}: label_type {recipe.label_type!r} is not one of {LABEL_TYPES}")
        if recipe.container not in CONTAINERS:
            raise ValueError(f"{where}: container {recipe.container!r} is not one of {sorted(CONTAINERS)}")
        recipes[recipe.dataset] = recipe
    return recipes


@dataclass
class ConfigShards:
    """What the built-in configs say about one dataset: repo, shard paths and keys, per split."""

    dataset: str
    repo_id: str
    train: list[str]
    test: list[str]
    train_key: str
    test_key: str
    eval: str


def config_shards() -> dict[str, ConfigShards]:
    """Every dataset of the built-in task1/task2/all configs, its shards read from the package YAMLs.

    Train datasets are matched to their test sets by the catalog (train_name -> eval_name)."""
    from lalmbench.config import load_eval_configs, load_train_config
    from lalmbench.data.shards import hub_relative_paths
    from lalmbench.tasks.catalog import load_catalog

    eval_of = {info.train_name: info.eval_name for info in load_catalog().datasets.values()}
    found: dict[str, ConfigShards] = {}
    tests = {}
    for suite in SUITES:
        for task in load_eval_configs(suite):
            tests.setdefault(task.name, task.data)
        for name, spec in load_train_config(suite).train_data.items():
            if name not in found:
                found[name] = ConfigShards(name, spec.repo_id, hub_relative_paths(spec), [], spec.key or "",
                                           "", eval_of[name])
    for entry in found.values():
        spec = tests.pop(entry.eval)
        if spec.repo_id != entry.repo_id:
            raise ValueError(f"{entry.dataset}: train repo {entry.repo_id} and test repo {spec.repo_id} differ")
        entry.test, entry.test_key = hub_relative_paths(spec), spec.key or ""
    if tests:
        raise ValueError(f"test sets with no training dataset in the configs: {sorted(tests)}")
    return found


def coverage_problems(recipes: dict[str, Recipe], shards: dict[str, ConfigShards]) -> list[str]:
    """What the recipe table misses or gets wrong against the configs (empty: it covers them)."""
    problems = [f"{name}: in the configs, not in the recipe table" for name in sorted(set(shards) - set(recipes))]
    problems += [f"{name}: in the recipe table, not in the configs" for name in sorted(set(recipes) - set(shards))]
    for name in sorted(set(recipes) & set(shards)):
        recipe, entry = recipes[name], shards[name]
        if recipe.eval != entry.eval:
            problems.append(f"{name}: eval {recipe.eval!r}, the configs say {entry.eval!r}")
        for split, field, key in (("train", recipe.train_field, entry.train_key),
                                  ("test", recipe.test_field, entry.test_key)):
            if field not in key.split(";"):
                problems.append(f"{name}: {split}_field {field!r} is not one of the config key {key!r}")
    return problems


# --------------------------------------------------------------------------------------------------
# Audio and labels


def clip_seconds(recipe: Recipe, count: int, rng: np.random.Generator) -> list[float]:
    """`count` lengths: fixed, or log-uniform between the bounds (many short clips, fewer long ones, as in
    the real sets), rounded to 10 ms."""
    low, high = recipe.seconds
    if low == high:
        return [low] * count
    return [round(float(np.exp(rng.uniform(np.log(low), np.log(high)))), 2) for _ in range(count)]


def synth_audio(pitch: int, seconds: float, rate: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Tone bursts at a pitch set by `pitch`, with silent gaps; [samples, channels].

    The tone's period is a whole number of samples, so its samples repeat exactly and gzip compresses
    the shards well (together with the silence), which keeps the mirror small."""
    samples = max(1, int(round(seconds * rate)))
    period = max(4, int(round(rate / (220.0 * 1.19 ** (pitch % 16)))))
    n = np.arange(samples)
    on = (n // int(0.3 * rate) % 8) < 3  # 0.9 s of every 2.4 s sounds
    wave = 0.3 * np.sin(2 * np.pi * (n % period) / period + rng.uniform(0, 2 * np.pi)) * on
    out = np.repeat(wave[:, None], channels, axis=1)
    if channels > 1:
        out[:, 1] *= 0.8  # the channels differ, so mixing down is exercised
    return out.astype(np.float32)


def encode(audio: np.ndarray, rate: int, container: str) -> bytes:
    import soundfile as sf

    fmt, subtype = CONTAINERS[container]
    buffer = io.BytesIO()
    extra = {"compression_level": 0.9, "bitrate_mode": "VARIABLE"} if container == "mp3" else {}  # about 32 kbit/s
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype, **extra)
    return buffer.getvalue()


class ClipMaker:
    """Encoded clips for one dataset; mp3 clips come from a small pool (encoding them is slow)."""

    def __init__(self, recipe: Recipe, rng: np.random.Generator):
        self.recipe, self.rng, self.pool = recipe, rng, {}
        self.count = 0

    def __call__(self, pitch: int, seconds: float, rate: int | None = None, channels: int | None = None) -> bytes:
        recipe = self.recipe
        if rate is None:
            rate = recipe.sample_rates[self.count % len(recipe.sample_rates)]
            channels = recipe.channels[self.count % len(recipe.channels)]
            self.count += 1
        if recipe.container != "mp3":
            return encode(synth_audio(pitch, seconds, rate, channels, self.rng), rate, recipe.container)
        low, high = recipe.seconds
        grid = np.linspace(low, high, MP3_POOL_LENGTHS) if high > low else [low]
        seconds = float(min(grid, key=lambda g: abs(g - seconds))) if seconds <= max(high, low) else seconds
        key = (pitch % 2, seconds, rate, channels)
        if key not in self.pool:
            self.pool[key] = encode(synth_audio(pitch, seconds, rate, channels, self.rng), rate, "mp3")
        return self.pool[key]


def label_value(recipe: Recipe, index: int, rng: np.random.Generator):
    """(JSON value of the label field, pitch of the clip) for example `index`."""
    vocab = recipe.vocabulary
    kind = recipe.label_type
    pick = index % len(vocab)
    if kind == "label":
        return vocab[pick], pick
    if kind == "label_list":
        return [vocab[pick]], pick
    if kind == "number":
        return int(vocab[pick]), pick
    if kind == "multilabel":
        second = (pick + 1 + index // len(vocab)) % len(vocab)
        return ";".join([vocab[pick]] + ([vocab[second]] if index % 3 == 0 else [])), pick
    words = [vocab[i] for i in rng.integers(0, len(vocab), size=int(rng.integers(3, 9)))]
    if kind == "transcript_zh":
        return "".join(words), pick
    if kind == "transcript_en":
        return " ".join(words), pick
    if kind == "caption":
        return " ".join(words).capitalize() + ".", pick
    captions = []
    for _ in range(5):  # caption_list: five captions per clip, as Clotho
        words = [vocab[i] for i in rng.integers(0, len(vocab), size=int(rng.integers(4, 10)))]
        captions.append(" ".join(words).capitalize() + ".")
    return captions, pick


def empty_value(recipe: Recipe):
    """The label field present but empty, in the form the label type would take."""
    return {"label_list": [], "caption_list": [], "number": None}.get(recipe.label_type, "")


def examples_per_value(recipe: Recipe) -> int:
    """Examples one labelled record gives (one per caption for caption lists)."""
    return 5 if recipe.label_type == "caption_list" else 1


def expected_bad_for_empty(recipe: Recipe, protocol: str = "official") -> int:
    """Whether an empty label is counted as unusable (module docstring)."""
    if protocol == "official":
        return 0 if empty_value(recipe) == "" else 1
    return 1


# --------------------------------------------------------------------------------------------------
# Shards


def _gzip_tar(members: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def _record(key: str, audio: bytes, ext: str, meta: dict | None, json_bytes: bytes | None = None) -> list:
    body = json_bytes if json_bytes is not None else json.dumps(meta, ensure_ascii=False).encode("utf-8")
    return [(f"{key}.{ext}", audio), (f"{key}.json", body)]


def _fault_shards(paths: list[str], repo_id: str) -> dict[str, int]:
    """Which training shard (index into `paths`) each planted fault goes into: the first shard that the
    published sampler opens in a one-process run (lalmbench's `official` stream). It draws shards with
    replacement, so a short run may never open some shards, nor even a dataset's first few distinct ones (a
    run of the rehearsal opened 3 of ESC-50's 4); the first one opened is read however short the run."""
    from types import SimpleNamespace

    # The stream's own shard lane, given only what its shard draws read (a script may reach inside).
    from lalmbench.data.official_stream import _DatasetLane, published_shard_order

    spec = SimpleNamespace(name="dataset", repo_id=repo_id)
    order = published_shard_order(spec, [Path(p) for p in paths])
    lane = _DatasetLane(SimpleNamespace(specs=[spec], urls={spec.name: order}, rank=0, world=1, workers=0), 0, 0)
    first = paths.index(order[lane._next_shard()])
    return {fault: first for fault in FAULTS}


def write_dataset(root: Path, recipe: Recipe, entry: ConfigShards, variant: str, seed: int) -> dict:
    """Write the dataset's train and test shards; return its manifest entry."""
    rng = np.random.default_rng([seed, sum(entry.dataset.encode())])
    make_clip = ClipMaker(recipe, rng)
    prefix = entry.dataset.lower().replace("-", "")
    layout = fault_layout(recipe, entry)
    manifest = {"dataset": entry.dataset, "eval": entry.eval, "repo_id": entry.repo_id,
                "train_shards": len(entry.train), "test_shards": len(entry.test),
                "train_records": 0, "train_examples": 0, "test_records": 0, "test_examples": 0,
                "planted": {}, "faults": [], "expected_bad": {}, "expected_bad_test": {},
                "expected_stray_members": 0, "long_clips": 0,
                "sample_rates": sorted(set(recipe.sample_rates)), "channels": sorted(set(recipe.channels)),
                "seconds_min": None, "seconds_max": None, "truncated": None}
    lengths_seen: list[float] = []

    def labelled(split: str, shard_index: int, index: int, seconds: float, field: str) -> list:
        value, pitch = label_value(recipe, index, rng)
        lengths_seen.append(seconds)
        key = f"{prefix}_{split}_{shard_index:06d}_{index:05d}"
        meta = {field: value, "audio_id": key, "duration": seconds}
        manifest[f"{split}_records"] += 1
        manifest[f"{split}_examples"] += len(value) if isinstance(value, list) else 1
        return _record(key, make_clip(pitch, seconds), recipe.container, meta)

    for split, paths, per_shard, field in (("train", entry.train, recipe.train_per_shard, recipe.train_field),
                                           ("test", entry.test, recipe.test_per_shard, recipe.test_field)):
        long = list(recipe.long) if split == "train" else list(recipe.long[:1])
        first_long_shard = len(paths) - len(long)  # the last shards each get one clip past the crop
        index = 0
        for shard_index, rel in enumerate(paths):
            members: list[tuple[str, bytes]] = []
            lengths = clip_seconds(recipe, per_shard, rng)
            if long and shard_index >= first_long_shard:
                lengths[0] = long[shard_index - first_long_shard]
                manifest["long_clips"] += 1
            for seconds in lengths:
                members += labelled(split, shard_index, index, seconds, field)
                index += 1
            if split == "train" and variant == "main":
                members = _plant_faults(members, rel, layout, recipe, field, make_clip, manifest, rng)
            if split == "test" and variant == "main" and entry.eval == MISSING_LABEL_TEST and shard_index == 0:
                key = f"{prefix}_test_missing_label"
                members += _record(key, make_clip(0, 3.0), recipe.container, {"audio_id": key, "duration": 3.0})
                manifest["test_records"] += 1
                manifest["planted"]["missing_label_test"] = 1
                manifest["expected_bad_test"]["missing key"] = 1
            data = _gzip_tar(members)
            if variant == "truncated" and rel == TRUNCATED_SHARD:
                data = data[:int(len(data) * TRUNCATE_AT)]
                manifest["truncated"] = rel
            target = root / entry.repo_id / REVISION / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    manifest["seconds_min"], manifest["seconds_max"] = min(lengths_seen), max(lengths_seen)
    return manifest


COUNTED_AS = {"undecodable": "undecodable audio", "broken_json": "bad record"}


def fault_layout(recipe: Recipe, entry: ConfigShards) -> list[dict]:
    """Where each planted training fault goes and how the bad-data account should take it: `counts_as`
    is the reason it is counted under (None: not an unusable example), `stray` a member outside any
    example. The manifest lists these; rehearse.py compares them with what a run counted."""
    plan = _fault_shards(entry.train, entry.repo_id)
    prefix = entry.dataset.lower().replace("-", "")
    layout = []
    for fault in FAULTS:
        counts_as = COUNTED_AS.get(fault)
        if fault == "empty_label" and expected_bad_for_empty(recipe):
            counts_as = "missing key"
        layout.append({"fault": fault, "shard": entry.train[plan[fault]], "counts_as": counts_as,
                       "key": "README" if fault == "stray_member" else f"{prefix}_fault_{fault}",
                       "stray": fault == "stray_member"})
    return layout


def _plant_faults(members: list, shard: str, layout: list[dict], recipe: Recipe, field: str,
                  make_clip: ClipMaker, manifest: dict, rng: np.random.Generator) -> list:
    """The faults `layout` puts in `shard`, at its start (so a shard the sampler opens has had them read
    even when training ends inside it); each is recorded in the manifest."""
    first: list[tuple[str, bytes]] = []
    for planned in (f for f in layout if f["shard"] == shard):
        fault, key, counts_as = planned["fault"], planned["key"], planned["counts_as"]
        value, pitch = label_value(recipe, 0, rng)
        meta = {field: value, "audio_id": key, "duration": 2.0}
        if fault == "undecodable":
            first += _record(key, make_clip(pitch, 2.0)[:20], recipe.container, meta)  # cut off inside its header
        elif fault == "broken_json":
            text = json.dumps(meta, ensure_ascii=False).encode("utf-8")
            first += _record(key, make_clip(pitch, 2.0), recipe.container, None, text[:len(text) // 2])
        elif fault == "empty_label":
            meta[field] = empty_value(recipe)
            first += _record(key, make_clip(pitch, 2.0), recipe.container, meta)
            if counts_as is None:
                manifest["train_examples"] += 1  # official: "" is a target like any other
        elif fault == "stray_member":
            first.insert(0, ("README.txt", f"{recipe.dataset}: see the dataset card.\n".encode()))
            manifest["expected_stray_members"] += 1
        elif fault == "wide_clip":
            first += _record(key, make_clip(pitch, 2.0, WIDE_RATE, WIDE_CHANNELS), recipe.container, meta)
            manifest["train_examples"] += len(value) if isinstance(value, list) else 1
        if counts_as:
            manifest["expected_bad"][counts_as] = manifest["expected_bad"].get(counts_as, 0) + 1
        manifest["train_records"] += fault != "stray_member"
        manifest["faults"].append(planned)
        manifest["planted"][fault] = 1
    return first + members


def write_mirror(root: Path, variant: str = "main", seed: int = 0, datasets: list[str] | None = None) -> dict:
    """Write the mirror under `root` (hub server layout) and return the manifest (also written to
    `root/manifest.json`). `datasets` limits it to those (for tests)."""
    if variant not in ("main", "truncated"):
        raise ValueError(f"variant must be main or truncated, got {variant!r}")
    recipes, shards = read_recipes(), config_shards()
    problems = coverage_problems(recipes, shards)
    if problems:
        raise ValueError("the recipe table does not match the built-in configs:\n  " + "\n  ".join(problems))
    root = Path(root)
    manifest = {"variant": variant, "seed": seed, "datasets": {}}
    for name in datasets or list(shards):
        manifest["datasets"][name] = write_dataset(root, recipes[name], shards[name], variant, seed)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return manifest


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to write the mirror in (hub server layout)")
    parser.add_argument("--variant", default="main", choices=("main", "truncated"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", help="comma-separated dataset names (default: all)")
    args = parser.parse_args()
    started = time.monotonic()
    result = write_mirror(args.root, args.variant, args.seed, args.datasets.split(",") if args.datasets else None)
    for name, entry in result["datasets"].items():
        print(f"{name:22s} train {entry['train_examples']:5d} test {entry['test_examples']:4d} "
              f"planted {sorted(entry['planted'])} expected {entry['expected_bad']}")
    print(f"written in {time.monotonic() - started:.0f} s")
