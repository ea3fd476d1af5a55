"""Phase 1: everything a run needs, loaded and checked before anything is written.

    RunRequest -> configs (resolved; --tasks narrows both, --limit checked) -> processes (torchrun),
    determinism -> encoder (loaded, validated: before anything else is spent) -> data (fetched, resolved;
    every test set opened and checked: data/preflight.py) and caption-metric models (preflight)
    -> decoder + LoRA + projector on the device -> training identity
    -> run directory (claimed and locked by rank 0, decision to train, resume or reuse broadcast)
    -> speed switches, feature cache -> Prepared

A failure before the claim leaves nothing on disk; after it, runner.run removes a directory this run made
if no training step ran in it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lalmbench import __version__
from lalmbench.config import DatasetSpec, EvalTaskConfig, TrainConfig, dump_yaml
from lalmbench.data.examples import BadDataCounter
from lalmbench.data.batches import BatchMaker
from lalmbench.data.preflight import check_test_sets, first_training_example
from lalmbench.data.shards import data_home, resolve_shards
from lalmbench.data.tokenizing import Tokenizing
from lalmbench.devices import require_device
from lalmbench.distributed import DistInfo, broadcast_object, init_distributed, wait_for_main
from lalmbench.encoders.contract import FrozenEncoder, validate_encoder
from lalmbench.encoders.loading import encoder_display_name, load_encoder
from lalmbench.errors import EncoderFailure, EncoderRuntimeError
from lalmbench.hub import offline_if_unreachable
from lalmbench.identity import decoder_identity, training_identity
from lalmbench.io_utils import atomic_write_json, atomic_write_text, check_writable_dir
from lalmbench.model.audio_llm import AudioLLM, add_lora, apply_speed_switches
from lalmbench.model.decoder import load_decoder
from lalmbench.phases.run_directory import RunClaim, digest, plan_training, setup_logging
from lalmbench.run_configs import check_limit, resolve_configs, run_directory
from lalmbench.train import batch_plan, configure_determinism

log = logging.getLogger("lalmbench")

# Measured on a 2-core CPU: one training step of the full-size SmolLM2-135M decoder took about 37 s.
CPU_SECONDS_PER_STEP_FULL_SIZE = 37.0
FULL_SIZE_DECODER_PARAMETERS = 50_000_000


@dataclass
class RunRequest:
    """What the caller asked for: runner.run's arguments, as given."""

    encoder: str  # a file, a dotted path or hear:<file>
    train: str  # the train config: a built-in name or a YAML file
    eval: str | None  # the eval config; None: the one named like the train config
    model_args: dict | None  # the encoder's constructor arguments
    overrides: dict | None  # train config fields set on the command line (--args)
    output_dir: str | Path
    force: bool  # train and evaluate again even where this identity's results exist
    allow_download: bool  # fetch missing hub shards
    write_report: bool  # the HTML report after the scores
    show_progress: bool  # progress bars
    extra_columns: dict | None  # more columns of the printed table: {task: {column: text}}
    run_name: str | None  # replaces the encoder's name in the run directory's path
    limit: int | None  # evaluate only the first `limit` examples of each test set
    task_names: list[str] | None  # --tasks: datasets of the suite


@dataclass
class Prepared:
    """Everything the later phases work with."""

    request: RunRequest
    started: float  # time.perf_counter() when the run began
    config: TrainConfig
    tasks: list[EvalTaskConfig]
    eval_name: str  # the eval config, as resolved (EVAL defaults to TRAIN)
    dist: DistInfo
    device: torch.device
    encoder_name: str  # how the encoder is named in the run directory and the tables
    home: Path  # the data home
    train_shards: dict[str, list[Path]]  # per training dataset
    eval_shards: dict[str, list[Path]]  # per test set
    data_revisions: list[dict]  # the hub commits the shards came from
    model: AudioLLM  # on its device; trained or loaded by the training phase
    tokenizing: Tokenizing
    bad_data: BadDataCounter  # the run's one bad-data account, filled by training and evaluation
    claim: RunClaim  # rank 0's lock on the run directory (empty on other ranks)
    run_dir: Path
    identity: dict  # the training identity (identity.training_identity)
    identity_hash: str
    plan: dict  # rank 0's decision for every process: run_directory.plan_training
    feature_cache: object | None  # model.feature_cache.FeatureCache, when config.feature_cache is on

    @property
    def train_specs(self) -> list[DatasetSpec]:
        return list(self.config.train_data.values())


def prepare(request: RunRequest, claim: RunClaim) -> Prepared:
    started = time.perf_counter()
    check_limit(request.limit)
    config, tasks, eval_name = resolve_configs(request.train, request.eval, dict(request.overrides or {}),
                                               request.task_names)  # --tasks narrows both
    if config.device:
        require_device(config.device)  # a GPU this torch build or machine lacks: say so before loading anything
    dist = init_distributed(config.device)
    setup_logging(None, dist.is_main)
    configure_determinism(config)

    encoder_module = _load_encoder(request, config)
    encoder_name = encoder_display_name(request.encoder)
    output_dir = check_writable_dir(request.output_dir)  # the run directory itself is made only by the claim
    log.info("lalmbench %s: encoder %s, train %s, eval %s, protocol %s", __version__, request.encoder,
             request.train, eval_name, config.protocol)

    # Data and metrics: fail now, not after hours of training.
    specs = list(config.train_data.values())
    data_revisions = _fetch_data(specs + [t.data for t in tasks], config, request.allow_download, dist)
    _preflight_metrics(tasks)
    home = data_home(config.data_home)
    train_shards = {s.name: resolve_shards(s, home) for s in specs}
    eval_shards = {t.name: resolve_shards(t.data, home) for t in tasks}
    first_test_examples = check_test_sets(tasks, eval_shards, config.protocol, eval_name)  # seconds, not a run

    device = _pick_device(config, dist)
    model, tokenizing, decoder_id = _build_model(config, tasks, encoder_module, device, dist)
    # The encoder on real clips of this run's data: NaN/Inf or an exception stops the run before anything is written.
    first_train_examples = [first_training_example(spec, train_shards[spec.name], config.protocol) for spec in specs]
    check_encoder_on_run_data(model, config, [e for e in first_train_examples if e is not None],
                              [e for e in first_test_examples if e is not None], tokenizing,
                              batch_plan(config, dist.world)[1])

    # Nothing is written before this point; rank 0 decides for all.
    decided = None
    if dist.is_main:
        identity = training_identity(request.encoder, request.model_args, config, decoder_id, train_shards, home)
        identity_hash = digest(identity)
        claim.take(run_directory(output_dir, config, request.run_name or encoder_name), identity_hash, request.force)
        decided = (str(claim.run_dir), identity, identity_hash, plan_training(claim.run_dir, identity_hash))
    run_dir, identity, identity_hash, plan = broadcast_object(dist, decided)
    run_dir = Path(run_dir)
    if dist.is_main:
        atomic_write_json(run_dir / "run_identity.json", {"hash": identity_hash, "identity": identity})
        atomic_write_text(run_dir / "config.yaml", dump_yaml(config.model_dump()))
        atomic_write_text(run_dir / "eval_config.yaml", dump_yaml({t.name: t.model_dump() for t in tasks}))
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

    return Prepared(request=request, started=started, config=config, tasks=tasks, eval_name=eval_name, dist=dist,
                    device=device, encoder_name=encoder_name, home=home, train_shards=train_shards,
                    eval_shards=eval_shards, data_revisions=data_revisions, model=model, tokenizing=tokenizing,
                    bad_data=BadDataCounter(), claim=claim, run_dir=run_dir, identity=identity,
                    identity_hash=identity_hash, plan=plan, feature_cache=feature_cache)


def _load_encoder(request: RunRequest, config: TrainConfig):
    """The encoder, loaded and checked as the published checker does, before anything else is spent."""
    offline_if_unreachable()  # a model download with the hub unreachable fails now, not after minutes of retries
    encoder_module = load_encoder(request.encoder, request.model_args)
    validate_encoder(encoder_module, keep_mode=config.protocol == "official")  # as the published checker
    return encoder_module


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


def _build_model(config: TrainConfig, tasks: list[EvalTaskConfig], encoder_module, device: torch.device,
                 dist: DistInfo) -> tuple[AudioLLM, Tokenizing, dict | None]:
    """The frozen encoder, the decoder with LoRA and the projector, on `device`; the prompts' tokenizing;
    the decoder's identity (rank 0 only: it reads the weights)."""
    decoder, tokenizer = load_decoder(config.decoder_model_name, seed=config.seed)
    decoder_id = decoder_identity(config.decoder_model_name, decoder, tokenizer) if dist.is_main else None
    warn_if_slow_on_cpu(decoder, device, config.max_steps)
    torch.manual_seed(config.seed)  # the LoRA and projector initialisation
    decoder = add_lora(decoder, config.lora_r, config.lora_alpha, config.lora_dropout)
    model = AudioLLM(FrozenEncoder(encoder_module), decoder, tokenizer, config.target_logits_only,
                     protocol=config.protocol).to(device)
    if config.protocol == "official":
        # The published trainer's DataLoader draws its workers' base seed, one int64, from the global torch
        # generator when its iterator starts, after the model is built and before step 1: the same draw here
        # gives the same dropout masks step for step (docs/fidelity.md, "End to end").
        torch.empty((), dtype=torch.int64).random_()
    prompts = {**{s.name: s.prompt for s in config.train_data.values()}, **{t.name: t.data.prompt for t in tasks}}
    return model, Tokenizing(tokenizer, prompts, config.protocol), decoder_id


def check_encoder_on_run_data(model: AudioLLM, config: TrainConfig, train_examples: list, test_examples: list,
                              tokenizing: Tokenizing, micro_batch: int) -> None:
    """Run the encoder, as training and evaluation will, on real clips of this run's data: the first usable
    example of every training dataset (in batches of the training micro-batch, the model in train mode: under
    official the encoder follows it, as in training) and of every test set (eval mode, evaluation's crop).
    The contract checks feed random noise; real audio (its level, length, sample rate, channels) can make
    an encoder return NaN/Inf or raise, which training would meet at step 1 after making the run directory
    and checkpoint-0. Nothing the check touches is kept: the random generators' states, the encoder's
    buffers (BatchNorm statistics a train-mode forward updates) and the model's mode are restored, so
    training starts exactly where it would have without the check."""
    cpu_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    encoder_state = model.encoder.copy_mutable_state()
    was_training = model.training
    device_type = model.projector.weight.device.type
    plan = [(train_examples, True, config.crop_audio_length), (test_examples, False, config.eval_crop_audio_length)]
    try:
        for examples, training, crop in plan:
            model.train(training)
            maker = BatchMaker(tokenizing, BadDataCounter(), config.sample_rate, crop, None, add_eos=training,
                               protocol=config.protocol)
            for start in range(0, len(examples), micro_batch):
                batch = maker.make(examples[start:start + micro_batch])
                if batch is None:  # no clip decodes: bad data, which the data's own rules judge later
                    continue
                with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.bf16):
                    model.encoded_frames(batch)
    except EncoderFailure as failure:
        raise EncoderRuntimeError(
            f"the encoder failed on real clips of this run's data, checked before training: {failure}. Nothing was "
            "written (no run directory, no checkpoint). The first usable clip of every training dataset and test set "
            "is run through the encoder as training and evaluation run it; fix the encoder for these clips "
            "(`lalmbench check ENCODER` runs the contract checks) and run the same command again.") from failure
    finally:
        model.encoder.load_mutable_state(encoder_state)
        model.train(was_training)
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


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
