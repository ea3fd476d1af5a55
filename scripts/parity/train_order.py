"""Both systems' training data order, as lists of batches of (key, target text, crop start).

`published_order` runs the published system's own training data loader (AudioTextTokenWebdataset with
training=True and resample=True, as XaresLLMTask.train_mlp builds it) after `transformers.set_seed(seed)`,
the call the published Trainer makes just before it builds the model and then the loader. The crop
start of each example is read without changing anything: a wrapper around the published crop function
replays the random state it is about to use. `lalmbench_order` draws the same number of batches from
lalmbench's training stream for protocol official (`data.official_stream.PublishedStream`).

Used by data_order_side_by_side.py and tests/fixtures/make_train_order_fixture.py.
"""

from __future__ import annotations

import random
from pathlib import Path

Batch = list  # [(key, text, crop start or None), ...]


def published_order(train_data: dict, steps: int, seed: int, workers: int, tokenizer, batch_size: int = 4,
                    sort_by_length: int = 128, crop_seconds: float = 30.0, progress=None) -> list[Batch]:
    """The first `steps` training batches of the published loader. `train_data`: name -> {data, prompt, key,
    prob}, as in a published train YAML. `progress(batches)` is called every 100 batches."""
    import transformers
    import xares_llm.audiowebdataset as published
    from xares_llm.audiowebdataset import AudioTextDataType, AudioTextTokenWebdataset

    crops: dict = {}
    crop_audio, preprocess, process = (published._random_crop_audio, published.preprocess_audio,
                                       published._process_sample_stream)

    def recording_crop(audio, max_audio_length, sr):
        limit = int(max_audio_length * sr)
        if audio.shape[-1] > limit:  # the draw the published function is about to make, replayed on a copy
            replay = random.Random()
            replay.setstate(random.getstate())
            crops["last"] = replay.randint(0, audio.shape[-1] - limit)
        return crop_audio(audio, max_audio_length, sr)

    def recording_preprocess(*args, **kwargs):
        crops["last"] = None
        audio, rate = preprocess(*args, **kwargs)
        crops[id(audio)] = crops["last"]  # every caption of the clip gets this very tensor
        return audio, rate

    def tagging_process(stream, *args, **kwargs):  # the filename carries the crop start (nothing reads it)
        for sample in process(stream, *args, **kwargs):
            sample["filename"] = (sample["filename"], crops.get(id(sample["audio"])))
            yield sample

    published._random_crop_audio, published.preprocess_audio = recording_crop, recording_preprocess
    published._process_sample_stream = tagging_process
    # The resampler builds its sinc kernel anew for every clip (most of the published loader's time here);
    # the kernel depends on the two rates only, so it is built once per pair: the same tensors, sooner.
    functional = __import__("torchaudio.functional", fromlist=["_get_sinc_resample_kernel"])
    build_kernel = functional._get_sinc_resample_kernel
    kernels: dict = {}

    def cached_kernel(*args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in kernels:
            kernels[key] = build_kernel(*args, **kwargs)
        return kernels[key]

    functional._get_sinc_resample_kernel = cached_kernel
    try:
        data = [AudioTextDataType(name=name, **spec) for name, spec in train_data.items()]
        source = AudioTextTokenWebdataset(data_urls=data, tokenizer=tokenizer, training=True, batch_size=batch_size,
                                          resample=True, sort_by_length=sort_by_length, num_workers=workers,
                                          crop_audio_length=crop_seconds)
        transformers.set_seed(seed)
        eos = tokenizer.eos_token

        def collate(samples):
            return [(s["filename"][0], s["text"][: -len(eos)] if eos and s["text"].endswith(eos) else s["text"],
                     s["filename"][1]) for s in samples]

        batches = []
        for batch in source.create_dataloader(collate_fn=collate):
            batches.append(batch)
            if len(batches) == steps:
                break
            if progress is not None and len(batches) % 100 == 0:
                progress(batches)
        return batches
    finally:
        published._random_crop_audio, published.preprocess_audio = crop_audio, preprocess
        published._process_sample_stream = process
        functional._get_sinc_resample_kernel = build_kernel


def lalmbench_stream(train_data: dict, seed: int, workers: int, tokenizer, batch_size: int = 4,
                     sort_by_length: int = 128, crop_seconds: float = 30.0, rank: int = 0, world: int = 1):
    """lalmbench's official training stream over the same data (of process `rank` of `world`)."""
    import glob

    from lalmbench.config import DatasetSpec
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.data.official_stream import PublishedStream
    from lalmbench.data.tokenizing import Tokenizing

    specs = [DatasetSpec(name=name, data=list(spec["data"]), prompt=spec.get("prompt", ""), key=spec.get("key"),
                         prob=spec.get("prob")) for name, spec in train_data.items()]
    import braceexpand
    shards = {s.name: [Path(p) for pattern in s.data for expanded in braceexpand.braceexpand(pattern)
                       for p in (glob.glob(expanded) or [expanded])] for s in specs}
    tokenizing = Tokenizing(tokenizer, {s.name: s.prompt for s in specs}, "official")
    return PublishedStream(specs, shards, batch_size, seed, tokenizing.count, BadDataCounter(), workers=workers,
                           sort_buffer=sort_by_length, crop_seconds=crop_seconds, rank=rank, world=world)


def as_items(batch) -> Batch:
    return [(e.ref.key, e.text, e.crop_start) for e in batch]


def lalmbench_order(train_data: dict, steps: int, seed: int, workers: int, tokenizer, **kwargs) -> list[Batch]:
    stream = lalmbench_stream(train_data, seed, workers, tokenizer, **kwargs)
    return [as_items(stream.next_batch()) for _ in range(steps)]


def recorded_published_order(path: Path, train_data: dict, steps: int, seed: int, workers: int, tokenizer,
                             reuse: bool = False, **kwargs) -> list[Batch]:
    """published_order, kept in `path` (JSON; written every 100 batches while it runs). With `reuse`, a
    recording made earlier with the same arguments and at least `steps` batches (complete or not: the first
    batches of a longer order are the order of a shorter run) is read instead of running the published
    loader again (it takes minutes)."""
    import json

    arguments = {"train_data": train_data, "seed": seed, "workers": workers, **kwargs}
    if reuse and path.is_file():
        saved = json.loads(path.read_text())
        same = {k: v for k, v in saved["arguments"].items() if k != "steps"} == json.loads(json.dumps(arguments))
        if same and len(saved["batches"]) >= steps:
            return [[tuple(item) for item in batch] for batch in saved["batches"][:steps]]

    def save(batches):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps({"arguments": {**arguments, "steps": steps}, "batches": batches}))
        path.with_suffix(".tmp").replace(path)

    batches = published_order(train_data, steps, seed, workers, tokenizer, progress=save, **kwargs)
    save(batches)
    return batches
