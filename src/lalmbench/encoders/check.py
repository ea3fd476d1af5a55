"""`lalmbench check`: every check of the official encoder checkers, plus the ones that catch silent harm.

Flow: load the class (file or dotted path) -> build it with --model-args -> move it to the device ->
the official contract chain (`contract.validate_encoder`, which the training pipeline also runs) ->
lalmbench's extra checks on real calls (finite, short/long input, padding, determinism, frame rate) ->
cost (parameters, peak memory, time for a batch of 4 x 30 s) and a verdict against the Colab T4 budget.
The extra checks are small functions listed in EXTRA_CHECKS, run in order over one shared context.

Mandatory checks decide the exit status (0 when all pass). Informational checks never fail a run; they
warn, because what they catch (padding leaking into features, a frame rate that ignores the audio
length) lowers scores without crashing anything. Each result carries the measured value and, when it
did not pass, what to change.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
import time
from dataclasses import asdict, dataclass, field

import torch
from tabulate import tabulate
from torch import nn

from lalmbench.devices import PeakMemory
from lalmbench.encoders.contract import OFFICIAL_CHECKS, call_encoder, forward_arity, validate_encoder
from lalmbench.errors import EncoderContractError
from lalmbench.hub import offline_if_unreachable
from lalmbench.process_state import restores_process_state

SAMPLE_RATE = 16_000
# docs/protocol.md, "What the encoder must be": the submitted encoder must run in a Google Colab T4 runtime.
BUDGET_GPU_BYTES = 16 * 1024 ** 3
BUDGET_RAM_BYTES = 12 * 1024 ** 3

PASS, FAIL, WARN, INFO, SKIP = "pass", "fail", "warn", "info", "skip"


@dataclass
class CheckOptions:
    """Input sizes of the checks. The defaults are the official ones; tests shrink the costly parts."""

    batch: int = 3
    """Batch of the current checker's call: encoder(randn(batch, samples), None)."""
    samples: int = 50_000
    """Samples of that call (about 3.1 s at 16 kHz)."""
    legacy_batch: int = 2
    """Batch of the older one-argument template checker: encoder(randn(2, 50000))."""
    short_seconds: float = 0.1
    """The shortest clip an encoder must handle."""
    long_seconds: float = 30.0
    """The longest clip: the protocol crops training audio to 30 s."""
    frame_rate_seconds: tuple[float, ...] = (1.0, 10.0, 30.0)
    """Durations whose frames per second are reported (30 s reuses the long-input run)."""
    padding_seconds: tuple[float, float] = (1.0, 1.7)
    """The short clip and the longer clip it is padded to in the padding check."""
    padding_rtol: float = 1e-3
    """Relative tolerance of the padding and determinism comparisons (of the largest feature value)."""
    padding_atol: float = 1e-4
    """Absolute tolerance of those comparisons."""
    timing_batch: int = 4
    """Batch of the cost measurement."""
    timing_seconds: float = 30.0
    """Clip length of the cost measurement; the budget verdict is extrapolated when this is not 30."""
    seed: int = 0
    """Seed of the random test audio."""


@dataclass
class CheckResult:
    name: str
    mandatory: bool
    status: str
    value: str = ""
    expected: str = ""
    fix: str = ""
    seconds: float = 0.0
    data: dict = field(default_factory=dict)


@dataclass
class CheckReport:
    encoder: str
    model_args: dict
    device: str
    results: list[CheckResult] = field(default_factory=list)
    class_name: str = ""

    @property
    def ok(self) -> bool:
        """True when every mandatory check passed (warnings and informational results do not count)."""
        return not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.mandatory and r.status == FAIL]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == WARN]

    def get(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; checks: {[r.name for r in self.results]}")

    def to_dict(self) -> dict:
        from lalmbench import __version__

        return {"lalmbench_version": __version__, "encoder": self.encoder, "class_name": self.class_name,
                "model_args": self.model_args, "device": self.device, "ok": self.ok,
                "failed": [r.name for r in self.failed], "warnings": [r.name for r in self.warnings],
                "checks": [asdict(r) for r in self.results]}

    def render_table(self, width: int = 140) -> str:
        return render_table(self, width)


# ---------------------------------------------------------------- helpers


def _seconds(samples: int) -> str:
    return f"{samples / SAMPLE_RATE:g} s"


def _audio(batch: int, samples: int, seed: int, device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, samples, generator=generator).to(device)


def _call(model: nn.Module, audio: torch.Tensor, mask: torch.Tensor | None):
    """Call the encoder frozen, as training does; return (features, mask or None)."""
    with torch.no_grad():
        features, feature_mask = call_encoder(model, audio, mask)
    return features, feature_mask


def _valid_frames(features: torch.Tensor, mask: torch.Tensor | None) -> list[int]:
    if mask is None:
        return [int(features.shape[1])] * int(features.shape[0])
    return [int(v) for v in (mask != 0).sum(-1).tolist()]


def _finite(features: torch.Tensor, mask: torch.Tensor | None) -> bool:
    if mask is None:
        return bool(torch.isfinite(features).all())
    valid = (mask != 0).unsqueeze(-1).expand_as(features)
    return bool(torch.isfinite(features[valid]).all())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gb(n: float) -> str:
    if n >= 1024 ** 3 / 10:
        return f"{n / 1024 ** 3:.2f} GB"
    return f"{n / 1024 ** 2:.0f} MB" if n >= 1024 ** 2 else f"{n / 1024:.0f} KB"


# ---------------------------------------------------------------- stage 1: load and build

LOAD_ROWS = ("load", "class name", "constructor", "nn.Module")


def _load(encoder, model_args: dict, report: CheckReport):
    """Rows load, class name, constructor, nn.Module; return the built encoder or None."""
    from lalmbench.encoders.loading import load_encoder, resolve_encoder_class

    add = report.results.append
    if isinstance(encoder, nn.Module):
        report.class_name = type(encoder).__name__
        add(CheckResult("load", True, PASS, "an encoder instance was passed"))
        add(CheckResult("class name", True, PASS, report.class_name))
        add(CheckResult("constructor", True, PASS, "already built"))
        return encoder
    start = time.perf_counter()
    is_file = encoder.endswith(".py") or os.path.isfile(encoder)
    try:
        cls = resolve_encoder_class(encoder)
    except EncoderContractError as exc:
        row = "class name" if exc.check == "class name" else "load"
        if row == "class name":
            add(CheckResult("load", True, PASS, f"{encoder} imports", seconds=time.perf_counter() - start))
        add(CheckResult(row, True, FAIL, exc.got, exc.expected, exc.fix, time.perf_counter() - start))
        return None
    except Exception as exc:  # a dotted path whose module raised something other than ImportError
        add(CheckResult("load", True, FAIL, f"{type(exc).__name__}: {exc}", "the encoder module to import",
                        "fix the error in the module (import it in python to see the traceback)",
                        time.perf_counter() - start))
        return None
    name = getattr(cls, "__name__", repr(cls))
    report.class_name = name
    kind = "HEAR module" if encoder.startswith("hear:") else "file" if is_file else "dotted path"
    add(CheckResult("load", True, PASS, kind, seconds=time.perf_counter() - start))
    if is_file or name.endswith("Encoder"):
        add(CheckResult("class name", True, PASS, name))
    else:
        add(CheckResult("class name", True, WARN, name, "a name ending in 'Encoder'",
                        "fine as a dotted path, but a submitted .py file needs exactly one attribute ending in 'Encoder'"))
    start = time.perf_counter()
    try:
        model = load_encoder(encoder, model_args)
    except EncoderContractError as exc:
        seconds = time.perf_counter() - start
        if exc.check == "nn.Module":
            add(CheckResult("constructor", True, PASS, f"{name}(**{model_args})", seconds=seconds))
            add(CheckResult("nn.Module", True, FAIL, exc.got, exc.expected, exc.fix))
        else:
            add(CheckResult("constructor", True, FAIL, exc.got, exc.expected, exc.fix, seconds))
        return None
    except Exception as exc:  # the user's constructor raised: missing package, offline download, ...
        add(CheckResult("constructor", True, FAIL, f"{type(exc).__name__}: {exc}",
                        f"{name}(**{model_args}) to build",
                        "the constructor raised: install what the message names, or pass --model-args the "
                        "constructor accepts (for weights that need a download, run once online; offline, the "
                        "files must be in the hub cache, HF_HUB_OFFLINE=1)",
                        time.perf_counter() - start))
        return None
    add(CheckResult("constructor", True, PASS, f"{name}(**{model_args})" if model_args else f"{name}()",
                    seconds=time.perf_counter() - start))
    return model


# ---------------------------------------------------------------- stage 2: the official chain


def _official_value(check: str, facts: dict, device: torch.device, batch: int, samples: int,
                    model: nn.Module, seconds: float) -> str:
    arity = facts.get("arity")
    features = facts.get("features_shape")
    mask = facts.get("mask_shape")
    if check == "nn.Module":
        return f"{type(model).__qualname__} is a torch.nn.Module"
    if check == "output_dim":
        return str(facts.get("output_dim"))
    if check == "forward signature":
        return "forward(audio, audio_attention_mask)" if arity == 2 else "forward(audio) (older template)"
    if check in ("sampling_rate", "hop_size_in_ms"):
        return repr(getattr(model, check, None))
    if check == "forward call":
        mask_arg = ", None" if arity == 2 else ""
        return f"encoder(randn({batch}, {samples}){mask_arg}) on {device}: {seconds:.2f} s"
    if check == "output tuple":
        return facts.get("output_type", "") + ("" if arity == 2 else " (older template: one tensor)")
    if check == "features type":
        return "torch.Tensor"
    if check == "features dims":
        return f"shape {features}"
    if check == "batch size":
        return str(features[0]) if features else ""
    if check == "feature dim":
        return str(features[-1]) if features else ""
    if check == "mask dims":
        return "None" if mask is None else f"shape {mask}"
    if check == "mask frames":
        return "None: every frame counts as audio" if mask is None else f"{mask} matches the features"
    return ""


def _official(model: nn.Module, device: torch.device, options: CheckOptions, report: CheckReport) -> bool:
    """Rows of the official chain (contract.OFFICIAL_CHECKS); True when all passed."""
    arity = forward_arity(model) if isinstance(model, nn.Module) else 2
    batch = options.legacy_batch if arity == 1 else options.batch
    facts: dict = {}
    start = time.perf_counter()
    failure = None
    try:
        validate_encoder(model, batch=batch, samples=options.samples, facts=facts)
    except EncoderContractError as exc:
        failure = exc
    seconds = time.perf_counter() - start
    rows = [c for c in OFFICIAL_CHECKS if arity == 1 or c not in ("sampling_rate", "hop_size_in_ms")]
    failed_at = None
    for check in rows:
        if failed_at is not None:
            report.results.append(CheckResult(check, True, SKIP, f"not run: '{failed_at}' failed"))
        elif failure is not None and failure.check == check:
            failed_at = check
            report.results.append(CheckResult(check, True, FAIL, failure.got, failure.expected, failure.fix,
                                              seconds if check == "forward call" else 0.0))
        else:
            report.results.append(CheckResult(
                check, True, PASS, _official_value(check, facts, device, batch, options.samples, model, seconds),
                seconds=seconds if check == "forward call" else 0.0))
    if failure is not None and failed_at is None:  # a check name this table does not know: show it anyway
        report.results.append(CheckResult(failure.check, True, FAIL, failure.got, failure.expected, failure.fix))
    return failure is None


# ---------------------------------------------------------------- stage 3: lalmbench's checks


@dataclass
class _Context:
    """What the extra checks share: the encoder, where it runs, the options, and what earlier checks measured."""

    model: nn.Module
    device: torch.device
    options: CheckOptions
    results: list[CheckResult]
    """The rows so far (the report's)."""
    arity: int = 2
    frames: dict[int, int] = field(default_factory=dict)
    """Valid frames of the short and long input runs, by clip length in samples (the frame rate reuses them)."""
    repeat: tuple[torch.Tensor, torch.Tensor] | None = None
    """(audio, features) of the finite-output call, which the determinism check calls again."""
    weight_bytes: int = 0
    memory: dict | None = None
    """What the peak-memory check measured, for the budget."""
    speed: CheckResult | None = None
    """The speed row, timed on the peak-memory check's call."""

    def audio(self, batch: int, samples: int, offset: int = 0) -> torch.Tensor:
        return _audio(batch, samples, self.options.seed + offset, self.device)

    def diff(self, reference: torch.Tensor, other: torch.Tensor) -> float:
        return float((reference - other).abs().max()) if reference.numel() else 0.0

    def tolerance(self, reference: torch.Tensor) -> float:
        largest = float(reference.abs().max()) if reference.numel() else 0.0
        return self.options.padding_atol + self.options.padding_rtol * largest


def _finite_output(ctx: _Context) -> CheckResult:
    options = ctx.options
    audio = ctx.audio(options.batch, options.samples)
    features, mask = _call(ctx.model, audio, None)
    ctx.repeat = (audio, features)
    if not _finite(features, mask):
        bad = int((~torch.isfinite(features)).sum())
        return CheckResult("", True, FAIL, f"{bad} NaN/Inf values in features of randn({options.batch}, {options.samples})",
                           "finite features", "look for log(0), division by a zero norm or overflow in half "
                           "precision; add an epsilon (log(x + 1e-6)) or compute that step in float32")
    return CheckResult("", True, PASS, "no NaN/Inf")


def _clip(ctx: _Context, seconds: float) -> CheckResult:
    """One clip of `seconds` alone: at least one valid frame, all finite."""
    label = f"{seconds:g} s"
    samples = max(1, int(round(seconds * SAMPLE_RATE)))
    features, mask = _call(ctx.model, ctx.audio(1, samples, 1), None)
    frames = _valid_frames(features, mask)[0]
    ctx.frames[samples] = frames
    if frames < 1:
        return CheckResult("", True, FAIL, f"{label}: 0 valid frames", "at least one valid frame",
                           "pad very short input up to the encoder's minimum window inside forward")
    if not _finite(features, mask):
        return CheckResult("", True, FAIL, f"{label}: NaN/Inf in features", "finite features",
                           "guard the computation for this length (windows longer than the clip, empty statistics)")
    return CheckResult("", True, PASS, f"{label}: {frames} frames, shape {tuple(features.shape)}")


def _short_input(ctx: _Context) -> CheckResult:
    return _clip(ctx, ctx.options.short_seconds)


def _long_input(ctx: _Context) -> CheckResult:
    return _clip(ctx, ctx.options.long_seconds)


def _padding_invariance(ctx: _Context) -> CheckResult:
    """A short clip alone and padded into a batch with a longer one: the same valid frames, a mask that agrees."""
    if ctx.arity == 1:
        return CheckResult("", False, SKIP, "older one-argument template: no mask input",
                           fix="take (audio, audio_attention_mask) and return a feature mask")
    device = ctx.device
    short_n = int(ctx.options.padding_seconds[0] * SAMPLE_RATE)
    long_n = int(ctx.options.padding_seconds[1] * SAMPLE_RATE)
    short = ctx.audio(1, short_n, 2)
    longer = ctx.audio(1, long_n, 3)
    alone, alone_mask = _call(ctx.model, short, None)
    n_alone = _valid_frames(alone, alone_mask)[0]
    audio = torch.zeros(2, long_n, device=device)
    audio[0, :short_n] = short[0]
    audio[1] = longer[0]
    mask = torch.zeros(2, long_n, dtype=torch.long, device=device)
    mask[0, :short_n] = 1
    mask[1] = 1
    batch, batch_mask = _call(ctx.model, audio, mask)
    n_batch = _valid_frames(batch, batch_mask)[0]
    label = f"{_seconds(short_n)} clip alone vs padded to {_seconds(long_n)}"
    if batch_mask is None:
        return CheckResult("", False, WARN, f"{label}: no feature mask, {n_batch} frames vs {n_alone}",
                           "a feature mask marking the padded frames",
                           "return a [B, T'] feature mask from audio_attention_mask; without it the LLM "
                           "reads padding as audio")
    if n_batch != n_alone:
        return CheckResult("", False, WARN, f"{label}: mask marks {n_batch} valid frames, {n_alone} alone",
                           f"{n_alone} valid frames in both",
                           "compute the feature mask from the valid sample count (sum of audio_attention_mask) "
                           "at the output frame rate")
    n = min(n_alone, batch.shape[1], alone.shape[1])
    diff = ctx.diff(alone[0, :n].float(), batch[0, :n].float())
    tolerance = ctx.tolerance(alone[0, :n].float())
    if not math.isfinite(diff) or diff > tolerance:
        return CheckResult("", False, WARN, f"{label}: valid frames differ by up to {diff:.3g}",
                           f"difference <= {tolerance:.3g}",
                           "padding leaks into the valid frames: use audio_attention_mask (mask attention, "
                           "normalise over valid samples only, trim before pooling)")
    return CheckResult("", False, PASS, f"{label}: {n} frames equal (max diff {diff:.2g}), masks agree")


def _deterministic(ctx: _Context) -> CheckResult:
    """The finite-output call again: the same features."""
    if ctx.repeat is None:
        return CheckResult("", False, SKIP, "not run: 'finite output' raised")
    audio, first = ctx.repeat
    second, _ = _call(ctx.model, audio, None)
    if first.shape != second.shape:
        return CheckResult("", False, WARN, f"shapes differ: {tuple(first.shape)} vs {tuple(second.shape)}",
                           "the same output twice", "remove randomness from forward")
    # NaN in the same places is the same output (the finite-output check reports NaN itself).
    diff = ctx.diff(torch.nan_to_num(first.float()), torch.nan_to_num(second.float()))
    if not math.isfinite(diff) or diff > ctx.tolerance(first.float()):
        return CheckResult("", False, WARN, f"two calls differ by up to {diff:.3g}", "the same output twice",
                           "remove randomness that eval() does not switch off (F.dropout(training=True), "
                           "torch.rand in forward, random crops)")
    return CheckResult("", False, PASS, f"max diff {diff:.2g}")


def _frame_rate(ctx: _Context) -> CheckResult:
    """Frames per second at each of `frame_rate_seconds`: they should not depend on the length."""
    rates, raised = {}, []
    for seconds in ctx.options.frame_rate_seconds:
        samples = int(round(seconds * SAMPLE_RATE))
        frames = ctx.frames.get(samples)
        if frames is None:
            try:
                features, mask = _call(ctx.model, ctx.audio(1, samples, 1), None)
            except Exception:  # reported by the short/long input checks; not a frame-rate problem
                raised.append(f"{seconds:g} s: raised")
                continue
            frames = _valid_frames(features, mask)[0]
        rates[seconds] = frames / seconds
    text = ", ".join([f"{s:g} s: {r:.1f}/s" for s, r in rates.items()] + raised)
    data = {"frames_per_second": {f"{s:g}": r for s, r in rates.items()}}
    values = [r for r in rates.values() if r > 0]
    if values and max(values) / min(values) > 1.25:
        return CheckResult("", False, WARN, text, "frames in proportion to the audio length",
                           "the frame count does not follow the audio length: trim fixed-length padding "
                           "(e.g. Whisper's 30 s) and mark padded frames invalid", data=data)
    return CheckResult("", False, INFO, text, data=data)


def _parameters(ctx: _Context) -> CheckResult:
    count = sum(p.numel() for p in ctx.model.parameters())
    size = sum(t.numel() * t.element_size() for t in list(ctx.model.parameters()) + list(ctx.model.buffers()))
    ctx.weight_bytes = size
    return CheckResult("", False, INFO, f"{count:,} parameters, {_gb(size)} of weights and buffers",
                       data={"parameters": count, "weight_bytes": size})


def _peak_memory(ctx: _Context) -> CheckResult:
    """Memory and time of one call on `timing_batch` clips of `timing_seconds`; the speed row is kept for later."""
    # one call timed by hand: torch.utils.benchmark.Timer adds two warm-up calls, tripling the costliest check
    options, device = ctx.options, ctx.device
    samples = int(round(options.timing_seconds * SAMPLE_RATE))
    audio = ctx.audio(options.timing_batch, samples, 4)
    mask = torch.ones(options.timing_batch, samples, dtype=torch.long, device=device)
    workload = f"batch {options.timing_batch} x {_seconds(samples)}"
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with PeakMemory(device, interval=0.002) as memory:
        start = time.perf_counter()
        _call(ctx.model, audio, mask if ctx.arity == 2 else None)
        _sync(device)
        elapsed = time.perf_counter() - start
    if device.type == "cuda":
        ctx.memory = {"kind": "measured", "gpu_peak": memory.peak, "activations": memory.increase}
        text = f"{workload}: {_gb(memory.peak)} CUDA peak allocated (weights + activations)"
    else:
        ctx.memory = {"kind": "estimate", "activations": memory.increase, "process_peak": memory.peak}
        text = f"{workload}: +{_gb(memory.increase)} RSS (process peak {_gb(memory.peak)})"
    audio_seconds = options.timing_batch * samples / SAMPLE_RATE
    ctx.speed = CheckResult("", False, INFO,
                            f"{workload}: {elapsed:.2f} s ({audio_seconds / elapsed:.0f}x real time) on {device.type}",
                            data={"seconds": elapsed, "audio_seconds": audio_seconds})
    return CheckResult("", False, INFO, text, data=ctx.memory)


def _speed(ctx: _Context) -> CheckResult:
    speed = ctx.speed or CheckResult("", False, SKIP, "not measured (the memory check failed)")
    speed.seconds = ctx.results[-1].seconds  # measured on the peak-memory check's call: its time
    return speed


def _t4_budget(ctx: _Context) -> CheckResult:
    """Weights + activations scaled to 4 x 30 s against the Colab T4's 16 GB GPU; twice the weights against its RAM."""
    memory, options = ctx.memory, ctx.options
    if memory is None:
        return CheckResult("", True, SKIP, "not measured (the memory check failed)")
    scale = (4 * 30.0) / (options.timing_batch * options.timing_seconds)
    weights = ctx.weight_bytes
    if memory["kind"] == "measured":
        gpu = weights + memory["activations"] * scale if scale != 1 else memory["gpu_peak"]
        how = "measured on CUDA" + ("" if scale == 1 else f", activations scaled x{scale:g} to 4 x 30 s")
        verdict = FAIL if scale == 1 and gpu > BUDGET_GPU_BYTES else (WARN if gpu > BUDGET_GPU_BYTES else PASS)
    else:
        gpu = weights + memory["activations"] * scale
        how = "estimate from the CPU run (weights + RSS increase" + \
              ("" if scale == 1 else f" scaled x{scale:g} to 4 x 30 s") + "); run with --device cuda to measure"
        verdict = WARN if gpu > BUDGET_GPU_BYTES else PASS
    ram = weights * 2  # loading a checkpoint holds the state dict and the module at once
    text = f"{how}: GPU ~{_gb(gpu)} of 16 GB, RAM for loading ~{_gb(ram)} of 12 GB"
    if ram > BUDGET_RAM_BYTES and verdict == PASS:
        verdict = WARN
    fix = "" if verdict == PASS else ("reduce memory: run the encoder in half precision, process long audio "
                                      "in chunks, or use a smaller model (Colab T4: 16 GB GPU, 12 GB RAM)")
    return CheckResult("", True, verdict, text, "under the Colab T4 budget", fix,
                       data={"kind": memory["kind"], "gpu_bytes": gpu, "ram_bytes": ram})


# (row name, mandatory, check), run in this order: later checks read what earlier ones left in the context.
EXTRA_CHECKS = (
    ("finite output", True, _finite_output),
    ("short input", True, _short_input),
    ("long input", True, _long_input),
    ("padding invariance", False, _padding_invariance),
    ("deterministic", False, _deterministic),
    ("frame rate", False, _frame_rate),
    ("parameters", False, _parameters),
    ("peak memory", False, _peak_memory),
    ("speed", False, _speed),
    ("T4 budget", True, _t4_budget),
)
EXTRA_ROWS = tuple(name for name, _, _ in EXTRA_CHECKS)
MANDATORY_EXTRAS = {name for name, mandatory, _ in EXTRA_CHECKS if mandatory}


def _extras(model: nn.Module, device: torch.device, options: CheckOptions, report: CheckReport) -> None:
    """Run EXTRA_CHECKS in order; an exception from the encoder is that check's failure (a warning if informational)."""
    ctx = _Context(model, device, options, report.results, arity=forward_arity(model))
    for name, mandatory, check in EXTRA_CHECKS:
        start = time.perf_counter()
        try:
            result = check(ctx)
        except Exception as exc:
            result = CheckResult(name, mandatory, FAIL if mandatory else WARN, f"{type(exc).__name__}: {exc}",
                                 fix="the encoder raised on this input; run it by hand on the input the check names")
        result.name, result.mandatory = name, mandatory
        result.seconds = result.seconds or time.perf_counter() - start
        report.results.append(result)


# ---------------------------------------------------------------- entry points


@restores_process_state  # the hub's offline switch, set when the hub does not answer, ends with the check
def run_checks(encoder: str | nn.Module, model_args: dict | None = None, device: str = "cpu",
               options: CheckOptions | None = None) -> CheckReport:
    """Run every check on `encoder` (a .py file, a dotted path or a built module); never raises for a bad encoder."""
    options = options or CheckOptions()
    model_args = dict(model_args or {})
    name = encoder if isinstance(encoder, str) else f"<{type(encoder).__name__} instance>"
    report = CheckReport(encoder=name, model_args=model_args, device=device)
    if isinstance(encoder, str):
        offline_if_unreachable()  # weights the hub cannot send: fail at once, not after minutes of retries
    model = _load(encoder, model_args, report)
    if model is None or not isinstance(model, nn.Module):
        _skip_missing(report, "the encoder could not be built")
        return report
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        report.results.append(CheckResult("device", True, FAIL, "CUDA is not available", "a CUDA device",
                                          "run with --device cpu, or install a CUDA build of torch"))
        _skip_missing(report, "no device")
        return report
    try:
        model.to(target)
    except Exception as exc:
        report.results.append(CheckResult("device", True, FAIL, f"{type(exc).__name__}: {exc}",
                                          f"the encoder to move to {device}", "make the module movable with .to()"))
        _skip_missing(report, "no device")
        return report
    model.eval()
    if not _official(model, target, options, report):
        _skip_missing(report, "an official check failed")
        return report
    _extras(model, target, options, report)
    return report


def _skip_missing(report: CheckReport, reason: str) -> None:
    seen = {r.name for r in report.results}
    for name in LOAD_ROWS + tuple(c for c in OFFICIAL_CHECKS if c not in ("sampling_rate", "hop_size_in_ms")) + EXTRA_ROWS:
        if name not in seen:
            seen.add(name)
            mandatory = name not in EXTRA_ROWS or name in MANDATORY_EXTRAS
            report.results.append(CheckResult(name, mandatory, SKIP, f"not run: {reason}"))


def _fold_skipped(results: list[CheckResult]) -> tuple[list[CheckResult], dict[str, list[str]]]:
    """Rows that did not run are folded into one line per reason: after a failed load, twenty SKIP rows
    would bury the one row that matters. A skip with a reason of its own (older template) stays a row."""
    shown, not_run = [], {}
    for result in results:
        if result.status == SKIP and result.value.startswith("not run: "):
            not_run.setdefault(result.value[len("not run: "):], []).append(result.name)
        else:
            shown.append(result)
    return shown, not_run


def render_table(report: CheckReport, width: int = 140) -> str:
    """One table: check, mandatory or informational, result, measured value, what to fix."""
    value_w = max(30, (width - 37) // 2)  # the value and fix columns share what the other three leave of `width`
    fix_w = max(30, width - 37 - value_w)
    lines = [f"lalmbench check: {report.encoder}" + (f" ({report.class_name})" if report.class_name else "")
             + f" on {report.device}" + (f", model args {json.dumps(report.model_args)}" if report.model_args else "")]
    results, not_run = _fold_skipped(report.results)
    body = []
    for r in results:
        fix = r.fix if r.status in (FAIL, WARN) else ""
        if fix and r.expected and r.status == FAIL:
            fix = f"expected {r.expected}. {fix}"
        body.append([r.name, "must" if r.mandatory else "info", r.status.upper(), r.value, fix])
    # maxcolwidths: a long value or fix wraps onto more lines of its row (textwrap, as before); tabulate 0.9.0
    # fails on it for a table without rows
    lines += tabulate(body, ["check", "kind", "result", "value", "fix"], tablefmt="simple", disable_numparse=True,
                      maxcolwidths=[None, None, None, value_w, fix_w] if body else None).splitlines()
    for reason, names in not_run.items():
        lines.append(textwrap.fill(f"not run ({len(names)}, {reason}): {', '.join(names)}", width))
    mandatory = [r for r in report.results if r.mandatory]
    lines.append("")
    lines.append("kind: 'must' checks decide the exit status; 'info' checks only measure or warn.")
    if report.ok:
        lines.append(f"RESULT: PASS: all {len(mandatory)} mandatory checks passed"
                     + (f"; {len(report.warnings)} warning(s): {', '.join(r.name for r in report.warnings)}"
                        if report.warnings else ""))
    else:
        lines.append(f"RESULT: FAIL: {len(report.failed)} mandatory check(s) failed: "
                     f"{', '.join(r.name for r in report.failed)}")
    return "\n".join(lines)


def check_command(encoder: str, model_args: dict | None = None, device: str = "cpu", as_json: bool = False,
                  options: CheckOptions | None = None) -> int:
    """`lalmbench check`: print the table (or JSON); 0 when every mandatory check passed, 1 otherwise."""
    report = run_checks(encoder, model_args, device=device, options=options)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.render_table())
    return 0 if report.ok else 1
