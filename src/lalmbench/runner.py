"""The main run, top to bottom: setup, train, evaluate, report.

    configs -> encoder (loaded, validated, frozen) -> data (fetched, resolved) -> decoder + LoRA + projector
    -> run directory (keyed by the training identity, made and locked only now) -> train (or resume, or
    reuse) -> evaluate every test set (or reuse cached scores) -> scores.tsv, predictions, summary, report

The training identity (identity.py) covers what the trained weights depend on; a finished run with the
same identity is reused and an interrupted one resumed (both say which identity they matched); a
different identity never reuses anything. Scores are cached per test set under its evaluation identity
(the training identity, the evaluation-only settings, the test set's config and shards). Rank 0 takes
these decisions and broadcasts them, so every process acts on the same view of the disk.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import logging.handlers
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lalmbench import __version__
from lalmbench.config import EvalTaskConfig, TrainConfig, dump_yaml
from lalmbench.data.batches import BatchMaker
from lalmbench.data.examples import BadDataCounter
from lalmbench.data.mixture import TrainStream
from lalmbench.data.shards import data_home, resolve_shards
from lalmbench.data.tokenizing import Tokenizing  # also reachable as lalmbench.runner.Tokenizing (parity kit)
from lalmbench.distributed import (DistInfo, barrier, broadcast_object, gather_objects, init_distributed,
                                   stops_every_process_on_failure, wait_for_main)
from lalmbench.encoders.contract import FrozenEncoder, validate_encoder
from lalmbench.encoders.loading import encoder_display_name, load_encoder
from lalmbench.errors import ConfigError, DeterminismError, RunInUseError
from lalmbench.evaluate import evaluate_task
from lalmbench.hub import offline_if_unreachable
from lalmbench.identity import decoder_identity, evaluation_identity, training_identity
from lalmbench.io_utils import (DirectoryLock, atomic_path, atomic_write_json, atomic_write_text, check_writable_dir,
                               remove_stale_temporaries)
from lalmbench.model.audio_llm import AudioLLM, add_lora, apply_speed_switches
from lalmbench.model.decoder import load_decoder
from lalmbench.run_configs import check_limit, configs_yaml, partial_results_dir, resolve_configs
from lalmbench.train import (Trainer, batch_plan, configure_determinism, find_resume_checkpoint,
                             nondeterministic_operation)

log = logging.getLogger("lalmbench")
COMPLETED = "COMPLETED"
TRAINING_COMPLETE = "training_complete.json"
FINAL_WEIGHTS = "final_weights.pt"


@dataclass
class RunResult:
    run_dir: Path
    scores: dict[str, float]
    overall: float
    rows: list[dict] = field(default_factory=list)
    reused_training: bool = False
    results_dir: Path | None = None  # where scores.tsv went: run_dir, or its limit-N directory for --limit
    partial: dict | None = None  # {"limit": N} for a --limit evaluation


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def setup_logging(run_dir: Path | None, is_main: bool) -> None:
    logger = logging.getLogger("lalmbench")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    early: list[logging.LogRecord] = []  # logged before the run directory existed: they go into its log.txt
    for handler in list(logger.handlers):
        if getattr(handler, "_lalmbench", False):
            if isinstance(handler, logging.handlers.BufferingHandler):
                early += handler.buffer
                handler.buffer = []
            logger.removeHandler(handler)
            handler.close()
    if not is_main:
        quiet = logging.NullHandler()  # other ranks stay silent (no lastResort printing of warnings)
        quiet._lalmbench = True
        logger.addHandler(quiet)
        return
    formatter = logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    console._lalmbench = True
    logger.addHandler(console)
    if run_dir is not None:
        file_handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
        file_handler.setFormatter(formatter)
        file_handler._lalmbench = True
        for record in early:
            file_handler.handle(record)
        logger.addHandler(file_handler)
    else:
        waiting = logging.handlers.BufferingHandler(capacity=100_000)
        waiting._lalmbench = True
        logger.addHandler(waiting)


class RunClaim:
    """The run directory this process works in, locked (io_utils.DirectoryLock) until the run ends.

    The directory is made here, once everything a run needs has loaded; until then a failing run leaves
    nothing behind.

    `take` chooses `<output>/<config>/<encoder>`, or `<encoder>-<hash8>` when that holds another
    identity's run (or another identity's run is working in it). A run of the same identity holding the
    lock stops this one at once (RunInUseError naming the holder). Only rank 0 takes a claim.
    """

    def __init__(self):
        self.run_dir: Path | None = None
        self.lock: DirectoryLock | None = None
        self.created = False  # this run made the directory
        self.training_started = False

    def take(self, base: Path, identity_hash: str, force: bool) -> Path:
        candidates = [base, base.with_name(f"{base.name}-{identity_hash[:8]}")]
        for candidate in candidates:
            existed = candidate.exists()
            lock = DirectoryLock(candidate)
            holder = lock.acquire({"identity": identity_hash})
            if holder is not None:
                who = (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (since "
                       f"{holder.get('since', '?')})")
                if holder.get("identity") == identity_hash:
                    raise RunInUseError(
                        f"{candidate} is in use by a run of the same identity: {who}. Two runs would write the "
                        f"same files; wait for it to finish (this command then reuses its results) or stop it.")
                log.info("%s is in use by a run of another identity (%s); looking further", candidate, who)
                continue
            marker = candidate / "run_identity.json"
            if not existed or not any(candidate.iterdir()):
                return self._hold(candidate, lock, created=not existed)
            if marker.is_file() and json.loads(marker.read_text()).get("hash") == identity_hash:
                if not force:
                    return self._hold(candidate, lock, created=False)
                kept = candidate.with_name(f"{candidate.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                candidate.rename(kept)  # the lock is beside the directory: still held
                log.info("--force: the previous run was moved to %s (nothing deleted)", kept)
                return self._hold(candidate, lock, created=True)
            lock.release()
            if candidate == base:
                log.info("%s holds a run with another identity; this run goes to %s", base, candidates[1])
        raise ConfigError(f"{candidates[1]} exists and belongs to another run; move it away or pass --output-dir")

    def _hold(self, run_dir: Path, lock: DirectoryLock, created: bool) -> Path:
        self.run_dir, self.lock, self.created = run_dir, lock, created
        check_writable_dir(run_dir)
        if not created:  # half-written checkpoints and files of a killed earlier run: never read, now ours
            stale = remove_stale_temporaries(run_dir)
            if stale:
                log.info("removed %d temporary file(s) of a stopped earlier run in %s: %s", len(stale), run_dir,
                         ", ".join(str(path.relative_to(run_dir)) for path in stale[:5]))
        return run_dir

    def discard_if_untrained(self) -> None:
        """After a failure: remove the directory this run made if no training step ran in it (it holds
        nothing to resume, and must not look like a run)."""
        if self.run_dir is not None and self.created and not self.training_started:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            log.info("removed %s: the run stopped before training", self.run_dir)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def plan_training(run_dir: Path, identity_hash: str) -> dict:
    """Rank 0's decision, broadcast to every process: reuse the finished training of this identity,
    resume it from its newest checkpoint, or train from the start."""
    marker = run_dir / TRAINING_COMPLETE
    completed = json.loads(marker.read_text()) if marker.is_file() else {}
    if completed.get("identity") == identity_hash and (run_dir / FINAL_WEIGHTS).is_file():
        return {"action": "reuse", "completed": completed}
    checkpoint = find_resume_checkpoint(run_dir, identity_hash)
    if checkpoint is not None:
        return {"action": "resume", "checkpoint": str(checkpoint)}
    return {"action": "train"}


def _fetch_data(specs, config: TrainConfig, allow_download: bool, dist: DistInfo) -> list[dict]:
    """Fetch missing hub shards (main process); returns the commits the hub files came from."""
    if not any(spec.repo_id for spec in specs):
        return []
    from lalmbench.data.download import ensure_downloaded

    revisions = []
    if dist.is_main:
        revisions = ensure_downloaded(specs, home=config.data_home, allow_download=allow_download)
    wait_for_main(dist)  # downloads may take hours: no collective timeout; a failure still stops everyone
    return revisions


def _preflight_metrics(tasks: list[EvalTaskConfig]) -> None:
    caption_metrics = sorted({t.metric for t in tasks if t.metric in ("FENSE", "DATE")})
    if caption_metrics:
        from lalmbench.metrics.captions import caption_models_preflight

        caption_models_preflight(caption_metrics)


def _pick_device(config: TrainConfig, dist: DistInfo) -> torch.device:
    if config.device:
        device = torch.device(config.device)
        if dist.enabled and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", dist.local_rank)  # each rank its own GPU (DDP needs the index)
    elif torch.cuda.is_available():
        device = torch.device("cuda", dist.local_rank if dist.enabled else 0)
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and not dist.enabled and torch.cuda.device_count() > 1:
        log.warning("%d GPUs found; this run uses one. To use all of them: torchrun --nproc-per-node %d -m "
                    "lalmbench run ... (or accelerate launch -m lalmbench run ...)", torch.cuda.device_count(),
                    torch.cuda.device_count())
    return device


# Measured on a 2-core CPU: one training step of the full-size SmolLM2-135M decoder took about 37 s.
CPU_SECONDS_PER_STEP_FULL_SIZE = 37.0
FULL_SIZE_DECODER_PARAMETERS = 50_000_000


def warn_if_slow_on_cpu(decoder, device: torch.device, max_steps: int) -> None:
    """A full-size decoder on a CPU takes tens of seconds a step: say so before hours go by."""
    if device.type != "cpu":
        return
    parameters = sum(p.numel() for p in decoder.parameters())
    if parameters < FULL_SIZE_DECODER_PARAMETERS:
        return
    days = max_steps * CPU_SECONDS_PER_STEP_FULL_SIZE / 86_400
    log.warning("a %.0fM-parameter decoder is training on a CPU: expect tens of seconds per step (about %.0f s on "
                "2 cores), so %d steps could take %.1f days. Use a GPU, or decoder_model_name tiny-random for a "
                "quick look; the measured pace is logged after the first steps.", parameters / 1e6,
                CPU_SECONDS_PER_STEP_FULL_SIZE, max_steps, days)


def write_scores(run_dir: Path, rows: list[dict], confidence=None, limit: int | None = None) -> float:
    """scores.tsv; with `confidence` (report.confidence.RunConfidence) two more columns, ci_low and ci_high;
    with `limit` (a --limit evaluation) a last column `limit` saying on every row how many test examples per
    task were evaluated (readers that look columns up by name read the file as before)."""
    total_weight = sum(r["weight"] for r in rows)
    overall = sum(r["score"] * r["weight"] for r in rows) / total_weight if total_weight else float("nan")
    intervals = {task: c.interval for task, c in confidence.tasks.items()} if confidence else {}

    def bounds(interval) -> str:
        if confidence is None:
            return ""
        return "\t\t" if interval is None else f"\t{interval.low:.6f}\t{interval.high:.6f}"

    marked = "" if limit is None else f"\t{limit}"
    lines = ["Task\tscore\tweight" + ("\tci_low\tci_high" if confidence else "") + ("\tlimit" if marked else "")]
    lines += [f"{r['task']}\t{r['score']:.6f}\t{r['weight']:g}{bounds(intervals.get(r['task']))}{marked}" for r in rows]
    lines.append(f"Overall\t{overall:.6f}\t{total_weight:g}{bounds(confidence.overall if confidence else None)}{marked}")
    atomic_write_text(run_dir / "scores.tsv", "\n".join(lines) + "\n")
    return overall


def write_predictions(path: Path, predictions: list[tuple[str, str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["prediction", "reference", "key"])
    writer.writerows(predictions)
    atomic_write_text(path, buffer.getvalue())


def format_table(rows: list[dict], overall: float, extra: dict[str, dict[str, str]] | None = None) -> str:
    extra = extra or {}
    extra_cols = sorted({k for v in extra.values() for k in v})
    header = ["Task", "metric", "score", "weight"] + extra_cols
    body = [[r["task"], r["metric"], f"{r['score']:.4f}", f"{r['weight']:g}"] +
            [extra.get(r["task"], {}).get(c, "") for c in extra_cols] for r in rows]
    body.append(["Overall", "", f"{overall:.4f}", f"{sum(r['weight'] for r in rows):g}"] +
                [extra.get("Overall", {}).get(c, "") for c in extra_cols])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def run(encoder: str, train: str = "task1", eval: str | None = None, model_args: dict | None = None,
        overrides: dict | None = None, output_dir: str | Path = "lalmbench_runs", force: bool = False,
        allow_download: bool = True, write_report: bool = True, show_progress: bool = True,
        extra_columns: dict | None = None, run_name: str | None = None, limit: int | None = None,
        task_names: list[str] | None = None) -> RunResult:
    """Train and evaluate; `run_name` replaces the encoder's name in the run directory's path. `task_names`
    picks datasets of the suite (run_configs.py); `limit` evaluates only the first `limit` examples of
    each test set, a partial evaluation kept in `<run_dir>/limit-<limit>/` (`partial_results_dir`).

    The run directory is locked while the run lasts; a run that fails before its first training step
    removes the directory it made (an earlier run's directory is never removed)."""
    claim = RunClaim()
    try:
        return _run(claim, encoder, train, eval, model_args, overrides, output_dir, force, allow_download,
                    write_report, show_progress, extra_columns, run_name, limit, task_names)
    except BaseException as exc:
        claim.discard_if_untrained()
        cause = nondeterministic_operation(exc)
        if cause is not None:
            raise DeterminismError(
                f"{cause} has no deterministic implementation on this device, and this run is deterministic "
                f"(deterministic: true, the default). To run it anyway, without bit-reproducible results, "
                f"set deterministic to false: --args '{{\"deterministic\": false}}'") from exc
        raise
    finally:
        claim.release()


@stops_every_process_on_failure  # an exception on one process stops them all (distributed.FailureWatch)
def _run(claim: "RunClaim", encoder: str, train: str, eval: str | None, model_args: dict | None,
         overrides: dict | None, output_dir: str | Path, force: bool, allow_download: bool, write_report: bool,
         show_progress: bool, extra_columns: dict | None, run_name: str | None, limit: int | None,
         task_names: list[str] | None) -> RunResult:
    started = time.perf_counter()
    overrides = dict(overrides or {})
    check_limit(limit)
    config, tasks, eval = resolve_configs(train, eval, overrides, task_names)  # --tasks narrows both
    dist = init_distributed(config.device)
    setup_logging(None, dist.is_main)
    configure_determinism(config)

    # -- encoder: loaded and validated before anything else is spent --------------------------------------------
    offline_if_unreachable()  # a model download with the hub unreachable fails now, not after minutes of retries
    encoder_module = load_encoder(encoder, model_args)
    validate_encoder(encoder_module, keep_mode=config.protocol == "official")  # as the published checker
    encoder_name = encoder_display_name(encoder)

    output_dir = check_writable_dir(output_dir)  # the run directory itself is made only once training can start
    log.info("lalmbench %s: encoder %s, train %s, eval %s, protocol %s", __version__, encoder, train, eval,
             config.protocol)

    # -- data and metrics preflight: fail now, not after hours of training ------------------------------------
    specs = list(config.train_data.values())
    data_revisions = _fetch_data(specs + [t.data for t in tasks], config, allow_download, dist)
    _preflight_metrics(tasks)
    home = data_home(config.data_home)
    train_shards = {s.name: resolve_shards(s, home) for s in specs}
    eval_shards = {t.name: resolve_shards(t.data, home) for t in tasks}

    # -- model ------------------------------------------------------------------------------------------------------
    device = _pick_device(config, dist)
    decoder, tokenizer = load_decoder(config.decoder_model_name, seed=config.seed)
    decoder_id = decoder_identity(config.decoder_model_name, decoder, tokenizer) if dist.is_main else None
    warn_if_slow_on_cpu(decoder, device, config.max_steps)
    torch.manual_seed(config.seed)
    decoder = add_lora(decoder, config.lora_r, config.lora_alpha, config.lora_dropout)
    model = AudioLLM(FrozenEncoder(encoder_module), decoder, tokenizer, config.target_logits_only,
                     protocol=config.protocol).to(device)
    counter = BadDataCounter()  # what the run reports: training (every process's) and evaluation
    tokenizing = Tokenizing(tokenizer, {**{s.name: s.prompt for s in specs}, **{t.name: t.data.prompt for t in tasks}},
                            config.protocol)

    # -- identities and the run directory: nothing is written before this point; rank 0 decides for all ---------
    decided = None
    if dist.is_main:
        identity = training_identity(encoder, model_args, config, decoder_id, train_shards, home)
        identity_hash = _hash(identity)
        claim.take(Path(output_dir) / Path(config.config_name).name / (run_name or encoder_name), identity_hash, force)
        decided = (str(claim.run_dir), identity, identity_hash, plan_training(claim.run_dir, identity_hash))
    run_dir, identity, identity_hash, plan = broadcast_object(dist, decided)
    run_dir = Path(run_dir)
    if dist.is_main:
        atomic_write_json(run_dir / "run_identity.json", {"hash": identity_hash, "identity": identity})
        atomic_write_text(run_dir / "config.yaml", dump_yaml(config.to_dict()))
        atomic_write_text(run_dir / "eval_config.yaml", dump_yaml({t.name: t.to_dict() for t in tasks}))
    setup_logging(run_dir, dist.is_main)
    log.info("run directory %s (training identity %s)", run_dir, identity_hash[:12])

    compiled = apply_speed_switches(model, config)
    if compiled:
        log.info(compiled)

    feature_cache = None
    if config.feature_cache != "off":
        from lalmbench.model.feature_cache import attach_feature_cache

        feature_cache = attach_feature_cache(model, config, identity["encoder"], identity["model_args"],
                                             model_arg_files=identity["model_arg_files"])

    # -- train (or resume, or reuse) ----------------------------------------------------------------------------
    complete_marker = run_dir / TRAINING_COMPLETE
    reused = False
    train_seconds = 0.0
    steps_this_run = 0
    if plan["action"] == "reuse":
        completed = plan["completed"]
        model.load_trainable_state_dict(torch.load(run_dir / FINAL_WEIGHTS, map_location=device))
        reused = True
        counter.merge(BadDataCounter.from_dict(completed.get("bad_data", {})))
        log.info("reusing the finished training of this run identity (training identity %s, %d steps); pass "
                 "--force to train again", identity_hash[:12], completed.get("steps", 0))
    else:
        global_batch, micro_batch, _ = batch_plan(config, dist.world)
        if config.global_batch_size is None and config.per_device_train_batch_size > global_batch // dist.world:
            log.warning("per_device_train_batch_size %d is more than this process's share of the protocol's "
                        "global batch (%d over %d process(es)); the global batch stays %d. For a larger one, "
                        "set global_batch_size (recorded in the run).", config.per_device_train_batch_size,
                        global_batch, dist.world, global_batch)
        # The stream and the batch maker count into counters of their own, which the trainer combines
        # per step (what it read, what failed to decode); see Trainer.
        stream = TrainStream(specs, train_shards, micro_batch, config.seed, tokenizing.count, BadDataCounter(),
                             rank=dist.rank, world=dist.world, shuffle_buffer=config.shuffle_buffer,
                             sort_buffer=config.sort_buffer, crop_seconds=config.crop_audio_length,
                             max_bad_fraction=config.max_bad_fraction, protocol=config.protocol)
        maker = BatchMaker(tokenizing, BadDataCounter(), config.sample_rate, config.crop_audio_length,
                           stream.crop_fraction, workers=config.num_workers, protocol=config.protocol)
        trainer = Trainer(model, config, run_dir, dist, device, stream, maker, stream.counter, identity_hash,
                          show_progress=show_progress)
        log.info("global batch %d = %d process(es) x %d example(s) x %d accumulation step(s)",
                 trainer.global_batch, dist.world, trainer.micro_batch, trainer.accumulation)
        if plan["action"] == "resume":
            log.info("resuming training identity %s from %s", identity_hash[:12], plan["checkpoint"])
            trainer.load_checkpoint(Path(plan["checkpoint"]))
        first_step = trainer.state.step
        claim.training_started = True
        try:
            state = trainer.train()
        finally:
            maker.close()
        steps_this_run = state.step - first_step
        for rank_counts in gather_objects(dist, trainer.bad_data):  # each process counted its own data
            counter.merge(rank_counts)
        train_seconds = state.elapsed
        if dist.is_main:
            with atomic_path(run_dir / FINAL_WEIGHTS) as tmp:
                torch.save(model.trainable_state_dict(), tmp)
            atomic_write_json(complete_marker, {"identity": identity_hash, "steps": state.step,
                                                "train_seconds": state.elapsed,
                                                "global_batch_size": trainer.global_batch,
                                                "world_size": dist.world,
                                                "per_device_batch_size": trainer.micro_batch,
                                                "gradient_accumulation_steps": trainer.accumulation,
                                                "bad_data": counter.as_dict()})
        barrier(dist)

    # -- evaluate -----------------------------------------------------------------------------------------------------
    eval_started = time.perf_counter()
    rows, task_summaries = [], {}
    # A --limit evaluation goes into a directory of its own, with the limit in its evaluation identity.
    results_dir = run_dir if limit is None else partial_results_dir(run_dir, limit)
    partial = None if limit is None else {"limit": limit}
    if dist.is_main and limit is not None:
        results_dir.mkdir(exist_ok=True)
        for name in ("run_identity.json", "eval_config.yaml"):  # what compare and the leaderboard read beside scores
            shutil.copy2(run_dir / name, results_dir / name)
    for task in tasks:
        cache_file = results_dir / "scores" / f"{task.name}.json"
        decided = None
        if dist.is_main:
            eval_identity = evaluation_identity(identity_hash, config, task, eval_shards[task.name], home)
            if limit is not None:
                eval_identity = {**eval_identity, "limit": limit}
            eval_key = _hash(eval_identity)
            found = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
            reuse = (found.get("key") == eval_key and not force
                     and (results_dir / f"predictions_{task.name}.csv").is_file())
            decided = (eval_key, eval_identity, found if reuse else None)
        eval_key, eval_identity, cached = broadcast_object(dist, decided)
        if cached:
            log.info("%s: reusing the cached score %.4f (same run identity and test config: evaluation identity "
                     "%s)", task.name, cached["score"], eval_key[:12])
            score, count = cached["score"], cached["num_examples"]
            # The test set's bad-data count, kept with its score: a run that resumes evaluation reports it too.
            counter.merge(BadDataCounter.from_dict(cached.get("bad_data", {})))
        else:
            task_counts = BadDataCounter()
            result = evaluate_task(model, task, eval_shards[task.name], config, tokenizing, dist, task_counts,
                                   workers=min(task.num_workers, config.num_workers) if config.num_workers else 0,
                                   show_progress=show_progress, limit=limit)
            counter.merge(task_counts)
            score, count = result.score, len(result.predictions)
            if dist.is_main:
                write_predictions(results_dir / f"predictions_{task.name}.csv", result.predictions)
                atomic_write_json(cache_file, {"key": eval_key, "identity": eval_identity, "score": score,
                                               "metric": task.metric, "num_examples": count,
                                               "seconds": result.seconds, "bad_data": task_counts.as_dict()})
            log.info("%s [%s]: %.4f (%d examples, %.1f s)", task.name, task.metric, score, count, result.seconds)
        rows.append({"task": task.name, "metric": task.metric, "score": float(score), "weight": task.weight})
        task_summaries[task.name] = {"metric": task.metric, "metric_args": task.metric_args, "score": float(score),
                                     "weight": task.weight, "num_examples": count}
    eval_seconds = time.perf_counter() - eval_started

    overall = float("nan")
    if dist.is_main:
        from lalmbench.report.confidence import TaskSpec, run_intervals

        # A 95% bootstrap interval per score, from the kept answers (seconds; see report/confidence.py).
        confidence = run_intervals(results_dir, [TaskSpec(r["task"], r["metric"], r["score"], r["weight"],
                                                      task_summaries[r["task"]]["metric_args"]) for r in rows],
                                   config.protocol)
        for task, task_confidence in confidence.tasks.items():
            task_summaries[task].update(task_confidence.as_dict())
        extra_columns = {**(extra_columns or {})}
        for task, cells in confidence.table_columns().items():
            extra_columns[task] = {**extra_columns.get(task, {}), **cells}
        overall = write_scores(results_dir, rows, confidence, limit)
        training = json.loads(complete_marker.read_text())  # how it was trained (batch, processes)
        summary = {"lalmbench_version": __version__, "encoder": encoder, "encoder_name": encoder_name,
                   "model_args": model_args or {}, "decoder": config.decoder_model_name,
                   "train_config": config.config_name, "eval_config": eval, "protocol": config.protocol,
                   "identity": identity_hash,
                   "steps": training.get("steps"), "steps_this_run": steps_this_run, "max_steps": config.max_steps,
                   "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                   "total_seconds": time.perf_counter() - started, "reused_training": reused,
                   "world_size": dist.world, "global_batch_size": training.get("global_batch_size"),
                   "train_world_size": training.get("world_size"),
                   "bad_data": counter.as_dict(), "tasks": task_summaries,
                   "overall": overall, "device": str(device), "data_revisions": data_revisions,
                   "confidence": confidence.summary(), "partial": partial,
                   "feature_cache": feature_cache.stats() if feature_cache is not None else None}
        atomic_write_json(results_dir / "run_summary.json", summary)
        atomic_write_json(results_dir / COMPLETED, {"identity": identity_hash, "overall": overall, "partial": partial,
                                                   "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        skipped = {name: entry["skipped_total"] for name, entry in counter.as_dict().items() if entry["skipped_total"]}
        if skipped:
            log.warning("skipped unusable examples per dataset: %s (details in run_summary.json)", skipped)
        print(format_table(rows, overall, extra_columns))
        if partial:
            print(f"PARTIAL: only the first {limit} test examples of each test set were evaluated (--limit {limit}); "
                  "these scores are not comparable with full evaluations")
        print(f"\nResults in {results_dir}")
        if write_report:
            try:
                from lalmbench.report.html import write_report as make_report

                report = make_report(results_dir)
                print(f"Report: {report}")
            except ImportError as exc:
                log.warning("report skipped (%s); install lalmbench[report] for it", exc)
            except Exception as exc:  # a report problem must not hide finished scores
                log.warning("report failed: %s: %s (scores are in %s)", type(exc).__name__, exc, results_dir)
    barrier(dist)
    return RunResult(run_dir, {r["task"]: r["score"] for r in rows}, overall, rows, reused, results_dir, partial)


def run_command(encoder: str, train: str = "task1", eval: str | None = None, model_args: dict | None = None,
                overrides: dict | None = None, output_dir: str = "lalmbench_runs", force: bool = False,
                allow_download: bool = True, write_report: bool = True, limit: int | None = None,
                task_names: list[str] | None = None, print_config: bool = False) -> int:
    if print_config:  # the configs as this run would use them; no encoder, data, network or output directory
        check_limit(limit)
        config, tasks, _ = resolve_configs(train, eval, overrides, task_names)
        sys.stdout.write(configs_yaml(config, tasks, limit))
        return 0
    run(encoder, train, eval, model_args, overrides, output_dir, force, allow_download, write_report,
        limit=limit, task_names=task_names)
    return 0
