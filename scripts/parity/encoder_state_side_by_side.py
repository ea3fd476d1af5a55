"""The encoder during training: item 3 (encoder mode) of docs/fidelity.md, under protocol official.

    python scripts/parity/encoder_state_side_by_side.py [--steps N]

The published system trains through its own Trainer (XaresLLMTask.train_mlp, Hugging Face Trainer) for N
steps on the demo's training shards, with an encoder that has BatchNorm and Dropout (BNDropEncoder, mask
None). The batches it trains on are recorded (which examples, in which order), and lalmbench's own
Trainer then runs N steps of protocol official on exactly those examples with the same starting weights.
Compared after the N steps:

  - the encoder's mode in the training forwards (the published trainer puts it in train mode);
  - BatchNorm running_mean, running_var (largest |diff| over channels) and num_batches_tracked;
    target |diff| <= 1e-5 and equal counts;
  - the encoder's weights (unchanged in both);
  - the statistics lalmbench's checkpoint of step N holds (what evaluation after a resume uses).

The audio both encoders saw in each step is compared too (largest |sample diff|).

Same batches, same random draws: lalmbench's first training forward starts from the torch random state the
published trainer had at its first training forward, so the dropout masks (encoder, LoRA) can be the same.
Then the two training trajectories are compared as well: the loss of every step and, after N steps, every
trained weight (LoRA, projector). These have no target here (a future change may draw random numbers in
another order without being wrong); they show how far identical data order would carry the two systems
(docs/fidelity.md, "Same data order"). Last, lalmbench's own training stream (protocol official, seed 42)
beside the published data order: its first N batches beside the ones the published trainer drew.
"""

from __future__ import annotations

import argparse
import shutil
import sys

import torch

from kit import DEMO, WORK, Tally, lalmbench_name, need, set_canonical_weights, tiny_decoder

ENCODER = "parity_encoders.BNDropEncoder"
TOLERANCE = 1e-5
DATASETS = ("tones", "chords", "count", "melody")
PROMPTS = {"tones": "Classify the tone.", "chords": "Which notes sound together?",
           "count": "How many tones sound at once?", "melody": "Transcribe the melody."}


def train_data() -> dict:
    need(DEMO / "train.yaml", "demo shards", "lalmbench demo --data-only $PARITY_WORK/demo")
    return {name: {"data": [str(DEMO / name / f"{name}-train-{{000000..000001}}.tar.gz")], "prompt": PROMPTS[name],
                   "key": "label", "prob": 1} for name in DATASETS}


def record_forward(audio: list, modes: list):
    """A forward hook that keeps the encoder's input audio and mask, and its modules' modes."""
    def hook(module, inputs, output) -> None:
        audio.append((inputs[0].detach().clone(), inputs[1].detach().clone()))
        modes.append((module.training, module.bn.training, module.drop.training))
    return hook


def record_training(losses: list, rng_states: list):
    """Hooks on a whole model: the random state before its first forward, and the loss of every forward."""
    def before(module, args, kwargs) -> None:
        if not rng_states:
            rng_states.append(torch.get_rng_state())

    def after(module, args, kwargs, output) -> None:
        losses.append(float((output.loss if hasattr(output, "loss") else output).detach()))
    return before, after


def published_training(steps: int, seed: int = 42, keep_audio: bool = True):
    """Run the published trainer; returns (model, start state, training batches as [(key, target)], audio per
    step, modes, losses per step, random state at the first forward)."""
    sys.argv = sys.argv[:1]  # the published task module parses nothing, but its logger setup reads argv
    from xares_llm.audiowebdataset import AudioTextTokenWebdataset
    from xares_llm.task import XaresLLMTask, XaresLLMTrainConfig

    output = WORK / "work" / "encoder_state"
    shutil.rmtree(output, ignore_errors=True)  # an existing checkpoint would make it skip training
    config = XaresLLMTrainConfig(audio_encoder_module_path=ENCODER, audio_encoder_kwargs={"dim": 32},
                                 output_dir=str(output), config_name="state", train_data=train_data(),
                                 decoder_model_name=tiny_decoder(), max_steps=steps, save_steps=10_000,
                                 warmup_steps=1, logging_steps=1, sort_by_length=128, seed=seed)
    task = XaresLLMTask(config)
    batches, audio, modes, losses, rng_states = [], [], [], [], []
    collate = AudioTextTokenWebdataset._default_collate_fn

    def recording_collate(self, samples):
        eos = self.tokenizer.eos_token
        batches.append([(s["filename"], s["text"][: -len(eos)] if s["text"].endswith(eos) else s["text"])
                        for s in samples])
        return collate(self, samples)

    AudioTextTokenWebdataset._default_collate_fn = recording_collate
    built = {}
    model_init = task.trainer.model_init

    def canonical_model_init():
        model = model_init()
        set_canonical_weights(model)
        if keep_audio:
            model.audio_encoder.register_forward_hook(record_forward(audio, modes))
        before, after = record_training(losses, rng_states)
        model.register_forward_pre_hook(before, with_kwargs=True)
        model.register_forward_hook(after, with_kwargs=True)
        built["start"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        built["model"] = model
        return model

    task.trainer.model_init = canonical_model_init
    try:
        task.train_mlp()
    finally:
        AudioTextTokenWebdataset._default_collate_fn = collate
    return (built["model"], built["start"], batches[:steps], audio[:steps], modes[:steps], losses[:steps],
            rng_states[0])


class ReplayStream:
    """A training stream that hands out given example lists in order (the published trainer's batches)."""

    def __init__(self, batches):
        from lalmbench.data.examples import BadDataCounter

        self.batches, self.position = batches, 0
        self.counter = BadDataCounter()  # what a stream skipped while reading: nothing here

    def next_batch(self):
        # Loaders may ask for batches ahead of the last step; those are never trained on.
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        return batch

    def snapshot(self) -> dict:
        return {"position": self.position}

    def crop_fraction(self, example) -> float:
        return 0.0  # demo clips are shorter than the 30 s crop: never used


def lalmbench_training(start_state: dict, recorded, steps: int, rng_state: torch.Tensor):
    """lalmbench's Trainer, protocol official, on the recorded examples, its first forward starting from
    `rng_state`; returns (model, audio per step, modes, losses per step, run dir)."""
    from lalmbench.config import TrainConfig
    from lalmbench.data.batches import BatchMaker
    from lalmbench.data.examples import BadDataCounter, iter_examples
    from lalmbench.distributed import DistInfo
    from lalmbench.encoders.contract import FrozenEncoder
    from lalmbench.encoders.loading import load_encoder
    from lalmbench.model.audio_llm import AudioLLM, add_lora
    from lalmbench.model.decoder import load_decoder
    from lalmbench.train import Trainer
    from kit import lalmbench_tokenizing

    examples = {}
    for name in DATASETS:
        for shard in sorted((DEMO / name).glob(f"{name}-train-*.tar.gz")):
            for _, _, example in iter_examples(name, str(shard), "label", BadDataCounter(), protocol="official"):
                examples.setdefault((example.ref.key, example.text), example)
    batches = [[examples[item] for item in batch] for batch in recorded]

    decoder, tokenizer = load_decoder(tiny_decoder())
    model = AudioLLM(FrozenEncoder(load_encoder(ENCODER, {"dim": 32})), add_lora(decoder), tokenizer, protocol="official")
    tensors = {**dict(model.named_buffers()), **dict(model.named_parameters())}
    copied = set()
    with torch.no_grad():
        for name, value in start_state.items():
            target = lalmbench_name(name)
            if target in tensors:  # a tied lm_head is in the state dict but not among the parameters
                tensors[target].copy_(value)
                copied.add(target)
    missing = set(dict(model.named_parameters())) - copied
    if missing:
        raise SystemExit(f"lalmbench parameters with no published counterpart: {sorted(missing)[:5]}")
    audio, modes, losses = [], [], []
    inner = model.encoder.inner
    inner.register_forward_hook(record_forward(audio, modes))
    started = []

    def same_random_state(module, args, kwargs) -> None:
        if not started:
            started.append(True)
            torch.set_rng_state(rng_state)
    model.register_forward_pre_hook(same_random_state, with_kwargs=True)
    model.register_forward_hook(record_training(losses, [])[1], with_kwargs=True)
    run_dir = WORK / "work" / "encoder_state_lalmbench"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    config = TrainConfig(protocol="official", max_steps=steps, warmup_steps=1, save_steps=10_000, logging_steps=1,
                         decoder_model_name=tiny_decoder())
    counter = BadDataCounter()
    stream = ReplayStream(batches)
    maker = BatchMaker(lalmbench_tokenizing(tokenizer, PROMPTS, "official"), BadDataCounter(), 16_000,
                       config.crop_audio_length, stream.crop_fraction, add_eos=True, protocol="official")
    trainer = Trainer(model, config, run_dir, DistInfo(), torch.device("cpu"), stream, maker, counter,
                      identity="parity", show_progress=False)
    trainer.train()
    return model, audio[:steps], modes[:steps], losses[:steps], run_dir


def lalmbench_order(steps: int, seed: int = 42) -> list[list[tuple[str, str]]]:
    """The first `steps` batches of lalmbench's training stream on the same data (official: the published
    order, data/official_stream.py)."""
    from transformers import AutoTokenizer

    from train_order import lalmbench_order as published_order_stream

    batches = published_order_stream(train_data(), steps, seed, 0, AutoTokenizer.from_pretrained(tiny_decoder()))
    return [[(key, text) for key, text, _ in batch] for batch in batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="training steps in each system (default 10)")
    args = parser.parse_args()
    tally = Tally(f"encoder state after {args.steps} training steps (protocol official)")

    published, start, recorded, published_audio, published_modes, published_losses, rng_state = \
        published_training(args.steps)
    print(f"published trainer: {len(recorded)} batches recorded, sizes {[len(b) for b in recorded]}")
    ours, our_audio, our_modes, our_losses, run_dir = lalmbench_training(start, recorded, args.steps, rng_state)

    tally.same("encoder (module, bn, dropout) .training in the training forwards",
               sorted(set(published_modes)), sorted(set(our_modes)))
    masks_equal = all(torch.equal(a[1].long(), b[1].long()) for a, b in zip(published_audio, our_audio))
    tally.check(f"audio masks of the {len(our_audio)} steps identical", masks_equal)
    tally.arrays(f"audio fed to the encoder in the {len(our_audio)} steps", torch.cat([a.flatten() for a, _ in published_audio]),
                 torch.cat([a.flatten() for a, _ in our_audio]), TOLERANCE, "samples")

    reference_state = published.audio_encoder.state_dict()
    our_state = ours.encoder.inner.state_dict()
    for name in ("bn.running_mean", "bn.running_var"):
        start_value = start[f"audio_encoder.{name}"]
        tally.compare(f"{name}: largest |change| over the {args.steps} steps",
                      float((reference_state[name] - start_value).abs().max()),
                      float((our_state[name] - start_value).abs().max()))
        tally.arrays(f"{name} after {args.steps} steps", reference_state[name], our_state[name], TOLERANCE)
    tally.compare("bn.num_batches_tracked", int(reference_state["bn.num_batches_tracked"]),
                  int(our_state["bn.num_batches_tracked"]), 0.0)
    tally.compare("encoder conv weight: largest |change| in training", float(
        (reference_state["proj.weight"] - start["audio_encoder.proj.weight"]).abs().max()),
        float((our_state["proj.weight"] - start["audio_encoder.proj.weight"]).abs().max()), 0.0)

    print("\nsame batches and random draws, no target (module docstring):")
    for step, (reference_loss, our_loss) in enumerate(zip(published_losses, our_losses), 1):
        tally.compare(f"step {step} loss", reference_loss, our_loss)
    trained_published = {n: p for n, p in published.named_parameters() if p.requires_grad and not n.startswith("audio_encoder")}
    reference_weights = {lalmbench_name(n): p for n, p in trained_published.items()}
    trained = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    worst = max(float((reference_weights[n] - p).detach().abs().max()) for n, p in trained.items())
    moved = max(float((p - start[n]).detach().abs().max()) for n, p in trained_published.items())
    tally.compare(f"trained weights after {args.steps} steps: largest |diff| ({len(trained)} tensors; "
                  f"largest change in training {moved:.3g})", 0.0, worst)

    ours_order = lalmbench_order(args.steps)
    published_flat = [item for batch in recorded for item in batch]
    ours_flat = [item for batch in ours_order for item in batch]
    dataset = lambda item: item[0].split("_")[0]
    print(f"\ndata order: the first {len(published_flat)} training examples (no target)")
    tally.compare("batches identical", len(recorded), sum(a == b for a, b in zip(recorded, ours_order)))
    tally.compare("same example at the same position", len(published_flat),
                  sum(a == b for a, b in zip(published_flat, ours_flat)))
    tally.compare("same dataset at the same position", len(published_flat),
                  sum(dataset(a) == dataset(b) for a, b in zip(published_flat, ours_flat)))
    tally.compare("examples drawn by both (in any order)", len(published_flat),
                  len(set(published_flat) & set(ours_flat)))

    checkpoint = run_dir / f"checkpoint-{args.steps}" / "trainable.pt"
    if checkpoint.is_file():
        saved = torch.load(checkpoint)
        for name in ("bn.running_mean", "bn.running_var"):
            tally.arrays(f"{name} in lalmbench's checkpoint-{args.steps}", reference_state[name],
                         saved.get(f"encoder.inner.{name}", torch.zeros(0)), TOLERANCE)
    else:
        tally.check(f"lalmbench checkpoint-{args.steps} written", False, f"{checkpoint} missing")
    tally.finish()


if __name__ == "__main__":
    main()
