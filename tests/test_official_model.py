"""The model side of protocol official against the published system (XARES-LLM 0.0.12), and what
protocol corrected keeps.

The fixtures below are the published model's own numbers on the pieces of official_model_parts.py (one
set of weights from parameter names, four clips of 49/12/29/37 frames, two prompts), printed by
make_official_model_fixtures.py with the published code (transformers 4.57.3, peft 0.18.0, torch 2.13.0,
CPU). Official: the encoder runs in train mode during training steps (BatchNorm batch statistics, its
running statistics updated), each row is [the batch's whole frame block | right-padded text] with
positions 0..L-1, and generation continues [frame block | prompt] with positions counted over valid tokens.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil

import numpy as np
import pytest
import torch

import official_model_parts as parts
from lalmbench.config import TrainConfig
from lalmbench.encoders.contract import FrozenEncoder, validate_encoder
from lalmbench.errors import ConfigError
from lalmbench.model.audio_llm import IGNORE, AudioLLM, add_lora
from lalmbench.model.feature_cache import attach_feature_cache
from lalmbench.train import make_optimizer

# -- the published model's numbers (make_official_model_fixtures.py) ----------------------------------------
PUBLISHED = {
    "masked": {
        "loss": 8.288735389709473, "grad_norm": 10.710723940481536,
        "generate_same_prompt": [[538, 762, 139, 849, 704, 42, 680, 560, 16, 44, 889, 818],
                                 [648, 830, 562, 435, 762, 671, 680, 367, 88, 80, 984, 161],
                                 [621, 205, 538, 748, 762, 671, 974, 318, 680, 174, 465, 751],
                                 [92, 42, 762, 671, 920, 605, 30, 620, 734, 579, 361, 410]],
        "generate_mixed_prompts": [[538, 762, 139, 849, 704, 42, 680, 560, 16, 44, 889, 818],
                                   [605, 762, 671, 505, 327, 424, 762, 139, 201, 15, 674, 302],
                                   [621, 205, 538, 748, 762, 671, 974, 318, 680, 174, 465, 751],
                                   [85, 474, 671, 790, 762, 139, 693, 676, 762, 85, 298, 327]]},
    "unmasked": {
        "loss": 8.35877799987793, "grad_norm": 11.678669739622901,
        "generate_same_prompt": [[538, 762, 139, 849, 704, 42, 680, 560, 16, 44, 889, 818],
                                 [92, 858, 818, 762, 671, 550, 762, 139, 605, 605, 605, 605],
                                 [538, 849, 952, 714, 729, 762, 671, 439, 616, 230, 377, 892],
                                 [92, 25, 643, 495, 189, 680, 409, 149, 762, 36, 762, 139]],
        "generate_mixed_prompts": [[538, 762, 139, 849, 704, 42, 680, 560, 16, 44, 889, 818],
                                   [856, 562, 365, 505, 397, 298, 803, 762, 671, 1017, 578, 367],
                                   [538, 849, 952, 714, 729, 762, 671, 439, 616, 230, 377, 892],
                                   [762, 671, 920, 36, 112, 748, 762, 139, 605, 762, 671, 457]]},
    "batchnorm": {
        "loss": 8.592118263244629, "grad_norm": 20.47943025859492,
        "generate_same_prompt": [[538, 762, 46, 762, 139, 383, 1008, 578, 92, 562, 29, 367],
                                 [631, 762, 859, 859, 127, 707, 439, 494, 61, 762, 363, 15],
                                 [550, 389, 177, 800, 1021, 206, 451, 605, 605, 110, 793, 42],
                                 [266, 890, 578, 236, 910, 248, 112, 251, 784, 860, 89, 586]],
        "generate_mixed_prompts": [[538, 762, 46, 762, 139, 383, 1008, 578, 92, 562, 29, 367],
                                   [605, 905, 397, 321, 671, 441, 367, 1008, 59, 59, 389, 217],
                                   [550, 389, 177, 800, 1021, 206, 451, 605, 605, 110, 793, 42],
                                   [85, 762, 139, 605, 680, 897, 46, 85, 112, 452, 605, 967]]},
}
# BatchNorm statistics after the one training step above (they start at mean 0, variance 1).
PUBLISHED_BN_AFTER_STEP = {
    "running_mean": [-0.02286561019718647, 0.009754199534654617, 0.012427984736859798, -0.004146782215684652,
                     0.003986320458352566, -0.0016903607174754143, 0.013443767093122005, -0.010122295469045639,
                     0.018902476876974106, -0.019708765670657158, -0.007311851717531681, -0.01317058689892292,
                     0.011193017475306988, 0.00021784263662993908, 0.0019755465909838676, -0.007260771002620459],
    "running_var": [0.9031728506088257, 0.9025241136550903, 0.9028785824775696, 0.9023767709732056,
                    0.9025114178657532, 0.902658224105835, 0.9023538827896118, 0.9029836654663086,
                    0.90276700258255, 0.9021645784378052, 0.9029698371887207, 0.9016537666320801,
                    0.9030323624610901, 0.9020915627479553, 0.9035083055496216, 0.9029198884963989]}
# What the published checker leaves: seed 42, BatchNormConvEncoder() built, its check forward in train mode.
PUBLISHED_BN_AFTER_CHECK = {
    "running_mean": [0.002687988569959998, -0.0007159450906328857, 0.008866666816174984, 0.0016902759671211243,
                     0.001521567115560174, -0.0014238766161724925, -0.0005634082481265068, 0.002198673551902175,
                     -0.003688603639602661, -0.003715255530551076, 0.0027100383304059505, -0.00438105221837759,
                     0.002470673294737935, -0.0012168075190857053, 0.0006811122293584049, -0.0013397621223703027],
    "running_var": [0.9353444576263428, 0.9376851320266724, 0.9333655834197998, 0.9313017725944519,
                    0.9345637559890747, 0.9334545135498047, 0.9398519396781921, 0.9315846562385559,
                    0.9316895008087158, 0.9317665696144104, 0.934047520160675, 0.9325867295265198,
                    0.93422931432724, 0.9365854263305664, 0.9359326958656311, 0.9335247278213501]}


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from lalmbench.model.decoder import _train_tiny_tokenizer

    tokenizer = _train_tiny_tokenizer()
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == parts.EOS
    return tokenizer


@functools.lru_cache(maxsize=1)
def _decoder():
    from transformers import LlamaConfig, LlamaForCausalLM

    return add_lora(LlamaForCausalLM(LlamaConfig(**parts.DECODER)), dropout=0.0)


def _model(encoder: str | torch.nn.Module, protocol: str = "official") -> AudioLLM:
    """The fixtures' model: canonical weights everywhere, LoRA dropout 0 (deterministic numbers)."""
    inner = parts.ENCODERS[encoder]() if isinstance(encoder, str) else encoder
    model = AudioLLM(FrozenEncoder(inner), copy.deepcopy(_decoder()), _tokenizer(), protocol=protocol)
    assert parts.set_canonical_weights(model) == (54 if encoder == "batchnorm" else 52)
    return model


def _batch(mixed_prompts: bool = True) -> dict:
    audio, mask = parts.padded_audio()
    return {"audio": audio, "audio_mask": mask, "prompt_ids": parts.row_prompts(mixed_prompts),
            "target_ids": [list(t) for t in parts.TARGETS]}


def _grad_norm(model) -> float:
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


# -- parity with the published model ------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["masked", "unmasked", "batchnorm"])
def test_official_step_and_answers_equal_the_published_models(encoder):
    model = _model(encoder)
    model.train()  # as the published Trainer before each step: the encoder follows
    loss = model(_batch())
    loss.backward()
    published = PUBLISHED[encoder]
    assert abs(loss.item() - published["loss"]) <= 1e-5
    assert _grad_norm(model) == pytest.approx(published["grad_norm"], rel=1e-5)
    if encoder == "batchnorm":  # the step's batch statistics went into the running statistics
        bn = model.encoder.inner.bn
        np.testing.assert_allclose(bn.running_mean, PUBLISHED_BN_AFTER_STEP["running_mean"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(bn.running_var, PUBLISHED_BN_AFTER_STEP["running_var"], rtol=0, atol=1e-6)
        assert int(bn.num_batches_tracked) == 1
    model.eval()  # evaluation: eval mode, with the statistics the step left
    with torch.no_grad():
        assert model.generate(_batch(mixed_prompts=False), 12, 1.05) == published["generate_same_prompt"]
        # Prompts of two lengths: the published rows are right-padded, so a short prompt's first answer
        # token comes from a padding position. Reproduced, not fixed.
        assert model.generate(_batch(mixed_prompts=True), 12, 1.05) == published["generate_mixed_prompts"]


def test_official_check_updates_batchnorm_as_the_published_checker():
    torch.manual_seed(42)  # the seed the published Trainer sets before it builds the model
    encoder = parts.BatchNormConvEncoder()
    validate_encoder(encoder, keep_mode=True)
    np.testing.assert_allclose(encoder.bn.running_mean, PUBLISHED_BN_AFTER_CHECK["running_mean"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(encoder.bn.running_var, PUBLISHED_BN_AFTER_CHECK["running_var"], rtol=0, atol=1e-6)
    corrected = parts.BatchNormConvEncoder()
    validate_encoder(corrected)  # protocol corrected: the check runs in eval mode and changes nothing
    assert int(corrected.bn.num_batches_tracked) == 0 and float(corrected.bn.running_mean.abs().max()) == 0


# -- layouts ----------------------------------------------------------------------------------------------
def test_official_rows_start_their_text_at_the_longest_frame_count():
    model = _model("masked")
    batch = _batch()
    with torch.no_grad():
        embeds, attention, labels = model.build_training_inputs(batch)
    frames = [49, 12, 29, 37]  # valid frames per clip; the batch's block is 49 frames
    longest_text = max(len(parts.PROMPTS[p]) + len(t) for p, t in zip(parts.ROW_PROMPTS, parts.TARGETS))
    assert embeds.shape[:2] == (4, 49 + longest_text)
    for row, (prompt, target) in enumerate(zip(batch["prompt_ids"], batch["target_ids"])):
        assert attention[row, :49].tolist() == [1] * frames[row] + [0] * (49 - frames[row])  # holes stay
        text = len(prompt) + len(target)
        assert attention[row, 49:].tolist() == [1] * text + [0] * (longest_text - text)  # right padding
        first = 49 + len(prompt)  # position of the first target token: the same block start in every row
        assert labels[row, first: first + len(target)].tolist() == target
        assert (labels[row, :first] == IGNORE).all() and (labels[row, first + len(target):] == IGNORE).all()
    corrected = _model("masked", "corrected")
    with torch.no_grad():
        _, packed_attention, packed_labels = corrected.build_training_inputs(batch)
    for row, prompt in enumerate(batch["prompt_ids"]):  # packed: a row's text follows its own frames
        first = int((packed_labels[row] != IGNORE).nonzero()[0])
        assert first == frames[row] + len(prompt)
        assert int(packed_attention[row].sum()) == frames[row] + len(prompt) + len(batch["target_ids"][row])


@pytest.mark.parametrize("encoder", ["masked", "unmasked"])
def test_official_loss_differs_from_packed_only_with_a_mask(encoder):
    official, corrected = _model(encoder, "official"), _model(encoder, "corrected")
    official.eval(), corrected.eval()
    with torch.no_grad():
        a, b = official(_batch()).item(), corrected(_batch()).item()
    if encoder == "masked":  # text positions shift by the batch mates' extra frames
        assert abs(a - b) > 1e-3
    else:  # no mask: every row has the whole block, so both layouts are one sequence
        assert abs(a - b) <= 1e-5


def test_official_generation_with_one_prompt_equals_packed():
    official, corrected = _model("masked", "official"), _model("masked", "corrected")
    official.eval(), corrected.eval()
    with torch.no_grad():
        assert official.generate(_batch(False), 6, 1.05) == corrected.generate(_batch(False), 6, 1.05)
        mixed_official, mixed_packed = official.generate(_batch(True), 6, 1.05), corrected.generate(_batch(True), 6, 1.05)
    assert mixed_official[0] == mixed_packed[0] and mixed_official[2] == mixed_packed[2]  # the longer prompt
    assert mixed_official[1] != mixed_packed[1]  # a right-padded short prompt (published) vs packed


# -- encoder mode ---------------------------------------------------------------------------------------------
class DropoutEncoder(parts.MaskConvEncoder):
    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def frames(self, audio):
        return self.drop(super().frames(audio))


class RandomDrawEncoder(parts.MaskConvEncoder):
    """Same output in both modes, but a random draw in train mode (a layerdrop that keeps every layer)."""

    def frames(self, audio):
        if self.training and float(torch.rand(1)) < 0.0:
            raise AssertionError("never")
        return super().frames(audio)


def _train_steps(model, steps: int = 3) -> None:
    optimizer, scheduler = make_optimizer(model, TrainConfig(learning_rate=1e-2, warmup_steps=0, max_steps=steps))
    model.train()
    for _ in range(steps):
        model(_batch()).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("protocol", ["official", "corrected"])
def test_encoder_mode_statistics_and_frozen_weights(protocol):
    model = _model("batchnorm", protocol)
    inner = model.encoder.inner
    weights = {n: p.detach().clone() for n, p in inner.named_parameters()}
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    _train_steps(model)
    assert inner.training is (protocol == "official") and inner.bn.training is (protocol == "official")
    assert not any(p.requires_grad for p in inner.parameters())
    for name, value in inner.named_parameters():  # frozen in both protocols
        assert torch.equal(value, weights[name]), name
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if "lora_B" in n)
    drift = float(inner.bn.running_mean.abs().max())
    if protocol == "official":
        assert int(inner.bn.num_batches_tracked) == 3 and drift > 1e-3
        assert "encoder.inner.bn.running_mean" in model.trainable_state_dict()
    else:
        assert int(inner.bn.num_batches_tracked) == 0 and drift == 0.0
        assert not any(name.startswith("encoder.") for name in model.trainable_state_dict())
    model.eval()
    assert not inner.training


def test_official_dropout_is_active_in_training_and_off_in_evaluation():
    frozen = FrozenEncoder(DropoutEncoder(), follow_train_mode=True)
    audio, mask = parts.padded_audio()
    frozen.train()
    assert not torch.equal(frozen(audio, mask)[0], frozen(audio, mask)[0])
    frozen.eval()
    assert torch.equal(frozen(audio, mask)[0], frozen(audio, mask)[0])
    corrected = FrozenEncoder(DropoutEncoder())
    corrected.train()
    assert not corrected.inner.training and torch.equal(corrected(audio, mask)[0], corrected(audio, mask)[0])


def test_trainable_state_restores_batchnorm_statistics():
    trained = _model("batchnorm")
    _train_steps(trained, 2)
    fresh = _model("batchnorm")
    fresh.load_trainable_state_dict(trained.trainable_state_dict())
    for name, value in trained.encoder.inner.bn.state_dict().items():
        assert torch.equal(fresh.encoder.inner.bn.state_dict()[name], value), name
    state = trained.trainable_state_dict()
    del state["encoder.inner.bn.running_var"]
    with pytest.raises(KeyError, match="encoder.inner.bn.running_var"):
        fresh.load_trainable_state_dict(state)


# -- feature cache ------------------------------------------------------------------------------------------
def test_feature_cache_under_official_needs_the_same_output_in_train_and_eval_mode(tmp_path):
    config = TrainConfig(feature_cache="memory")
    model = _model("batchnorm")
    model.train()
    before = copy.deepcopy(model.encoder.inner.bn.state_dict())
    with pytest.raises(ConfigError) as error:
        attach_feature_cache(model, config, {"class": "official_model_parts.BatchNormConvEncoder"}, {}, tmp_path)
    message = str(error.value)
    assert "official_model_parts.BatchNormConvEncoder" in message and "protocol official" in message
    assert "differs between train mode (training steps) and eval mode: max difference" in message
    assert '"feature_cache": "off"' in message and '"protocol": "corrected"' in message
    for name, value in model.encoder.inner.bn.state_dict().items():  # the probe left no trace
        assert torch.equal(value, before[name]), name
    assert model.encoder.inner.training and model.feature_hook is None
    # Dropout is refused the same way; an encoder that returns no mask for its padding, too.
    with pytest.raises(ConfigError, match="max difference"):
        attach_feature_cache(_model(DropoutEncoder()), config, {"class": "DropoutEncoder"}, {}, tmp_path)
    with pytest.raises(ConfigError, match="draws from the random generator"):
        attach_feature_cache(_model(RandomDrawEncoder()), config, {"class": "RandomDrawEncoder"}, {}, tmp_path)
    with pytest.raises(ConfigError, match="depend on its batch mates' padding"):
        attach_feature_cache(_model("unmasked"), config, {"class": "NoMaskConvEncoder"}, {}, tmp_path)
    # A deterministic, padding-independent encoder gets its cache; under corrected the old rule stands.
    assert attach_feature_cache(_model("masked"), config, {"class": "MaskConvEncoder"}, {}, tmp_path) is not None
    corrected = _model("batchnorm", "corrected")
    assert attach_feature_cache(corrected, config, {"class": "BatchNormConvEncoder"}, {}, tmp_path) is corrected.feature_hook


@pytest.fixture
def deterministic():
    """torch's deterministic algorithms on for one test, then as they were (they stayed on for later tests)."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_feature_cache_under_official_gives_the_losses_of_no_cache(tmp_path, deterministic):
    plain, cached = _model("masked"), _model("masked")
    cache = attach_feature_cache(cached, TrainConfig(feature_cache="memory"), {"class": "MaskConvEncoder"}, {}, tmp_path)
    losses = []
    for model in (plain, cached):
        optimizer, _ = make_optimizer(model, TrainConfig(learning_rate=1e-2))
        model.train()
        run = []
        for _ in range(3):  # the same batch: misses first, then hits assemble it from the store
            loss = model(_batch())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            run.append(loss.item())
        losses.append(run)
    assert cache.hits == 8 and cache.misses == 4
    np.testing.assert_allclose(losses[1], losses[0], rtol=0, atol=1e-6)


# -- a run, resumed ------------------------------------------------------------------------------------------
BATCHNORM_ENCODER = '''
import torch


class BatchNormEncoder(torch.nn.Module):
    """Conv + BatchNorm + Dropout with a frame mask."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.output_dim = dim
        self.proj = torch.nn.Conv1d(1, dim, kernel_size=400, stride=320)
        self.bn = torch.nn.BatchNorm1d(dim)
        self.drop = torch.nn.Dropout(0.2)

    def forward(self, audio, audio_attention_mask=None):
        features = self.drop(self.bn(self.proj(audio[:, None]))).transpose(1, 2)
        if audio_attention_mask is None:
            return features, None
        valid = (audio_attention_mask.long().sum(-1) - 400) // 320 + 1
        return features, (torch.arange(features.shape[1])[None] < valid[:, None]).long()
'''


def test_official_run_with_batchnorm_resumes_to_the_same_state(tmp_path, encoder_file):
    """Stopped after checkpoint 2 and resumed: final weights, BatchNorm statistics included, losses and
    scores equal an uninterrupted run's; the statistics moved during training."""
    from run_helpers import assert_same_run, resume_copy, run_inprocess, tiny_data, trained_weights

    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    encoder = encoder_file("bn_encoder", BATCHNORM_ENCODER)
    overrides = {"max_steps": 4}
    reference = run_inprocess(train_yaml, eval_yaml, tmp_path / "reference", overrides, encoder=encoder)
    final = trained_weights(reference.run_dir)
    assert int(final["encoder.inner.bn.num_batches_tracked"]) == 1 + 4 * 2  # the check, then 2 micro-batches a step
    checkpoint = torch.load(reference.run_dir / "checkpoint-2" / "trainable.pt")
    assert int(checkpoint["encoder.inner.bn.num_batches_tracked"]) == 1 + 2 * 2
    assert not torch.equal(checkpoint["encoder.inner.bn.running_mean"], final["encoder.inner.bn.running_mean"])

    output = tmp_path / "interrupted"
    resumed = resume_copy(reference.run_dir, output, 2, train_yaml, eval_yaml, overrides, encoder=encoder)
    assert_same_run(resumed.run_dir, reference.run_dir)
    assert json.loads((resumed.run_dir / "run_summary.json").read_text())["protocol"] == "official"

    # Reused: the finished training's weights and statistics come back from final_weights.pt, and the
    # test set is answered again (cached scores removed) with the answers of the uninterrupted run.
    shutil.rmtree(resumed.run_dir / "scores")
    (resumed.run_dir / "predictions_eval_tones.csv").unlink()
    reused = run_inprocess(train_yaml, eval_yaml, output, overrides, encoder=encoder)
    assert reused.reused_training
    assert ((reused.run_dir / "predictions_eval_tones.csv").read_text()
            == (reference.run_dir / "predictions_eval_tones.csv").read_text())
