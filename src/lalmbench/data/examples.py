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

A key whose members hold neither audio nor JSON (a README.txt in a shard) is part of no example: it is
counted apart (`stray_members`), never as an unusable example.

Problems never pass silently. One account per dataset (`BadDataCounter`) holds everything unusable, each
example once however many passes and resumes read it (the 1% is of a dataset's distinct examples):
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
checkpoint, so a resumed run judges exactly as the run it continues. (One imprecision remains: resumed with
another number of processes, a dataset with fewer shards than processes has its shards' records split
anew, and examples of a share left halfway may be counted twice in the number read.)
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
    members: tuple[str, ...] = ()  # the member names as the shard has them
    stray: bool = False  # no audio and no JSON: members that are part of no example (a README), not an example


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
    """Per-dataset account of distinct examples: how many were read, which are unusable and why (one sample
    message per reason), which members belong to no example, and how many full passes were counted.

    An example is counted once however often it is read: `seen` counts per share of a shard (the shard, or
    one process's share of its records) only until that share was read to its end (`complete`); the
    unusable ones are kept by identity (shard, key, text index; -1 for a whole record), so a clip read or
    decoded again on a later pass, or after a resume, is the same entry. Everything here is JSON-safe
    (`as_dict`/`from_dict`), as checkpoints keep it.
    """

    seen: dict = field(default_factory=lambda: defaultdict(Counter))  # dataset -> {share: examples counted}
    complete: dict = field(default_factory=lambda: defaultdict(set))  # dataset -> shares read to their end
    unusable: dict = field(default_factory=lambda: defaultdict(dict))  # dataset -> {(shard, key, text): reason}
    samples: dict = field(default_factory=lambda: defaultdict(dict))
    shards: dict = field(default_factory=lambda: defaultdict(set))
    passes: Counter = field(default_factory=Counter)
    stray: dict = field(default_factory=lambda: defaultdict(set))  # dataset -> {(shard, member name)}

    def count_seen(self, dataset: str, n: int = 1, share: str = "") -> None:
        self.seen[dataset][share] += n

    def counts_share(self, dataset: str, share: str) -> bool:
        """Whether reading `share` counts its examples: not once it was read to its end."""
        return share not in self.complete[dataset]

    def finish_share(self, dataset: str, share: str) -> None:
        """`share` was read to its end: its examples are all counted."""
        self.complete[dataset].add(share)

    def count_pass(self, dataset: str) -> None:
        """A full pass over `dataset` ended: from now on its fraction is judged whatever the count."""
        self.passes[dataset] += 1

    def count_bad(self, dataset: str, reason: str, shard: str, detail: str, key: str | None = None,
                  text_index: int = -1) -> None:
        """Example `key` (its text `text_index`, -1 for the whole record) of `shard` is unusable; counted
        once however often it comes. Without a key the detail stands for the example."""
        self.unusable[dataset].setdefault((str(shard), detail if key is None else key, text_index), reason)
        self.samples[dataset].setdefault(reason, detail)
        self.shards[dataset].add(str(shard))

    def count_stray(self, dataset: str, shard: str, member: str) -> None:
        """A member that is part of no example (no audio and no label under its key, e.g. a README)."""
        self.stray[dataset].add((str(shard), member))

    def seen_total(self, dataset: str) -> int:
        return sum(self.seen[dataset].values())

    def skipped(self, dataset: str) -> dict[str, int]:
        return dict(Counter(self.unusable[dataset].values()))

    def bad_total(self, dataset: str) -> int:
        return len(self.unusable[dataset])

    def check(self, dataset: str, max_fraction: float) -> None:
        """Judge the whole count (a full pass, a test set): stop when more than `max_fraction` is unusable."""
        seen, bad = self.seen_total(dataset), self.bad_total(dataset)
        if seen and bad / seen > max_fraction:
            raise self._error(dataset, f"{bad} of {seen} examples ({bad / seen:.1%}) are unusable, above the "
                                       f"limit of {max_fraction:.1%}",
                              "Re-download the shards (delete them and run `lalmbench download`), fix the key in "
                              "the task config, or raise max_bad_fraction with --args.")

    def check_partial(self, dataset: str, max_fraction: float) -> None:
        """The rule while a pass is under way (module docstring): stop on a plainly broken dataset, and judge
        the fraction only once enough examples were seen for it to mean something."""
        seen, bad = self.seen_total(dataset), self.bad_total(dataset)
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
        for dataset in self.datasets():
            if self.passes[dataset]:
                self.check(dataset, max_fraction)
            else:
                self.check_partial(dataset, max_fraction)

    def datasets(self) -> list[str]:
        return sorted(name for name in set(self.seen) | set(self.unusable) | set(self.stray)
                      if self.seen[name] or self.unusable[name] or self.stray[name])

    def problems(self, dataset: str) -> str:
        """The unusable examples per reason, with a sample each: `missing key: 4 (e.g. s.tar:k has no ...)`."""
        return "; ".join(f"{reason}: {count} (e.g. {self.samples[dataset][reason]})"
                         for reason, count in self.skipped(dataset).items())

    def _error(self, dataset: str, what: str, advice: str) -> DataError:
        reasons = self.problems(dataset)
        shards = ", ".join(sorted(Path(s).name for s in self.shards[dataset])[:10])
        return DataError(f"dataset {dataset}: {what}. {reasons}. Shards: {shards}. {advice}")

    def as_dict(self) -> dict:
        """Per dataset: the distinct examples read, the unusable ones per reason with a sample each and by
        identity ([shard, key, text index, reason]), the full passes, the shards with unusable examples, the
        members that are part of no example ([shard, member]), and what resuming needs (examples counted
        per shard share, the shares read to their end). JSON-safe."""
        return {name: {"examples_seen": self.seen_total(name), "skipped": self.skipped(name),
                       "skipped_total": self.bad_total(name), "samples": dict(self.samples.get(name, {})),
                       "full_passes": self.passes[name], "shards": sorted(self.shards.get(name, ())),
                       "stray_members": [list(item) for item in sorted(self.stray.get(name, ()))],
                       "unusable_examples": [[*identity, reason] for identity, reason
                                             in sorted(self.unusable.get(name, {}).items())],
                       "seen_by_share": dict(sorted(self.seen.get(name, {}).items())),
                       "complete_shares": sorted(self.complete.get(name, ()))}
                for name in self.datasets()}

    @classmethod
    def from_dict(cls, data: dict) -> "BadDataCounter":
        """The inverse of as_dict. An account written before examples were kept by identity (counts only)
        keeps its counts: its examples stand under placeholder identities."""
        counter = cls()
        for name, entry in data.items():
            if "seen_by_share" in entry:
                counter.seen[name].update(entry["seen_by_share"])
            elif entry.get("examples_seen"):
                counter.seen[name][""] = entry["examples_seen"]
            counter.complete[name].update(entry.get("complete_shares", ()))
            if "unusable_examples" in entry:
                for shard, key, text_index, reason in entry["unusable_examples"]:
                    counter.unusable[name][(shard, key, int(text_index))] = reason
            else:
                for reason, count in entry.get("skipped", {}).items():
                    for index in range(count):
                        counter.unusable[name][("", f"{reason} (counted earlier) {index}", -1)] = reason
            counter.samples[name].update(entry.get("samples", {}))
            counter.passes[name] = entry.get("full_passes", 0)
            counter.shards[name].update(entry.get("shards", ()))
            counter.stray[name].update(tuple(item) for item in entry.get("stray_members", ()))
        return counter

    def merge(self, other: "BadDataCounter") -> None:
        """Take in `other`'s account. Identities make it a union: an example both hold counts once, a share
        both counted counts with the larger count (the same share read by two accounts, e.g. before and after
        a resume). Passes are not added: counts that cover a full pass (of any part merged, e.g. a rank's
        share) keep being judged as a whole."""
        for name, shares in other.seen.items():
            for share, count in shares.items():
                self.seen[name][share] = max(self.seen[name][share], count)
        for name, shares in other.complete.items():
            self.complete[name] |= shares
        for name, passes in other.passes.items():
            self.passes[name] = max(self.passes[name], passes)
        for name, examples in other.unusable.items():
            for identity, reason in examples.items():
                self.unusable[name].setdefault(identity, reason)
            for reason, detail in other.samples[name].items():
                self.samples[name].setdefault(reason, detail)
            self.shards[name] |= other.shards[name]
        for name, members in other.stray.items():
            self.stray[name] |= members

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


def _finish_record(shard: str, key: str, members: dict[str, bytes], names: tuple[str, ...] = ()) -> Record:
    audio_ext = next((ext for ext in AUDIO_EXTENSIONS if ext in members), None)
    raw_json = members.get("json")
    if audio_ext is None and raw_json is None:
        return Record(shard, key, None, None, None, f"part of no example (members {sorted(members)}: no audio, no "
                      ".json)", names, stray=True)
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
    return Record(shard, key, members.get(audio_ext) if audio_ext else None, audio_ext, meta, problem, names)


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
    current_key, members, names, finished, last_finished = None, {}, [], 0, None
    try:
        with tarfile.open(shard, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, ext = _split_member_name(member.name)
                if key.startswith("__") or not ext:
                    continue
                if current_key is not None and key != current_key:
                    yield _finish_record(shard, current_key, members, tuple(names))
                    finished, last_finished, members, names = finished + 1, current_key, {}, []
                current_key = key
                handle = archive.extractfile(member)
                members[ext] = handle.read() if handle is not None else b""
                names.append(member.name)
            early_end = _early_end(archive)
            if early_end is not None:
                raise tarfile.ReadError(early_end)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        # The record being read when the damage came may have lost members: it is not handed out.
        raise damaged_shard_error(shard, finished, last_finished, f"{type(exc).__name__}: {exc}") from exc
    if current_key is not None:
        yield _finish_record(shard, current_key, members, tuple(names))


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


def count_examples(shards: list, key: str | None, protocol: str = "official", at_most: int | None = None) -> int:
    """How many examples `shards` hold by the protocol's target rules, read without probing or decoding audio
    (so a clip whose audio turns out unreadable is among them): the total a progress display counts down.
    With `at_most`, reading stops there."""
    total = 0
    for shard in shards:
        for record in iter_records(shard):
            if record.problem is not None:
                continue
            texts = select_texts(record.meta, key, protocol) or []
            total += sum(1 for text in texts if isinstance(text, str) and not looks_corrupted(text))
            if at_most is not None and total >= at_most:
                return at_most
    return total


def shard_share(shard: str | Path, rank: int = 0, world: int = 1) -> str:
    """The name under which the examples of one reader's share of a shard are counted (BadDataCounter)."""
    return str(shard) if world == 1 else f"{shard} [records {rank} mod {world}]"


def iter_examples(dataset: str, shard: str | Path, key: str | None, counter: BadDataCounter,
                  epoch: int = 0, start_record: int = 0, start_text: int = 0, rank: int = 0, world: int = 1,
                  protocol: str = "official") -> Iterator[tuple[int, int, Example]]:
    """Examples of one shard, as (record index, text index, example); bad ones are counted and skipped.

    Each example is counted once (BadDataCounter): the examples of a share read to its end before are not
    counted again, and records before `start_record` (and texts before `start_text` in that record) are
    skipped without being counted again, so a resumed stream counts each example once. With `world` > 1
    only the records whose index is `rank` modulo `world` are taken; the others belong to other
    processes, which count them. Members of no example (no audio, no JSON) are counted apart as stray.
    `protocol` decides what counts as a target text (module docstring).
    """
    share = shard_share(shard, rank, world)
    counting = counter.counts_share(dataset, share)
    if counting and start_record == 0 and start_text == 0:
        counter.seen[dataset][share] = 0  # read from its start: a count left by a reader that stopped halfway goes
    name = Path(shard).name

    def seen(n: int = 1) -> None:
        if counting:
            counter.count_seen(dataset, n, share)

    for record_index, record in enumerate(iter_records(shard)):
        if record_index < start_record or record_index % world != rank:
            continue
        if record.stray:
            for member in record.members:
                counter.count_stray(dataset, str(shard), member)
            continue
        if record.problem is not None:
            seen()
            counter.count_bad(dataset, "bad record", str(shard), f"{name}:{record.key}: {record.problem}", record.key)
            continue
        texts = select_texts(record.meta, key, protocol)
        first_text = start_text if record_index == start_record else 0
        if texts is None:
            seen()
            counter.count_bad(dataset, "missing key", str(shard),
                              f"{name}:{record.key} has no field {key!r} (nor {list(DEFAULT_TEXT_KEYS)}); "
                              f"its JSON keys are {sorted(record.meta)}", record.key)
            continue
        try:
            seconds = probe_duration(record.audio)
        except AudioDecodeError as exc:
            seen()
            counter.count_bad(dataset, "undecodable audio", str(shard), f"{name}:{record.key}: {exc}", record.key)
            continue
        for text_index, text in enumerate(texts):
            if text_index < first_text:
                continue
            seen()
            if not isinstance(text, str):
                counter.count_bad(dataset, "target not text", str(shard),
                                  f"{name}:{record.key}: target list item {text!r} ({type(text).__name__}) "
                                  "is not a string (the published system stops on it)", record.key, text_index)
                continue
            if looks_corrupted(text):
                counter.count_bad(dataset, "corrupt text", str(shard), f"{name}:{record.key}: {text[:40]!r}",
                                  record.key, text_index)
                continue
            ref = ExampleRef(dataset, str(shard), record.key, text_index, epoch)
            yield record_index, text_index, Example(ref, record.audio, text, seconds)
    counter.finish_share(dataset, share)
