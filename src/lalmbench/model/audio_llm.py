"""AudioLLM: frozen encoder -> Linear projector -> causal LM decoder with LoRA (docs/protocol.md, "Model").

Sequence per example: [projected audio frames, prompt tokens, target tokens, EOS]; loss only on the
target tokens and EOS, the mean over every target token of the batch. How a batch is laid out depends
on the protocol:

- official (the published model): each row is the batch's whole block of T'max projected frames (frames
  the encoder masks stay in place, masked out of attention), then the right-padded text; positions
  0..L-1, so every row's text starts at position T'max. A clip's loss therefore depends on how many
  frames its batch mates have. The encoder follows the model into train mode (FrozenEncoder). For
  generation the same frame block is followed by the right-padded prompt, and positions count valid
  tokens (cumsum of the mask - 1), as Hugging Face `generate` derives them.
- corrected: each row is packed: its valid audio frames (feature mask 1) followed directly by its text,
  padding only at the end (training) or the start (generation), with positions counted over valid
  tokens only, so a clip's outputs do not depend on its batch mates. The encoder stays in eval mode.

With an encoder that returns no mask the two training layouts are the same sequence. Generation gives
the same tokens in both up to float rounding when a batch shares one prompt length (attention ignores
masked keys and positions count valid tokens); with prompts of several lengths, an official row with a
shorter prompt takes its first answer token from a padding position, as the published system does.

Loss logits are computed only where a label exists when `target_logits_only` is set (the default):
the vocabulary projection over hundreds of audio frames is most of the memory, and skipping rows
whose loss is ignored changes nothing else.

Launch overhead (docs/speed.md): `compile_training` compiles the decoder layers for training; with
`length_bucket` the sequence length is rounded up to a multiple of it, so the compiled graph (and, with
mode "reduce-overhead", its CUDA graph) is reused across batches instead of rebuilt per length. The
extra positions are padding at the end: no attention reaches them and they carry no label. `merged_lora`
folds the LoRA products into the base weights for decoding (one matmul per layer instead of three) and
puts the exact base weights back afterwards.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from lalmbench.config import DEFAULT_PROTOCOL, PROTOCOLS
from lalmbench.encoders.contract import FrozenEncoder
from lalmbench.errors import ConfigError, EncoderFailure

IGNORE = -100


def add_lora(decoder, r: int = 8, alpha: int = 32, dropout: float = 0.1):
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules="all-linear", inference_mode=False)
    with warnings.catch_warnings():
        # peft (up to 0.21 at least) asks the decoder `is_gradient_checkpointing`, which transformers 5 renamed
        # `is_activation_checkpointing` and answers with a FutureWarning: not ours to act on, and printed on
        # every run. Only that warning, only during this call.
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(decoder, config)


def _cache_argument(body) -> str:
    """transformers renamed `past_key_values` to `cache` (5.x); use whichever this version takes."""
    import inspect

    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _returned_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class AudioLLM(nn.Module):
    def __init__(self, encoder: FrozenEncoder, decoder, tokenizer, target_logits_only: bool = True,
                 protocol: str = DEFAULT_PROTOCOL):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.protocol = protocol
        self.published_layout = protocol == "official"
        encoder.follow_train_mode = protocol == "official"
        self.encoder = encoder
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.eos_id = int(tokenizer.eos_token_id)
        # The published collate pads text with the tokenizer's pad token (EOS when unset); only a row's
        # last prompt position can be a pad that matters (generation), and then its embedding does.
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else self.eos_id
        hidden = decoder.get_input_embeddings().embedding_dim
        self.projector = nn.Linear(encoder.output_dim, hidden)
        self.target_logits_only = target_logits_only
        self.feature_hook = None  # optional callable(batch) -> (features, mask) (feature cache)
        self.length_bucket = 0  # > 0: training sequences padded to a multiple of this many positions
        self._compiled: list = []  # (module, its compiled forward) for training steps (compile_training)
        self._cuda_graphs = False

    # -- pieces -------------------------------------------------------------------------------------------
    @property
    def _base(self):
        """The decoder's transformer body (no LM head) and its LM head."""
        causal_lm = self.decoder.get_base_model() if hasattr(self.decoder, "get_base_model") else self.decoder
        return causal_lm.base_model, causal_lm.get_output_embeddings()

    def compile_training(self, mode: str = "default", exact_random: bool = True) -> None:
        """torch.compile the decoder for training steps; generation keeps the eager decoder.

        Each transformer layer is compiled on its own (regional compilation): the layers share one code
        object and shape, so one compilation serves all of them, minutes faster than compiling the
        unrolled body. Shapes are dynamic: one graph serves every sequence length. Mode
        "reduce-overhead" records a CUDA graph per distinct shape, which `length_bucket` keeps to a few.
        `exact_random` makes compiled dropout draw the eager masks (inductor's fallback_random, a
        process-wide setting), so a compiled run follows the eager loss curve to float rounding.
        Parameter names, and so checkpoints, are unchanged.
        """
        import torch._inductor.config

        if exact_random:
            torch._inductor.config.fallback_random = True
        body, _ = self._base
        layers = getattr(body, "layers", None)
        if not isinstance(layers, nn.ModuleList):  # not a Llama-like body: compile it whole
            layers = [body]
        self._compiled = [(layer, torch.compile(layer.forward, mode=mode, dynamic=True)) for layer in layers]
        self._cuda_graphs = mode in ("reduce-overhead", "max-autotune")

    @contextlib.contextmanager
    def _compiled_forwards(self):
        """Within: the compiled forwards of compile_training run in place of the eager ones."""
        if not self._compiled:
            yield
            return
        if self._cuda_graphs:  # each training forward is a new step: earlier graph outputs are done with
            torch.compiler.cudagraph_mark_step_begin()
        before = [module.__dict__.get("forward") for module, _ in self._compiled]  # a hook's own, if any
        for module, compiled in self._compiled:
            module.forward = compiled
        try:
            yield
        finally:
            for (module, _), forward in zip(self._compiled, before):
                if forward is None:
                    del module.forward  # the class's eager forward again
                else:
                    module.forward = forward

    @contextlib.contextmanager
    def merged_lora(self):
        """Decode with each LoRA product folded into its base weight; the exact weights come back after."""
        from peft.tuners.lora import LoraLayer

        layers = [m for m in self.decoder.modules() if isinstance(m, LoraLayer) and not m.merged]
        saved = [m.get_base_layer().weight.detach().clone() for m in layers]
        try:
            with torch.no_grad():
                for layer in layers:
                    layer.merge()
            yield
        finally:
            with torch.no_grad():
                for layer, weight in zip(layers, saved):
                    if layer.merged:
                        layer.unmerge()  # clears peft's merged state; its subtraction is not exact ...
                    layer.get_base_layer().weight.copy_(weight)  # ... so the saved weights go back

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changes: the trainable parameters (LoRA, projector) and, under protocol
        official, the encoder's buffers its train-mode forwards update (BatchNorm statistics).
        Checkpoints and final weights hold this, so resuming or reusing a run restores all of it."""
        state = {name: p.detach().clone() for name, p in self.named_parameters() if p.requires_grad}
        state.update({f"encoder.inner.{name}": tensor.detach().clone()
                      for name, tensor in self.encoder.mutable_state().items()})
        return state

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.trainable_state_dict().keys()
        missing = [name for name in expected if name not in state]
        if missing:
            raise KeyError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[:3]}")
        tensors = {**dict(self.named_buffers()), **dict(self.named_parameters())}
        with torch.no_grad():
            for name, value in state.items():
                tensors[name].copy_(value)

    def encoded_frames(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected frames [B, T', hidden], feature mask [B, T'] bool) of a batch, every frame kept.

        An encoder that raises (out of memory included) or returns NaN/Inf on a frame the model attends
        to raises EncoderFailure naming the examples (shard, key, length): the rows that fail on their
        own, or the rows whose frames are not finite. The published layout feeds masked frames to the
        decoder too (masked out of attention, but a NaN there still spreads), so under protocol official
        every frame must be finite; under corrected only the valid ones.
        """
        device = self.projector.weight.device
        try:
            if self.feature_hook is not None:
                features, mask = self.feature_hook(batch)
            else:
                features, mask = self.encoder(batch["audio"].to(device), batch["audio_mask"].to(device))
        except Exception as exc:
            reason = f"the encoder raised {type(exc).__module__}.{type(exc).__qualname__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise EncoderFailure(reason, batch, self._failing_rows(batch)) from exc
        mask = mask.to(device).bool()
        finite = torch.isfinite(features).all(-1)
        if self.published_layout:
            bad = (~finite).any(-1)
            where = " (the published layout feeds padded frames to the decoder, protocol official)"
        else:
            bad = (~(finite | ~mask.to(features.device))).any(-1)
            where = ""
        if bool(bad.any()):
            raise EncoderFailure(f"the encoder returned NaN or Inf features{where}", batch,
                                 bad.nonzero().flatten().tolist())
        features = features.to(device=device, dtype=self.projector.weight.dtype)
        return self.projector(features), mask

    def audio_embeddings(self, batch: dict) -> list[torch.Tensor]:
        """Projected valid audio frames of each example: a list of [frames_i, hidden]."""
        projected, mask = self.encoded_frames(batch)
        return [projected[row][mask[row]] for row in range(projected.shape[0])]

    def _failing_rows(self, batch: dict) -> list[int] | None:
        """Rows whose clip alone makes the encoder raise (None: none alone, or a single row)."""
        rows = len(batch["refs"])
        if rows < 2:
            return None
        device = self.projector.weight.device
        if device.type == "cuda":
            torch.cuda.empty_cache()
        failing = []
        for row in range(rows):
            length = int(batch["audio_mask"][row].sum())
            try:
                self.encoder(batch["audio"][row:row + 1, :length].to(device),
                             batch["audio_mask"][row:row + 1, :length].to(device))
            except Exception:
                failing.append(row)
        return failing or None

    def _text_embeddings(self, ids: list[int]) -> torch.Tensor:
        embed = self.decoder.get_input_embeddings()
        return embed(torch.tensor(ids, dtype=torch.long, device=embed.weight.device))

    # -- training -------------------------------------------------------------------------------------------
    def build_training_inputs(self, batch: dict):
        """(input embeddings [B, L, hidden], attention mask [B, L], labels [B, L]) in the protocol's layout."""
        if self.published_layout:
            return self._published_inputs(batch, with_targets=True)
        audio = self.audio_embeddings(batch)
        rows, labels = [], []
        for frames, prompt, target in zip(audio, batch["prompt_ids"], batch["target_ids"]):
            text = self._text_embeddings(list(prompt) + list(target))
            rows.append(torch.cat([frames, text.to(frames.dtype)], dim=0))
            labels.append([IGNORE] * (frames.shape[0] + len(prompt)) + list(target))
        longest = self._bucketed(max(r.shape[0] for r in rows))
        hidden = rows[0].shape[1]
        device = rows[0].device
        embeds = rows[0].new_zeros(len(rows), longest, hidden)
        attention = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
        label_tensor = torch.full((len(rows), longest), IGNORE, dtype=torch.long, device=device)
        for i, (row, lab) in enumerate(zip(rows, labels)):
            embeds[i, : row.shape[0]] = row
            attention[i, : row.shape[0]] = 1
            label_tensor[i, : len(lab)] = torch.tensor(lab, dtype=torch.long, device=device)
        return embeds, attention, label_tensor

    def _bucketed(self, length: int) -> int:
        return math.ceil(length / self.length_bucket) * self.length_bucket if self.length_bucket else length

    def _published_inputs(self, batch: dict, with_targets: bool):
        """The published model's rows: [all T'max frames (masked ones in place) | right-padded text].

        Text is prompt + target (+ EOS) for training, the prompt alone for generation; padding uses the
        pad token's embedding, masked out of attention. Labels: the targets, at the positions the text
        puts them (IGNORE elsewhere). Training lengths are rounded up to `length_bucket` at the end.
        """
        frames, frame_mask = self.encoded_frames(batch)
        prompts = [list(p) for p in batch["prompt_ids"]]
        targets = [list(t) for t in batch["target_ids"]] if with_targets else [[] for _ in prompts]
        texts = [p + t for p, t in zip(prompts, targets)]
        count, audio_length = frames.shape[0], frames.shape[1]
        text_length = max(len(t) for t in texts)
        length = self._bucketed(audio_length + text_length) if with_targets else audio_length + text_length
        device = frames.device
        ids = torch.full((count, length - audio_length), self.pad_id, dtype=torch.long, device=device)
        attention = torch.zeros(count, length, dtype=torch.long, device=device)
        attention[:, :audio_length] = frame_mask.long()
        labels = torch.full((count, length), IGNORE, dtype=torch.long, device=device)
        for row, (prompt, target) in enumerate(zip(prompts, targets)):
            text = prompt + target
            ids[row, : len(text)] = torch.tensor(text, dtype=torch.long, device=device)
            attention[row, audio_length: audio_length + len(text)] = 1
            start = audio_length + len(prompt)
            labels[row, start: start + len(target)] = torch.tensor(target, dtype=torch.long, device=device)
        text_embeds = self.decoder.get_input_embeddings()(ids).to(frames.dtype)
        return torch.cat([frames, text_embeds], dim=1), attention, labels

    def loss_terms(self, batch: dict) -> tuple[torch.Tensor, int]:
        """(sum of token losses, number of target tokens) for a batch: the caller normalizes."""
        embeds, attention, labels = self.build_training_inputs(batch)
        body, head = self._base
        positions = torch.arange(embeds.shape[1], device=embeds.device)[None].expand(embeds.shape[0], -1)
        with self._compiled_forwards():
            hidden = body(inputs_embeds=embeds, attention_mask=attention, position_ids=positions,
                          use_cache=False).last_hidden_state
        shifted = labels[:, 1:]
        if self.target_logits_only:
            keep = shifted != IGNORE
            logits = head(hidden[:, :-1][keep]).float()
            loss_sum = F.cross_entropy(logits, shifted[keep], reduction="sum")
        else:
            logits = head(hidden).float()
            loss_sum = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                                       ignore_index=IGNORE, reduction="sum")
        return loss_sum, int((shifted != IGNORE).sum())

    def forward(self, batch: dict, normalizer: float | None = None) -> torch.Tensor:
        loss_sum, count = self.loss_terms(batch)
        return loss_sum / (normalizer if normalizer is not None else max(count, 1))

    # -- generation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 150, repetition_penalty: float = 1.05) -> list[list[int]]:
        """Greedy decoding with a KV cache; each row stops at EOS and finished rows leave the batch."""
        embeds, attention, positions = self._generation_inputs(batch)
        count, device = embeds.shape[0], embeds.device
        body, head = self._base
        embed = self.decoder.get_input_embeddings()
        cache_argument = _cache_argument(body)
        out = body(inputs_embeds=embeds, attention_mask=attention, position_ids=positions, use_cache=True)
        cache, logits = _returned_cache(out), head(out.last_hidden_state[:, -1]).float()
        generated: list[list[int]] = [[] for _ in range(count)]
        active = torch.arange(count, device=device)
        seen = torch.zeros(count, logits.shape[-1], dtype=torch.bool, device=device)
        next_position = attention.sum(-1)  # the next token's position: the valid tokens before it
        for step in range(max_new_tokens):
            if repetition_penalty != 1.0 and step > 0:
                penalized = torch.where(logits < 0, logits * repetition_penalty, logits / repetition_penalty)
                logits = torch.where(seen, penalized, logits)
            tokens = logits.argmax(-1)
            finished = tokens == self.eos_id
            for row, token, done in zip(active.tolist(), tokens.tolist(), finished.tolist()):
                if not done:
                    generated[row].append(token)
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            if bool(finished.any()):
                keep = (~finished).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, tokens, attention = active[keep], tokens[keep], attention[keep]
                seen, next_position = seen[keep], next_position[keep]
            seen[torch.arange(len(tokens), device=device), tokens] = True
            attention = torch.cat([attention, attention.new_ones(len(tokens), 1)], dim=1)
            out = body(inputs_embeds=embed(tokens)[:, None], attention_mask=attention,
                       position_ids=next_position[:, None], use_cache=True, **{cache_argument: cache})
            cache, logits = _returned_cache(out), head(out.last_hidden_state[:, -1]).float()
            next_position = next_position + 1
        return generated

    def _generation_inputs(self, batch: dict):
        """(input embeddings, attention mask, position ids) of the prompts that generation continues.

        official: the published rows, [T'max frames | prompt, right-padded], positions as Hugging Face
        `generate` derives them (valid tokens counted, cumsum of the mask - 1; masked positions 1).
        corrected: packed rows, [valid frames | prompt], left-padded so every row ends with its last token.
        Both give each valid token the same position and attend to the same tokens.
        """
        if self.published_layout:
            embeds, attention, _ = self._published_inputs(batch, with_targets=False)
            positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 1)
            return embeds, attention, positions
        audio = self.audio_embeddings(batch)
        rows = [torch.cat([frames, self._text_embeddings(list(prompt)).to(frames.dtype)], dim=0)
                for frames, prompt in zip(audio, batch["prompt_ids"])]
        count, longest, hidden = len(rows), max(r.shape[0] for r in rows), rows[0].shape[1]
        embeds = rows[0].new_zeros(count, longest, hidden)
        attention = torch.zeros(count, longest, dtype=torch.long, device=embeds.device)
        for i, row in enumerate(rows):  # left padding: every row's last token is at the end
            embeds[i, longest - row.shape[0]:] = row
            attention[i, longest - row.shape[0]:] = 1
        return embeds, attention, (attention.cumsum(-1) - 1).clamp(min=0)

    def decode(self, token_lists: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in token_lists]


def apply_speed_switches(model: AudioLLM, config) -> str | None:
    """Set the training-shape switches of a TrainConfig on `model`; a line for the log, or None."""
    model.length_bucket = config.length_bucket
    if not config.compile:
        return None
    if config.compile_mode in ("reduce-overhead", "max-autotune") and model.projector.weight.device.type != "cuda":
        mode = "default"  # CUDA graphs only exist on a GPU
    else:
        mode = config.compile_mode
    model.compile_training(mode, exact_random=config.deterministic)
    return (f"decoder body compiled for training (torch.compile mode {mode}, dynamic shapes"
            f"{f', lengths bucketed by {config.length_bucket}' if config.length_bucket else ''}); "
            f"the first steps include compiling")
