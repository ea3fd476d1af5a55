"""The offline demo: a synthetic task suite written as real WebDataset shards, trained and scored.

Four tasks, generated deterministically from a seed, each a different kind of answer:
  tones   single-label classification (Accuracy): one of six tones, named by a colour
  chords  multi-label classification (mAP): two or three of five notes sounding together
  count   counting (Accuracy): how many tones of random pitch sound at once (one to four), like
          counting concurrent speakers
  melody  transcription (iWER): a sequence of three or four notes, written as solfege words
Clips vary in sample rate (16, 22.05, 44.1 kHz), container (WAV, FLAC) and channels (mono, stereo),
so the demo also exercises decoding, mixing down and resampling. The chance level printed beside each
score is the score of the best constant answer on the test set.

The demo trains LogMelEncoder + the `tiny-random` decoder with a learning rate and step count tuned
for a 2-core CPU (see DEMO_TRAINING); everything else is the protocol's pipeline.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np

from lalmbench.config import dump_yaml
from lalmbench.io_utils import atomic_write_text
from lalmbench.process_state import restores_process_state

TONE_CLASSES = {"red": 300.0, "green": 450.0, "blue": 650.0, "yellow": 900.0, "orange": 1300.0, "purple": 1900.0}
NOTES = {"do": 262.0, "re": 330.0, "mi": 392.0, "fa": 523.0, "sol": 659.0}
COUNT_WORDS = ["one", "two", "three", "four"]
COUNT_PITCHES = [300.0 * 1.35 ** k for k in range(10)]  # 300 Hz to 4.4 kHz, well apart on the mel scale

DEMO_TRAINING = {
    "decoder_model_name": "tiny-random",
    "max_steps": 5000,
    "learning_rate": 3e-3,
    "warmup_steps": 100,
    "save_steps": 1000,
    "logging_steps": 500,
    "shuffle_buffer": 64,
    "sort_buffer": 16,
}

TASKS = {
    # name: (prompt, metric, metric_args, train examples, test examples)
    "tones": ("Classify the tone.", "Accuracy", {}, 480, 48),
    "chords": ("Which notes sound together?", "mAP", {"num_classes": 5}, 480, 48),
    "count": ("How many tones sound at once?", "Accuracy", {}, 480, 48),
    "melody": ("Transcribe the melody.", "iWER", {}, 480, 48),
}


def _tone(freq: float, seconds: float, rate: int, rng: np.random.Generator, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * freq * t + phase) + 0.3 * np.sin(4 * np.pi * freq * t + phase)
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    return amplitude * wave * fade


def _noise(samples: int, rng: np.random.Generator, level: float = 0.02) -> np.ndarray:
    return level * rng.standard_normal(samples)


def _encode(audio: np.ndarray, rate: int, fmt: str) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1).astype(np.float32), rate, format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()


def make_example(task: str, rng: np.random.Generator) -> tuple[np.ndarray, int, str, str]:
    """(audio [samples] or [samples, channels], sample rate, container, label) for one synthetic example."""
    if task == "tones":
        rate = 16_000
        label = str(rng.choice(list(TONE_CLASSES)))
        seconds = rng.uniform(0.6, 1.2)
        freq = TONE_CLASSES[label] * rng.uniform(0.98, 1.02)
        audio = _tone(freq, seconds, rate, rng) + _noise(int(seconds * rate), rng)
        return audio, rate, "wav", label
    if task == "chords":
        rate = 22_050
        count = int(rng.integers(2, 4))
        names = sorted(rng.choice(list(NOTES), size=count, replace=False), key=list(NOTES).index)
        seconds = rng.uniform(0.8, 1.2)
        audio = sum(_tone(NOTES[n], seconds, rate, rng, 0.2) for n in names) + _noise(int(seconds * rate), rng)
        return audio, rate, "flac", ";".join(names)
    if task == "count":
        # Like counting concurrent speakers: how many tones (of random pitches) sound at once.
        rate = 16_000
        voices = int(rng.integers(1, 5))
        seconds = rng.uniform(1.0, 1.5)
        freqs = rng.choice(COUNT_PITCHES, size=voices, replace=False)
        audio = sum(_tone(f, seconds, rate, rng, 0.2) for f in freqs) + _noise(int(seconds * rate), rng)
        stereo = np.stack([audio, audio * 0.8], axis=1)  # exercises mixing down to mono
        return stereo, rate, "wav", COUNT_WORDS[voices - 1]
    if task == "melody":
        rate = 44_100
        length = int(rng.integers(3, 5))
        names = [str(n) for n in rng.choice(list(NOTES), size=length)]
        while len(set(names)) == 1:  # "do do do do" would look corrupted (few distinct characters)
            names = [str(n) for n in rng.choice(list(NOTES), size=length)]
        pieces = [_tone(NOTES[n], 0.3, rate, rng) for n in names]
        audio = np.concatenate(pieces)
        audio = audio + _noise(len(audio), rng)
        return audio, rate, "wav", " ".join(names)
    raise KeyError(task)


def write_shards(directory: Path, task: str, split: str, count: int, shards: int, rng: np.random.Generator) -> list[Path]:
    import webdataset as wds

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    per_shard = -(-count // shards)
    for shard in range(shards):
        path = directory / f"{task}-{split}-{shard:06d}.tar.gz"
        with wds.TarWriter(str(path), compress=True, mtime=0.0) as sink:
            for index in range(shard * per_shard, min(count, (shard + 1) * per_shard)):
                audio, rate, fmt, label = make_example(task, rng)
                key = f"{task}_{split}_{index:05d}"
                meta = {"label": label, "task": task, "duration": round(len(audio) / rate, 3)}
                sink.write({"__key__": key, fmt: _encode(audio, rate, fmt), "json": json.dumps(meta).encode()})
        paths.append(path)
    return paths


def best_constant_score(metric: str, references: list[str], metric_args: dict) -> float:
    """Chance level: the best score a single fixed answer reaches on these references."""
    from lalmbench import metrics

    return metrics.chance_level(metric, references, **metric_args)


def write_demo_data(directory: str | Path, seed: int = 0, train_examples: int | None = None,
                    test_examples: int | None = None, training: dict | None = None) -> tuple[Path, Path, dict[str, float]]:
    """Write shards plus train.yaml and eval.yaml; returns their paths and the chance level per eval task.

    `train_examples` / `test_examples` shrink the suite (tests); `training` replaces DEMO_TRAINING fields.
    """
    directory = Path(directory).resolve()
    train_data, eval_data, chance = {}, {}, {}
    for index, (task, (prompt, metric, metric_args, n_train, n_test)) in enumerate(TASKS.items()):
        n_train, n_test = train_examples or n_train, test_examples or n_test
        train_paths = write_shards(directory / task, task, "train", n_train, 2, np.random.default_rng([seed, index, 0]))
        write_shards(directory / task, task, "test", n_test, 1, np.random.default_rng([seed, index, 1]))
        train_data[task] = {"prompt": prompt, "data": [str(directory / task / f"{task}-train-{{000000..{len(train_paths) - 1:06d}}}.tar.gz")],
                            "key": "label", "prob": 1}
        eval_name = f"eval_{task}"
        eval_data[eval_name] = {"data": {"data": [str(directory / task / f"{task}-test-000000.tar.gz")], "key": "label",
                                         "prompt": prompt},
                                "batch_size": 16, "num_workers": 0, "metric": metric, "metric_args": metric_args,
                                "weight": 1}
    # Chance levels come from the written test labels (read back, as a user would).
    from lalmbench.data.examples import iter_records

    for task, (prompt, metric, metric_args, _, _) in TASKS.items():
        labels = [r.meta["label"] for r in iter_records(directory / task / f"{task}-test-000000.tar.gz")]
        chance[f"eval_{task}"] = best_constant_score(metric, labels, metric_args)
    train_yaml, eval_yaml = directory / "train.yaml", directory / "eval.yaml"
    atomic_write_text(train_yaml, "# lalmbench demo: synthetic tasks (see lalmbench/demo.py)\n" +
                      dump_yaml({**DEMO_TRAINING, **(training or {}), "train_data": train_data}))
    atomic_write_text(eval_yaml, dump_yaml(eval_data))
    return train_yaml, eval_yaml, chance


def demo_data(directory: str | Path, seed: int, train_examples: int | None = None,
              test_examples: int | None = None) -> tuple[Path, Path, dict[str, float]]:
    """The demo's data for `seed` in its own folder, written once and reused after.

    Writing it again would give the shards new modification times, which are part of the training
    identity: a finished demo would train again. One folder per seed keeps each seed's run apart.
    """
    from lalmbench import __version__
    from lalmbench.io_utils import atomic_write_json

    directory = Path(directory).resolve()
    marker = directory / "demo_data.json"
    if marker.is_file():
        record = json.loads(marker.read_text())
        files = [directory / name for name in record.get("files", [])]
        same = {"seed": seed, "lalmbench": __version__, "examples": [train_examples, test_examples]}
        if all(record.get(k) == v for k, v in same.items()) and files and all(path.is_file() for path in files):
            return directory / "train.yaml", directory / "eval.yaml", record["chance"]
    train_yaml, eval_yaml, chance = write_demo_data(directory, seed, train_examples, test_examples)
    files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p != marker)
    atomic_write_json(marker, {"seed": seed, "lalmbench": __version__, "examples": [train_examples, test_examples],
                               "chance": chance, "files": files})
    return train_yaml, eval_yaml, chance


def usable_output_dir(path: str | Path, option: str = "--output-dir") -> Path:
    """`path` made if needed and shown to be writable; an OutputDirError saying which and what to do if not.

    Checked before the first shard is written, so a wrong path costs no time and leaves nothing behind."""
    import errno
    import tempfile

    from lalmbench.errors import OutputDirError

    path = Path(path)
    todo = f"choose another {option} (a new directory, or an existing one you can write to)"
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{option} {path} is a file, not a directory; it was left as it is. {todo}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((parent for parent in [path, *path.parents] if parent.exists() and not parent.is_dir()), None)
        where = f": {blocker} is a file, not a directory" if blocker is not None else ""
        raise OutputDirError(f"{option} {path} cannot be made{where}. {todo}") from None
    except OSError as exc:
        raise OutputDirError(f"{option} {path} cannot be made ({exc.strerror or exc}). {todo}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lalmbench-write-probe-"):
            pass
    except OSError as exc:
        why = "a read-only file system" if exc.errno == errno.EROFS else exc.strerror or str(exc)
        raise OutputDirError(f"{option} {path} is not writable ({why}). {todo}") from None
    return path


@restores_process_state  # HF_HUB_OFFLINE for the demo's run only
def demo_command(output_dir: str = "demo_output", data_only: str | None = None, seed: int = 0,
                 overrides: dict | None = None) -> int:
    if data_only:
        usable_output_dir(data_only, "--output-dir" if data_only == output_dir else "--data-only")
        train_yaml, eval_yaml, chance = write_demo_data(data_only, seed)
        print(f"wrote synthetic shards, {train_yaml} and {eval_yaml}")
        print(f"run them with: lalmbench run lalmbench.encoders.LogMelEncoder {train_yaml} {eval_yaml}")
        return 0
    from lalmbench.runner import run

    # The demo needs nothing from the hub (synthetic shards, tiny-random decoder): no reachability probe,
    # no warning about a hub it never asks for. A user's own HF_HUB_OFFLINE setting is kept.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    output = usable_output_dir(output_dir)
    train_yaml, eval_yaml, chance = demo_data(output / "data" / f"seed-{seed}", seed)
    run("lalmbench.encoders.LogMelEncoder", str(train_yaml), str(eval_yaml), model_args={},
                 overrides=dict(overrides or {}), output_dir=output / "runs",
                 extra_columns={name: {"chance": f"{value:.4f}"} for name, value in chance.items()})
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0
