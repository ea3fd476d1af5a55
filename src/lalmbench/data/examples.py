"""WebDataset shards -> records -> examples (one per target text), with bad data counted.

A shard is a tar (optionally gzip) whose members are `<key>.<ext>`; members sharing a key form one
record: one audio member (wav, flac, mp3, ogg, opus) and one `.json`. The target text comes from the
JSON field named by the dataset's `key` (`a;b;c`: first present wins, then captions, caption, text).
A list gives one example per text; a number becomes its string. What counts as a target depends on the
protocol:
  - official (as the published `text_from_json`): any string, the empty one included, is a target, and
    so is a number or a bool ("True", "False"); a list is taken as it is, and a non-empty list stops the
    search for a key. A list item that is not a string is counted as bad data (the published pipeline
    stops with a TypeError on it, so it has no number to reproduce).
  - corrected: empty or blank strings and bools are no target (the next key is tried); a list keeps its
    non-blank strings and numbers.
Under both, a target that looks corrupted (the published heuristic, `looks_corrupted`) is skipped.

Problems never pass silently. One account per dataset (`BadDataCounter`) holds everything unusable:
what the reader skips (a record without audio or JSON, an unreadable audio header, a missing target
field, corrupt text) and what the batch maker drops (audio that fails to decode after its header looked
fine, in the main process or a loader worker). A damaged shard (cut short, a bad member header, corrupt
gzip data) is not counted: the examples after the damage cannot be read, so nothing tells how many were
lost. The run stops instead (DataError), naming the shard and how to fetch it again.

When more than `max_bad_fraction` of a dataset is unusable the run stops (DataError) naming the
dataset, the counts, each problem with an example, the shards and what to do (`BadDataCounter.judge`):
  - while a dataset's first pass is under way (`check_partial`): only once max(100, 10 /
    max_bad_fraction) examples were seen (1000 at the default 1%: about 10 unusable ones at the limit),
    so a few bad examples in a small first shard do not stop a dataset that is sound as a whole. A
    plainly broken dataset (a wrong key, a wrong format) still stops early: when 50 or more examples
    were read and none was usable, whatever the limit;
  - once a full pass over it was counted, and for a test set (`check`): on everything counted so far,
    whatever the number.
In training the reader judges what it read as it reads, and every batch handed to the trainer is judged
on the whole account, decode failures included (`batches.stream_batches`). Both are restored from a
checkpoint, so a resumed run judges exactly as the run it continues.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lalmbench.data.audio import AUDIO_EXTENSIONS, AudioDecodeError, probe_duration
from lalmbench.errors import DataError

DEFAULT_TEXT_KEYS = ("captions", "caption", "text")
JUDGE_AFTER = 100  # examples seen (and at least 10 / max_bad_fraction) before a partial count is judged
BROKEN_AFTER = 50  # this many examples seen and none usable: the dataset is broken, whatever the fraction


@dataclass
class Record:
    """One tar record: the audio bytes and the parsed JSON, with where it came from."""

    shard: str
    key: str
    audio: bytes | None
    audio_ext: str | None
    meta: dict | None
    problem: str | None = None  # why the record is unusable, None when fine


@dataclass(frozen=True)
class ExampleRef:
    """Where an example comes from: enough to read it again from its shard (for resume)."""

    dataset: str
    shard: str
    key: str
    text_index: int
    epoch: int = 0


@dataclass
class Example:
    ref: ExampleRef
    audio: bytes
    text: str
    seconds: float
    token_count: int = 0


@dataclass
class BadDataCounter:
    """Per-dataset counts of skipped examples by reason, with one sample message per reason, and the
    number of full passes the counts cover."""

    seen: Counter = field(default_factory=Counter)
    bad: dict = field(default_factory=lambda: defaultdict(Counter))
    samples: dict = field(default_factory=lambda: defaultdict(dict))
    shards: dict = field(default_factory=lambda: defaultdict(set))
    passes: Counter = field(default_factory=Counter)

    def count_seen(self, dataset: str, n: int = 1) -> None:
        self.seen[dataset] += n

    def count_pass(self, dataset: str) -> None:
        """A full pass over `dataset` ended: from now on its fraction is judged whatever the count."""
        self.passes[dataset] += 1

    def count_bad(self, dataset: str, reason: str, shard: str, detail: str) -> None:
        self.bad[dataset][reason] += 1
        self.samples[dataset].setdefault(reason, detail)
        self.shards[dataset].add(shard)

    def bad_total(self, dataset: str) -> int:
        return sum(self.bad[dataset].values())

    def check(self, dataset: str, max_fraction: float) -> None:
        """Judge the whole count (a full pass, a test set): stop when more than `max_fraction` is unusable."""
        seen, bad = self.seen[dataset], self.bad_total(dataset)
        if seen and bad / seen > max_fraction:
            raise self._error(dataset, f"{bad} of {seen} examples ({bad / seen:.1%}) are unusable, above the "
                                       f"limit of {max_fraction:.1%}",
                              "Re-download the shards (delete them and run `lalmbench download`), fix the key in "
                              "the task config, or raise max_bad_fraction with --args.")

    def check_partial(self, dataset: str, max_fraction: float) -> None:
        """The rule while a pass is under way (module docstring): stop on a plainly broken dataset, and judge
        the fraction only once enough examples were seen for it to mean something."""
        seen, bad = self.seen[dataset], self.bad_total(dataset)
        if seen >= BROKEN_AFTER and bad == seen:
            raise self._error(dataset, f"none of the {seen} examples read so far is usable",
                              "Check the key in the task config and the shards (delete them and run `lalmbench "
                              "download` to fetch them again).")
        enough = max(JUDGE_AFTER, 10 / max_fraction) if max_fraction > 0 else JUDGE_AFTER
        if seen >= enough:
            self.check(dataset, max_fraction)

    def judge(self, max_fraction: float) -> None:
        """Every dataset by the rule of the moment: the whole count once a full pass was counted, else the
        partial rule."""
        for dataset in sorted(set(self.seen) | set(self.bad)):
            if self.passes[dataset]:
                self.check(dataset, max_fraction)
            else:
                self.check_partial(dataset, max_fraction)

    def _error(self, dataset: str, what: str, advice: str) -> DataError:
        reasons = "; ".join(f"{reason}: {count} (e.g. {self.samples[dataset][reason]})"
                            for reason, count in self.bad[dataset].items())
        shards = ", ".join(sorted(Path(s).name for s in self.shards[dataset])[:10])
        return DataError(f"dataset {dataset}: {what}. {reasons}. Shards: {shards}. {advice}")

    def as_dict(self) -> dict:
        return {name: {"examples_seen": self.seen[name], "skipped": dict(self.bad.get(name, {})),
                       "skipped_total": self.bad_total(name), "samples": dict(self.samples.get(name, {})),
                       "full_passes": self.passes[name], "shards": sorted(self.shards.get(name, ()))}
                for name in sorted(set(self.seen) | set(self.bad))}

    @classmethod
    def from_dict(cls, data: dict) -> "BadDataCounter":
        """The inverse of as_dict."""
        counter = cls()
        for name, entry in data.items():
            counter.seen[name] = entry.get("examples_seen", 0)
            for reason, count in entry.get("skipped", {}).items():
                counter.bad[name][reason] = count
            counter.samples[name].update(entry.get("samples", {}))
            counter.passes[name] = entry.get("full_passes", 0)
            counter.shards[name].update(entry.get("shards", ()))
        return counter

    def merge(self, other: "BadDataCounter") -> None:
        """Add `other`'s counts. Passes are not added: counts that cover a full pass (of any part merged,
        e.g. a rank's share) keep being judged as a whole."""
        self.seen.update(other.seen)
        for name, passes in other.passes.items():
            self.passes[name] = max(self.passes[name], passes)
        for name, counts in other.bad.items():
            self.bad[name].update(counts)
            for reason, detail in other.samples[name].items():
                self.samples[name].setdefault(reason, detail)
            self.shards[name] |= other.shards[name]

    def copy(self) -> "BadDataCounter":
        counts = BadDataCounter()
        counts.merge(self)
        return counts


def _split_member_name(name: str) -> tuple[str, str]:
    # WebDataset convention: the key is the path up to the first dot of the file name.
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, ext.lower() if dot else ""


def _finish_record(shard: str, key: str, members: dict[str, bytes]) -> Record:
    audio_ext = next((ext for ext in AUDIO_EXTENSIONS if ext in members), None)
    raw_json = members.get("json")
    meta, problem = None, None
    if raw_json is not None:
        try:
            meta = json.loads(raw_json.decode("utf-8"))
            if not isinstance(meta, dict):
                problem, meta = f"json is a {type(meta).__name__}, not an object", None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem = f"bad json: {exc}"
    else:
        problem = f"no .json member (members: {sorted(members)})"
    if audio_ext is None and problem is None:
        problem = f"no audio member (members: {sorted(members)}; expected one of {AUDIO_EXTENSIONS})"
    return Record(shard, key, members.get(audio_ext) if audio_ext else None, audio_ext, meta, problem)


def _early_end(archive: tarfile.TarFile) -> str | None:
    """Why a streamed archive stopped before its end-of-archive marker, or None when it did not.

    tarfile ends iteration quietly on a damaged member header or on a file cut at a member boundary;
    the members after that point would be lost without a word. A proper end is a zero block followed
    by zeros only.
    """
    stream = archive.fileobj
    position = getattr(stream, "pos", None)  # bytes consumed; the last header read started at archive.offset
    if position is not None and position - archive.offset < tarfile.BLOCKSIZE:
        return "the file ends without the end-of-archive marker (cut short at a member boundary)"
    while True:
        chunk = stream.read(1 << 16)
        if not chunk:
            return None
        if chunk.count(0) != len(chunk):
            return "a member header is damaged (bad checksum); the members after it cannot be read"


def damaged_shard_error(shard: str, records_read: int, last_key: str | None, why: str) -> DataError:
    """The error that stops a run on a damaged shard: which file, where it breaks, how to get it whole."""
    where = (f"after {records_read} complete record(s), the last one {last_key!r}" if last_key is not None
             else "before its first record")
    return DataError(
        f"shard {shard} is damaged {where}: {why}. The records after that point cannot be read and nothing "
        "tells how many they are, so the run stops rather than go on without them. Delete the file and fetch "
        "it again with `lalmbench download TASK` (the task or suite you ran; `lalmbench run` also fetches "
        "missing shards unless --no-download is given); a local shard needs a complete copy. If a fresh "
        "download is damaged too, leave the shard out of the task's `data` list.")


def iter_records(shard: str | Path) -> Iterator[Record]:
    """Records of one shard in tar order. A damaged shard (truncated, a bad member header, corrupt gzip
    data) raises DataError once the records before the damage were yielded (module docstring)."""
    shard = str(shard)
    current_key, members, finished, last_finished = None, {}, 0, None
    try:
        with tarfile.open(shard, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, ext = _split_member_name(member.name)
                if key.startswith("__") or not ext:
                    continue
                if current_key is not None and key != current_key:
                    yield _finish_record(shard, current_key, members)
                    finished, last_finished, members = finished + 1, current_key, {}
                current_key = key
                handle = archive.extractfile(member)
                members[ext] = handle.read() if handle is not None else b""
            early_end = _early_end(archive)
            if early_end is not None:
                raise tarfile.ReadError(early_end)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        # The record being read when the damage came may have lost members: it is not handed out.
        raise damaged_shard_error(shard, finished, last_finished, f"{type(exc).__name__}: {exc}") from exc
    if current_key is not None:
        yield _finish_record(shard, current_key, members)


def _as_texts(value) -> list[str] | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return [value] if value.strip() else None
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, list):
        texts = [str(v) for v in value if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip()]
        return texts or None
    return None


def _published_texts(value) -> list | None:
    """The texts the published pipeline takes from one JSON value (list items are left as they are)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (int, float)):  # a bool is an int here: True -> "True"
        return [str(value)]
    if isinstance(value, list):
        return value
    return None


def select_texts(meta: dict, key: str | None, protocol: str = "official") -> list | None:
    """The target texts of a record: the first of the `;`-separated keys present, then the defaults.

    Under `official` a list comes back as it is, so its items keep their positions (text indices) even
    when one of them is not a string; `iter_examples` counts those as bad.
    """
    keys = [k for k in (key or "").split(";") if k] + list(DEFAULT_TEXT_KEYS)
    take = _published_texts if protocol == "official" else _as_texts
    for name in keys:
        texts = take(meta.get(name))
        if texts:  # None and [] fall through to the next key; [""] does not
            return texts
    return None


def looks_corrupted(text: str) -> bool:
    """The published pipeline's heuristic: stacked combining marks, mostly symbols, or a few chars repeated."""
    if not text:
        return False
    combining = sum(1 for ch in text if 0x0300 < ord(ch) < 0x0370)
    alnum = sum(1 for ch in text if ch.isalnum())
    if combining > 3 or (len(text) - alnum) / len(text) > 0.5:
        return True
    return len(text) > 10 and len(set(text)) < 4


def iter_examples(dataset: str, shard: str | Path, key: str | None, counter: BadDataCounter,
                  epoch: int = 0, start_record: int = 0, start_text: int = 0, rank: int = 0, world: int = 1,
                  protocol: str = "official") -> Iterator[tuple[int, int, Example]]:
    """Examples of one shard, as (record index, text index, example); bad ones are counted and skipped.

    Records before `start_record` (and texts before `start_text` in that record) are skipped without
    being counted again, so a resumed stream counts each example once. With `world` > 1 only the records
    whose index is `rank` modulo `world` are taken; the others belong to other processes, which count them.
    `protocol` decides what counts as a target text (module docstring).
    """
    for record_index, record in enumerate(iter_records(shard)):
        if record_index < start_record or record_index % world != rank:
            continue
        if record.problem is not None:
            counter.count_seen(dataset)
            counter.count_bad(dataset, "bad record", str(shard),
                              f"{Path(shard).name}:{record.key}: {record.problem}")
            continue
        texts = select_texts(record.meta, key, protocol)
        first_text = start_text if record_index == start_record else 0
        if texts is None:
            counter.count_seen(dataset)
            counter.count_bad(dataset, "missing key", str(shard),
                              f"{Path(shard).name}:{record.key} has no field {key!r} (nor {list(DEFAULT_TEXT_KEYS)}); "
                              f"its JSON keys are {sorted(record.meta)}")
            continue
        try:
            seconds = probe_duration(record.audio)
        except AudioDecodeError as exc:
            counter.count_seen(dataset)
            counter.count_bad(dataset, "undecodable audio", str(shard), f"{Path(shard).name}:{record.key}: {exc}")
            continue
        for text_index, text in enumerate(texts):
            if text_index < first_text:
                continue
            counter.count_seen(dataset)
            if not isinstance(text, str):
                counter.count_bad(dataset, "target not text", str(shard),
                                  f"{Path(shard).name}:{record.key}: target list item {text!r} ({type(text).__name__}) "
                                  "is not a string (the published system stops on it)")
                continue
            if looks_corrupted(text):
                counter.count_bad(dataset, "corrupt text", str(shard), f"{Path(shard).name}:{record.key}: {text[:40]!r}")
                continue
            ref = ExampleRef(dataset, str(shard), record.key, text_index, epoch)
            yield record_index, text_index, Example(ref, record.audio, text, seconds)
