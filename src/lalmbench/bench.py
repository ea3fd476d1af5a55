"""`lalmbench bench`: training and evaluation speed on the benchmark workload, naive vs fast paths.

The workload is the one of the published speed reference: a Dasheng-base-sized encoder
(MelTransformerEncoder, random init), a SmolLM2-135M-shaped decoder (random init, vocabulary 49,152)
with LoRA r=8 on every linear layer, and a five-task mixture of synthetic clips (a class-pitched tone
plus noise, one-word labels) written as real .tar.gz WebDataset shards. Every path runs the project's
own pipeline (the protocol's training stream, as `lalmbench run` builds it: PublishedStream under
official, TrainStream under corrected -> BatchMaker -> Trainer; evaluate_task), from the same initial
weights over the same batches, in one process:

  naive            fp32, encoder every step, vocabulary logits at every position, no loader workers
  target_logits    + logits only where a label exists (the exact default)
  feature_cache    + encoder features cached per (clip, crop), filled by one pass over the data
  bf16             + bf16 autocast, TF32, non-deterministic kernels (not bit-exact)
  workers          + 2 loader processes decoding ahead
  compile_fast     + torch.compile over 64-position length buckets; CUDA graphs on a GPU (with --compile)
  compile_exact    feature_cache + torch.compile, eager dropout masks: exact mode (with --compile)

The compile paths run by default on a GPU and with --compile on a CPU (compiling costs minutes there
and gains little: CPU steps are not launch-bound). The exact paths are those that keep fp32 and
deterministic kernels and whose loss curve stays within EXACT_TOLERANCE of the naive one. After
training, each path takes one more step on a batch of four 30 s clips, the protocol's longest crop, to
measure the peak memory of the worst case. The figures file is rewritten after every path, so a run cut
short keeps what it measured; evaluation runs after the bf16 path, before the compile paths.

Before the paths, the data pipeline alone (stream -> BatchMaker) is timed for the protocol's stream and
then the other protocol's, over the same shards: both steps/s and their ratio are printed and recorded
(`data_stream`).

Evaluation compares a naive greedy loop (no KV cache, every row decoded until all rows end) with
AudioLLM.generate (KV cache, each row leaves the batch at EOS), in fp32 and bf16, each with and
without LoRA merged into the base weights. Figures go to a JSON file; the last line printed is
`speedup: X.XX`, the best fast training path over the naive one (steps/s).

`--quick` keeps the vocabulary, the decoder width and the data layout and shrinks depth, clip counts,
steps and evaluation so that it runs in minutes on a CPU; the sizes used are printed and recorded.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lalmbench.devices import PeakMemory
from lalmbench.process_state import restores_process_state
from lalmbench.protocols import DEFAULT_PROTOCOL

log = logging.getLogger("lalmbench")

# name, clip seconds, sample rate, classes, mixture weight (the reference workload)
WORKLOAD = [("kws", 1.0, 16_000, 30, 1.0), ("nsynth", 4.0, 16_000, 11, 3.0), ("esc", 5.0, 44_100, 50, 0.5),
            ("lang", 10.0, 16_000, 33, 3.0), ("music", 30.0, 22_050, 10, 2.0)]

FULL = {  # 200 steps per path: the span over which the exact paths must follow the naive loss curve
    "encoder": {"dim": 768, "layers": 12, "heads": 12},
    "decoder": {"hidden": 576, "layers": 30, "heads": 9, "kv_heads": 3, "intermediate": 1536, "vocab": 49152},
    "batch_size": 4, "train_clips_per_task": 24, "warmup_steps": 5, "measured_steps": 195,
    "eval_clips_per_task": 64, "eval_batch_size": 16, "max_new_tokens": 150, "data_steps": 50,
}
QUICK = {
    "encoder": {"dim": 768, "layers": 1, "heads": 12},
    "decoder": {"hidden": 576, "layers": 2, "heads": 9, "kv_heads": 3, "intermediate": 1536, "vocab": 49152},
    "batch_size": 4, "train_clips_per_task": 4, "warmup_steps": 2, "measured_steps": 6,
    "eval_clips_per_task": 4, "eval_batch_size": 4, "max_new_tokens": 12,
    "data_steps": 50,  # fewer steps leave the rate to which datasets the first batches drew
}

TINY = {  # for tests: every code path in seconds
    "encoder": {"dim": 32, "layers": 1, "heads": 2},
    "decoder": {"hidden": 32, "layers": 1, "heads": 2, "kv_heads": 1, "intermediate": 64, "vocab": 2048},
    "batch_size": 2, "train_clips_per_task": 2, "warmup_steps": 1, "measured_steps": 2,
    "eval_clips_per_task": 1, "eval_batch_size": 1, "max_new_tokens": 2, "data_steps": 3,
}

_FAST = {"feature_cache": "memory", "bf16": True, "tf32": True, "deterministic": False}
PATHS = [
    ("naive", {"target_logits_only": False}),
    ("target_logits", {}),
    ("feature_cache", {"feature_cache": "memory"}),
    ("bf16", _FAST),
    ("workers", {**_FAST, "num_workers": 2}),
    ("compile_fast", {**_FAST, "num_workers": 2, "compile": True, "length_bucket": 64,
                      "compile_mode": "reduce-overhead"}),  # CUDA graphs; plain compile on a CPU
    ("compile_exact", {"feature_cache": "memory", "compile": True}),
]
COMPILE_PATHS = ("compile_exact", "compile_fast")
EVAL_AFTER = "bf16"  # evaluation runs on this path's model, before the slower-to-build compile paths
EXACT_TOLERANCE = 1e-5  # the largest loss difference from the naive curve an exact path may show
# The published system on this workload, as the organizers measured it (docs/speed.md): one
# H200, fp32, batch 4; evaluation 44 s per 64 clips at batch 16 with answers running to 150 tokens.
PUBLISHED = {"device": "NVIDIA H200", "train_steps_per_second": 2.97, "eval_samples_per_second": 64 / 44}


# -- workload -----------------------------------------------------------------------------------------------
def _clip(seconds: float, rate: int, label: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    freq = 110.0 * 2 ** (label * 5.0 / classes)  # classes spread over five octaves
    wave = 0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return (wave + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def write_workload(directory: Path, train_clips: int, eval_clips: int, seed: int = 0) -> tuple[dict, dict]:
    """Write the five tasks as .tar.gz shards; return (train_data mapping, eval config mapping)."""
    import soundfile as sf
    import webdataset as wds

    train_data, eval_data = {}, {}
    for index, (task, seconds, rate, classes, weight) in enumerate(WORKLOAD):
        prompt = f"Which {task} class is this?"
        for split, count in (("train", train_clips), ("test", eval_clips)):
            rng = np.random.default_rng([seed, index, split == "test"])
            path = directory / task / f"{task}-{split}-000000.tar.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            with wds.TarWriter(str(path), compress=True, mtime=0.0) as sink:
                for number in range(count):
                    label = int(rng.integers(classes))
                    buffer = io.BytesIO()
                    sf.write(buffer, _clip(seconds, rate, label, classes, rng), rate, format="WAV", subtype="PCM_16")
                    meta = {"label": f"{task}{label:02d}", "duration": seconds}
                    sink.write({"__key__": f"{task}_{split}_{number:05d}", "wav": buffer.getvalue(),
                                "json": json.dumps(meta).encode()})
            if split == "train":
                train_data[task] = {"data": [str(path)], "prompt": prompt, "key": "label", "prob": weight}
            else:
                eval_data[f"eval_{task}"] = {"data": {"data": [str(path)], "prompt": prompt, "key": "label"},
                                             "metric": "Accuracy", "batch_size": 16, "weight": 1}
    return train_data, eval_data


def build_model(sizes: dict, config, device: torch.device, seed: int = 0):
    """(AudioLLM, tokenizer, encoder) with the benchmark shapes, random init from `seed`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lalmbench.encoders.contract import FrozenEncoder
    from lalmbench.encoders.mel_transformer import MelTransformerEncoder
    from lalmbench.model.audio_llm import AudioLLM, add_lora
    from lalmbench.model.decoder import _train_tiny_tokenizer

    tokenizer = _train_tiny_tokenizer()
    d = sizes["decoder"]
    eos = tokenizer.eos_token_id
    llama = LlamaConfig(vocab_size=d["vocab"], hidden_size=d["hidden"], intermediate_size=d["intermediate"],
                        num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                        num_key_value_heads=d["kv_heads"], max_position_embeddings=8192, rms_norm_eps=1e-5,
                        tie_word_embeddings=True, eos_token_id=eos, pad_token_id=eos, bos_token_id=eos)
    torch.manual_seed(seed)
    decoder = LlamaForCausalLM(llama)
    e = sizes["encoder"]
    encoder = MelTransformerEncoder(dim=e["dim"], layers=e["layers"], heads=e["heads"], seed=seed)
    torch.manual_seed(seed)
    decoder = add_lora(decoder, config.lora_r, config.lora_alpha, config.lora_dropout)
    model = AudioLLM(FrozenEncoder(encoder), decoder, tokenizer, config.target_logits_only,
                     protocol=config.protocol).to(device)
    return model, tokenizer


# -- measuring ----------------------------------------------------------------------------------------------
def _make_config(train_data: dict, sizes: dict, overrides: dict, device: torch.device,
                 protocol: str = DEFAULT_PROTOCOL):
    from lalmbench.config import TrainConfig

    steps = sizes["warmup_steps"] + sizes["measured_steps"]
    raw = {"train_data": train_data, "config_name": "bench", "protocol": protocol, "max_steps": steps,
           "warmup_steps": 1, "learning_rate": 1e-3, "per_device_train_batch_size": sizes["batch_size"],
           "save_steps": 10**9, "logging_steps": 10**9, "shuffle_buffer": 32, "sort_buffer": 16, "device": str(device),
           "max_new_tokens": sizes["max_new_tokens"], "eval_batch_size": sizes["eval_batch_size"], **overrides}
    return TrainConfig.from_mapping(raw, "bench")


def _whole_clips(spec, shards: dict, config, counter) -> list:
    """The examples of a training dataset whose clips the crop leaves whole (the same samples every epoch)."""
    from lalmbench.data.examples import iter_examples

    return [e for path in shards[spec.name] for _, _, e in iter_examples(spec.name, path, spec.key, counter)
            if e.seconds <= config.crop_audio_length]


def _fill_cache(cache, config, specs, shards, tokenizing, counter) -> int:
    """One pass over the training clips no longer than the crop (their features do not depend on the epoch)."""
    from lalmbench.data.batches import BatchMaker

    maker = BatchMaker(tokenizing, counter, config.sample_rate, config.crop_audio_length, None)
    filled = 0
    for spec in specs:
        examples = _whole_clips(spec, shards, config, counter)
        for start in range(0, len(examples), config.per_device_train_batch_size):
            batch = maker.make(examples[start:start + config.per_device_train_batch_size])
            if batch is not None:
                cache(batch)
                filled += len(batch["refs"])
    return filled


def time_data_streams(train_data: dict, sizes: dict, device: torch.device, protocol: str, steps: int) -> dict:
    """Steps per second of the data pipeline alone (stream -> BatchMaker: shards read, examples ordered, audio
    decoded, cropped and tokenized; a step is one global batch) for the protocol's training stream and for
    the other protocol's, one after the other in this process over the same shards."""
    from torch.utils.benchmark import Timer

    from lalmbench.data.batches import BatchMaker, stream_batches
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.data.tokenizing import Tokenizing
    from lalmbench.model.decoder import _train_tiny_tokenizer
    from lalmbench.phases.training import train_stream
    from lalmbench.train import batch_plan

    config = _make_config(train_data, sizes, {}, device, protocol)
    specs = list(config.train_data.values())
    shards = {s.name: [Path(p) for p in s.data] for s in specs}
    tokenizing = Tokenizing(_train_tiny_tokenizer(), {s.name: s.prompt for s in specs}, config.protocol)
    _, micro, accumulation = batch_plan(config, 1)
    rates = {}
    for published in (protocol == "official", protocol != "official"):  # the protocol's own stream first
        stream = train_stream(config, specs, shards, tokenizing.count, micro, published=published)
        maker = BatchMaker(tokenizing, BadDataCounter(), config.sample_rate, config.crop_audio_length,
                           stream.crop_fraction)
        batches = stream_batches(stream, maker, config.max_bad_fraction)
        timer = Timer("for _ in range(accumulation): next(batches)", num_threads=torch.get_num_threads(),
                      globals={"batches": batches, "accumulation": accumulation})
        rates[type(stream).__name__] = 1 / timer.timeit(steps).mean  # after two warm-up steps
    (timed, rate), (other, other_rate) = rates.items()
    return {"protocol": protocol, "stream": timed, "steps_per_second": rate, "other_stream": other,
            "other_steps_per_second": other_rate, "ratio_vs_other": rate / other_rate, "steps": steps}


def train_path(name: str, overrides: dict, sizes: dict, train_data: dict, device: torch.device,
               workdir: Path, protocol: str = DEFAULT_PROTOCOL) -> tuple[dict, object, object]:
    """Train one path on the protocol's training stream; (figures, model, config)."""
    # timed from the trainer's own log and one clock read around the cache fill: one-shot work, no Timer repeats
    from lalmbench.data.batches import BatchMaker
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.distributed import DistInfo
    from lalmbench.model.audio_llm import apply_speed_switches
    from lalmbench.model.feature_cache import attach_feature_cache
    from lalmbench.data.tokenizing import Tokenizing
    from lalmbench.phases.training import train_stream
    from lalmbench.train import Trainer, batch_plan, configure_determinism

    _release(device)
    config = _make_config(train_data, sizes, overrides, device, protocol)
    configure_determinism(config)
    model, tokenizer = build_model(sizes, config, device, seed=config.seed)
    apply_speed_switches(model, config)
    specs = list(config.train_data.values())
    shards = {s.name: [Path(p) for p in s.data] for s in specs}
    counter = BadDataCounter()
    tokenizing = Tokenizing(tokenizer, {s.name: s.prompt for s in specs}, config.protocol)
    figures: dict = {"config": {k: v for k, v in overrides.items()}}
    run_dir = workdir / f"run-{name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = None
    if config.feature_cache != "off":
        cache = attach_feature_cache(model, config, {"class": "MelTransformerEncoder", **sizes["encoder"]}, {},
                                     run_dir)
        started = time.perf_counter()
        figures["cache_fill_clips"] = _fill_cache(cache, config, specs, shards, tokenizing, counter)
        figures["cache_fill_seconds"] = round(time.perf_counter() - started, 3)
        cache.hits = cache.misses = 0
    stream = train_stream(config, specs, shards, tokenizing.count, batch_plan(config, 1)[1])
    maker = BatchMaker(tokenizing, BadDataCounter(), config.sample_rate, config.crop_audio_length,
                       stream.crop_fraction, workers=config.num_workers)  # decode failures: the maker's own count
    trainer = Trainer(model, config, run_dir, DistInfo(), device, stream, maker, stream.counter, f"bench-{name}",
                      show_progress=False)
    compiling = _count_compiling_steps(trainer)
    try:
        with PeakMemory(device) as memory:
            trainer.train()
    finally:
        maker.close()
    with open(run_dir / "train_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    elapsed = [0.0] + [float(r["elapsed_seconds"]) for r in rows]
    warm, measured = sizes["warmup_steps"], sizes["measured_steps"]
    # A step in which torch.compile built a graph (a first shape, a mask that appears) is compile time,
    # not step time: it is left out of the rate and reported on its own.
    window = range(warm, warm + measured)
    kept = [step for step in window if step not in compiling] or list(window)
    seconds = sum(elapsed[step + 1] - elapsed[step] for step in kept)
    figures.update({
        "steps_per_second": len(kept) / seconds, "samples_per_second": len(kept) * trainer.global_batch / seconds,
        "measured_steps": len(kept), "measured_seconds": round(seconds, 3),
        "compiling_steps": sorted(compiling), "compiling_steps_seconds": round(
            sum(elapsed[step + 1] - elapsed[step] for step in compiling), 3),
        "first_step_seconds": round(elapsed[1], 3), "peak_memory_bytes": memory.peak,
        "losses": [round(float(r["loss"]), 6) for r in rows],
        "exact": bool(config.deterministic and not config.bf16),
    })
    if cache is not None:
        figures["cache"] = cache.stats()
    figures["peak_memory_30s_bytes"] = _longest_clip_step(trainer, config, shards, tokenizing, counter, device)
    return figures, model, config


def _count_compiling_steps(trainer) -> set[int]:
    """The (0-based) steps of `trainer` during which torch.compile built a graph; filled while it trains."""
    from torch._dynamo.utils import counters

    compiling: set[int] = set()
    step = trainer._step

    def counted(batches):
        graphs = counters["stats"]["unique_graphs"]
        try:
            return step(batches)
        finally:
            if counters["stats"]["unique_graphs"] != graphs:
                compiling.add(trainer.state.step)

    trainer._step = counted
    return compiling


def _longest_clip_step(trainer, config, shards: dict, tokenizing, counter, device: torch.device) -> int:
    """Peak memory of one training step on four clips of the longest task (30 s, the protocol's crop)."""
    from lalmbench.data.batches import BatchMaker

    longest = max(WORKLOAD, key=lambda task: task[1])[0]
    examples = _whole_clips(config.train_data[longest], shards, config, counter)
    batch = BatchMaker(tokenizing, counter, config.sample_rate, config.crop_audio_length, None).make(
        examples[:config.per_device_train_batch_size])
    trainer.model.train()
    with PeakMemory(device) as memory:
        trainer._step([batch])
    return memory.peak


def _release(device: torch.device) -> None:
    """Free the previous path's model (and compiled graphs) before the next one is measured."""
    import gc

    import torch._dynamo

    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def naive_generate(model, batch: dict, max_new_tokens: int = 150, repetition_penalty: float = 1.05) -> list[list[int]]:
    """Greedy decoding without a KV cache: the whole sequence again every step, all rows until all end."""
    audio = model.audio_embeddings(batch)
    prefixes = [torch.cat([frames, model._text_embeddings(list(prompt)).to(frames.dtype)], dim=0)
                for frames, prompt in zip(audio, batch["prompt_ids"])]
    body, head = model._base
    embed = model.decoder.get_input_embeddings()
    generated: list[list[int]] = [[] for _ in prefixes]
    done = [False] * len(prefixes)
    for _ in range(max_new_tokens):
        rows = [torch.cat([p, embed(torch.tensor(g, dtype=torch.long, device=p.device)).to(p.dtype)]) if g else p
                for p, g in zip(prefixes, generated)]
        longest = max(r.shape[0] for r in rows)
        embeds = rows[0].new_zeros(len(rows), longest, rows[0].shape[1])
        attention = torch.zeros(len(rows), longest, dtype=torch.long, device=embeds.device)
        for i, row in enumerate(rows):
            embeds[i, longest - row.shape[0]:] = row
            attention[i, longest - row.shape[0]:] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        hidden = body(inputs_embeds=embeds, attention_mask=attention, position_ids=positions,
                      use_cache=False).last_hidden_state
        logits = head(hidden[:, -1]).float()
        for i, ids in enumerate(generated):
            if ids and repetition_penalty != 1.0:
                seen = torch.tensor(sorted(set(ids)), device=logits.device)
                values = logits[i, seen]
                logits[i, seen] = torch.where(values < 0, values * repetition_penalty, values / repetition_penalty)
        for i, token in enumerate(logits.argmax(-1).tolist()):
            if done[i]:
                continue
            if token == model.eos_id:
                done[i] = True
            else:
                generated[i].append(token)
        if all(done):
            break
    return generated


def eval_path(name: str, model, config, tokenizer, eval_data: dict, sizes: dict, device: torch.device,
              naive: bool) -> tuple[dict, list[str]]:
    """(figures, answers) of decoding every test clip of `eval_data`."""
    from lalmbench.config import eval_configs_from_mapping
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.distributed import DistInfo
    from lalmbench.evaluate import evaluate_task
    from lalmbench.data.tokenizing import Tokenizing

    tasks = eval_configs_from_mapping(eval_data, "bench eval")
    tokenizing = Tokenizing(tokenizer, {t.name: t.data.prompt for t in tasks}, config.protocol)
    model.feature_hook = None
    if naive:
        model.generate = lambda batch, max_new, penalty: naive_generate(model, batch, max_new, penalty)
    clips, seconds, scores, tokens, answers = 0, 0.0, {}, 0, []
    try:
        with PeakMemory(device) as memory:
            for task in tasks:
                result = evaluate_task(model, task, [Path(p) for p in task.data.data], config, tokenizing, DistInfo(),
                                       BadDataCounter(), batch_size=sizes["eval_batch_size"], show_progress=False)
                clips += len(result.predictions)
                seconds += result.seconds
                scores[task.name] = result.score
                tokens += sum(len(tokenizer(p)["input_ids"]) for p, _, _ in result.predictions)
                answers += [p for p, _, _ in result.predictions]
    finally:
        if naive:
            del model.generate
    return {"eval_samples_per_second": clips / seconds, "eval_seconds": round(seconds, 3), "eval_clips": clips,
            "mean_answer_tokens": tokens / max(clips, 1), "peak_memory_bytes": memory.peak,
            "bf16": bool(config.bf16), "merged_lora": bool(config.merge_lora_for_eval), "scores": scores}, answers


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU: {name} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def _gib(value: int) -> str:
    return f"{value / 2**30:.2f} GiB"


@restores_process_state  # its quieter lalmbench logger, and the runs' settings, end with it
def run_bench(sizes: dict, device: str | None = None, output: str | Path = "bench.json", paths=None,
              compile_paths: bool | None = None, measured_steps: int | None = None, echo=print,
              protocol: str = DEFAULT_PROTOCOL) -> dict:
    """Run every path on `sizes`; write the figures to `output` and return them.

    compile_paths: include the torch.compile paths (None: on a GPU only). measured_steps overrides the
    measured steps per path of `sizes`. protocol: whose training stream the paths train on and the data
    figures time first (the other protocol's stream is timed beside it).
    """
    from lalmbench import __version__

    logging.getLogger("lalmbench").setLevel(logging.WARNING)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if compile_paths is None:
        compile_paths = dev.type == "cuda"
    paths = [(n, o) for n, o in (paths or PATHS) if compile_paths or n not in COMPILE_PATHS]
    if measured_steps:
        sizes = {**sizes, "measured_steps": measured_steps}
    started = time.perf_counter()
    results = {"lalmbench_version": __version__, "torch": torch.__version__, "device": device_name(dev),
               "device_type": dev.type, "sizes": sizes, "workload": [
                   {"task": t, "seconds": s, "sample_rate": r, "classes": c, "weight": w} for t, s, r, c, w in WORKLOAD],
               "published": PUBLISHED, "protocol": protocol, "train": {}, "eval": {}, "failed": {}}
    echo(f"lalmbench bench on {results['device']}, torch {torch.__version__}")
    echo(f"sizes: encoder {sizes['encoder']}, decoder {sizes['decoder']}, batch {sizes['batch_size']}, "
         f"{sizes['warmup_steps']}+{sizes['measured_steps']} steps (warm-up + measured) per path, "
         f"{sizes['train_clips_per_task']} train / {sizes['eval_clips_per_task']} eval clips per task, "
         f"eval batch {sizes['eval_batch_size']}, max {sizes['max_new_tokens']} new tokens")
    answers: dict[str, list[str]] = {}

    def save() -> None:  # after every path, so that a run cut short still leaves its figures
        _summarize(results, answers)
        results["total_seconds"] = round(time.perf_counter() - started, 1)
        Path(output).write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="lalmbench-bench-") as tmp:
        workdir = Path(tmp)
        train_data, eval_data = write_workload(workdir / "data", sizes["train_clips_per_task"],
                                               sizes["eval_clips_per_task"])
        streams = results["data_stream"] = time_data_streams(train_data, sizes, dev, protocol, sizes["data_steps"])
        echo(f"data  {streams['stream']} ({protocol}'s stream) {streams['steps_per_second']:.1f} steps/s; "
             f"{streams['other_stream']} {streams['other_steps_per_second']:.1f} steps/s: "
             f"x{streams['ratio_vs_other']:.2f} (stream -> batches alone, {streams['steps']} steps each)")
        model = config = None
        for name, overrides in paths:
            try:
                figures, trained, trained_config = train_path(name, overrides, sizes, train_data, dev, workdir,
                                                              protocol)
            except Exception as exc:  # a compiler that cannot build on this machine must not cost the run
                if name not in COMPILE_PATHS:
                    raise
                results["failed"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                echo(f"train {name:14s} failed: {results['failed'][name]} (the other paths' figures stand)")
                save()
                continue
            model, config = trained, trained_config
            results["train"][name] = figures
            extra = ""
            if figures["compiling_steps"]:
                extra = (f", compiling in steps {[step + 1 for step in figures['compiling_steps']]} "
                         f"({figures['compiling_steps_seconds']} s, left out of the rate)")
            if "cache" in figures:
                extra += (f", cache filled with {figures['cache_fill_clips']} clips in {figures['cache_fill_seconds']} s,"
                         f" hit rate {figures['cache']['hit_rate']:.2f}")
            echo(f"train {name:14s} {figures['steps_per_second']:.3f} steps/s  {figures['samples_per_second']:.2f} "
                 f"samples/s  peak {_gib(figures['peak_memory_bytes'])} (30 s clips: "
                 f"{_gib(figures['peak_memory_30s_bytes'])}), first step {figures['first_step_seconds']} s{extra}")
            save()
            if name == EVAL_AFTER:
                _evaluate_all(results, answers, model, config, train_data, eval_data, sizes, dev, echo, save)
        if not results["eval"] and model is not None:
            _evaluate_all(results, answers, model, config, train_data, eval_data, sizes, dev, echo, save)
    save()
    if "speedup" not in results:
        from lalmbench.errors import LalmbenchError

        raise LalmbenchError(f"no fast path finished ({results['failed']}); the naive figures are in {output}")
    for name, ratio in results["train_ratios"].items():
        figures = results["train"][name]
        echo(f"  {name:14s} x{ratio:.2f} vs naive training ({'exact' if figures['exact'] else 'not exact'}; "
             f"loss curve within {figures['max_loss_difference_vs_naive']:.1e} of naive)")
    for name, ratio in results.get("eval_ratios", {}).items():
        echo(f"  eval {name:26s} x{ratio:.2f} vs the naive decoding loop "
             f"({results['eval'][name]['answers_agree_with_kv_cache']:.0%} of answers as the fp32 KV-cached ones)")
    streams = results["data_stream"]
    echo(f"  data {streams['stream']:18s} x{streams['ratio_vs_other']:.2f} vs {streams['other_stream']} "
         f"(steps/s of the data pipeline alone, same run; training above used {streams['stream']})")
    if results.get("best_exact_path"):
        echo(f"best exact path: {results['best_exact_path']} (x{results['exact_speedup']:.2f})")
    published = results["vs_published"]
    echo(f"against the published system on an {PUBLISHED['device']} (meaningful on a GPU only): training "
         f"x{published['train']:.2f} (best path), x{published.get('train_exact', 0):.2f} (best exact path); "
         f"evaluation x{published.get('eval', 0):.2f}")
    echo(f"best path: {results['best_path']}; total {results['total_seconds']} s; figures in {output}")
    echo(f"speedup: {results['speedup']:.2f}")
    return results


def _evaluate_all(results, answers, model, config, train_data, eval_data, sizes, dev, echo, save) -> None:
    """Decode the test clips with `model`: naive loop vs KV-cached generate, in fp32 and (when the path
    uses it) bf16, each with and without LoRA merged into the base weights."""
    def variant(**overrides):
        return _make_config(train_data, sizes, overrides, dev, config.protocol)

    runs = [("naive", variant(), True), ("kv_cache", variant(), False),
            ("kv_cache_merged_lora", variant(merge_lora_for_eval=True), False)]
    if config.bf16:
        runs += [("kv_cache_bf16", variant(bf16=True), False),
                 ("kv_cache_bf16_merged_lora", variant(bf16=True, merge_lora_for_eval=True), False)]
    for name, cfg, naive in runs:
        figures, answers[name] = eval_path(name, model, cfg, model.tokenizer, eval_data, sizes, dev, naive)
        results["eval"][name] = figures
        echo(f"eval  {name:26s} {figures['eval_samples_per_second']:.2f} samples/s  "
             f"({figures['eval_clips']} clips in {figures['eval_seconds']:.1f} s, "
             f"{figures['mean_answer_tokens']:.1f} answer tokens on average)  peak {_gib(figures['peak_memory_bytes'])}")
        save()


def _summarize(results: dict, answers: dict) -> None:
    """Ratios against the naive path, loss-curve agreement, the best fast and exact paths."""
    train, evals = results["train"], results["eval"]
    naive_losses = train["naive"]["losses"]
    for figures in train.values():
        figures["max_loss_difference_vs_naive"] = max(abs(a - b) for a, b in zip(figures["losses"], naive_losses))
        figures["exact"] = figures["exact"] and figures["max_loss_difference_vs_naive"] <= EXACT_TOLERANCE
    naive_rate = train["naive"]["steps_per_second"]
    fast = {name: f["steps_per_second"] for name, f in train.items() if name != "naive"}
    if not fast:
        return
    results["train_ratios"] = {name: rate / naive_rate for name, rate in fast.items()}
    results["best_path"] = max(fast, key=fast.get)
    results["speedup"] = fast[results["best_path"]] / naive_rate
    exact = {name: rate for name, rate in fast.items() if train[name]["exact"]}
    if exact:
        results["best_exact_path"] = max(exact, key=exact.get)
        results["exact_speedup"] = exact[results["best_exact_path"]] / naive_rate
    reference = answers.get("kv_cache")
    for name, figures in evals.items():
        if reference is not None:
            figures["answers_agree_with_kv_cache"] = (sum(a == b for a, b in zip(answers[name], reference))
                                                      / max(len(reference), 1))
    results["vs_published"] = {"train": fast[results["best_path"]] / PUBLISHED["train_steps_per_second"]}
    if exact:
        results["vs_published"]["train_exact"] = (exact[results["best_exact_path"]]
                                                  / PUBLISHED["train_steps_per_second"])
    if evals:
        best_eval = max(f["eval_samples_per_second"] for f in evals.values())
        results["vs_published"]["eval"] = best_eval / PUBLISHED["eval_samples_per_second"]
    if "naive" in evals:
        base = evals["naive"]["eval_samples_per_second"]
        results["eval_ratios"] = {n: f["eval_samples_per_second"] / base for n, f in evals.items() if n != "naive"}
        results["eval_speedup"] = max(results["eval_ratios"].values(), default=None)


def bench_command(quick: bool = False, device: str | None = None, output: str = "bench.json",
                  compile_paths: bool | None = None, measured_steps: int | None = None,
                  protocol: str = DEFAULT_PROTOCOL) -> int:
    from lalmbench.errors import ConfigError

    if measured_steps is not None and measured_steps < 1:
        raise ConfigError(f"--steps: expected a positive number of measured steps, got {measured_steps}")
    if device is not None:
        from lalmbench.devices import require_device

        require_device(device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_bench(QUICK if quick else FULL, device, output, compile_paths=compile_paths, measured_steps=measured_steps,
              protocol=protocol)
    return 0
