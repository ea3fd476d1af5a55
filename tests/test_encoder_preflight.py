"""The encoder run on real clips of the run's own data before anything is written: an encoder that returns
NaN/Inf (or raises) on real audio, though fine on the random input of the contract checks, stops the run
before its run directory and checkpoint-0 exist (it used to make both, then stop at step 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from run_helpers import good_records, run_dir_of, run_inprocess, tone_data, write_shard

from lalmbench.errors import EncoderRuntimeError

# Fine on randn input (RMS about 1, the contract checks' input); NaN on quieter audio: every real clip here
# (tones of amplitude 0.3, RMS about 0.21).
QUIET_NAN_ENCODER = '''
import torch
from lalmbench.encoders import logmel


class QuietNanEncoder(logmel.LogMelEncoder):
    def __init__(self, on: str = "all"):
        super().__init__()
        self.on = on

    def forward(self, audio, audio_attention_mask=None):
        features, mask = super().forward(audio, audio_attention_mask)
        quiet = audio.pow(2).mean(-1).sqrt() < 0.5
        if self.on == "eval" and self.training:
            return features, mask
        return features + torch.where(quiet, float("nan"), 0.0)[:, None, None], mask
'''


def _data(root: Path) -> tuple[Path, Path]:
    return tone_data(root, good_records("r", 8, seed=1), good_records("test", 4, seed=2))


@pytest.mark.parametrize("protocol", ["official", "corrected"])
def test_an_encoder_returning_nan_on_real_clips_stops_before_the_run_directory(tmp_path, encoder_file, protocol):
    train_yaml, eval_yaml = _data(tmp_path / "data")
    train = tmp_path / "data" / "tones.tar"
    with pytest.raises(EncoderRuntimeError) as caught:
        run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {"protocol": protocol},
                      encoder=encoder_file("quiet_nan", QUIET_NAN_ENCODER))
    message = str(caught.value)
    assert message.startswith("the encoder failed on real clips of this run's data, checked before training: "
                              "the encoder returned NaN or Inf features")
    assert f"{train} key r_0000 (0.25 s)" in message  # the first clip of the training dataset, by shard and key
    assert "Nothing was written (no run directory, no checkpoint)" in message
    assert not run_dir_of(tmp_path / "out", "quiet_nan").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("checkpoint-*"))


def test_the_test_sets_clips_are_checked_in_evaluation_mode(tmp_path, encoder_file):
    """NaN only in eval mode (corrected keeps the encoder in eval mode in training too, so use official,
    where it follows the trainer into train mode): the test set's first clip stops the run."""
    train_yaml, eval_yaml = _data(tmp_path / "data")
    test = tmp_path / "data" / "test.tar"
    with pytest.raises(EncoderRuntimeError) as caught:
        run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {"protocol": "official"},
                      encoder=encoder_file("quiet_nan", QUIET_NAN_ENCODER), model_args={"on": "eval"})
    assert f"{test} key test_0000 (0.25 s)" in str(caught.value)
    assert not run_dir_of(tmp_path / "out", "quiet_nan").exists()


def test_the_check_leaves_random_state_and_encoder_statistics_as_they_were(tmp_path):
    """Under official the encoder follows the trainer into train mode, where BatchNorm updates its running
    statistics and dropout draws random numbers: the check must change neither, or training would start
    from another state than the published system's."""
    from lalmbench.config import TrainConfig
    from lalmbench.data.examples import BadDataCounter, iter_examples
    from lalmbench.data.tokenizing import Tokenizing
    from lalmbench.encoders import LogMelEncoder
    from lalmbench.encoders.contract import FrozenEncoder
    from lalmbench.model.audio_llm import AudioLLM, add_lora
    from lalmbench.model.decoder import load_decoder
    from lalmbench.phases.preparation import check_encoder_on_run_data

    class NormedEncoder(LogMelEncoder):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(self.output_dim)
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, audio, audio_attention_mask=None):
            features, mask = super().forward(audio, audio_attention_mask)
            return self.drop(self.norm(features.transpose(1, 2)).transpose(1, 2)), mask

    decoder, tokenizer = load_decoder("tiny-random", seed=0)
    model = AudioLLM(FrozenEncoder(NormedEncoder(), follow_train_mode=True), add_lora(decoder, 2, 4, 0.0), tokenizer,
                     protocol="official")
    model.eval()
    shard = write_shard(tmp_path / "tones.tar", good_records("r", 3, seed=1))
    examples = [e for _, _, e in iter_examples("tones", shard, "label", BadDataCounter())]
    config = TrainConfig(decoder_model_name="tiny-random")
    tokenizing = Tokenizing(tokenizer, {"tones": "Name the colour."}, "official")
    torch.manual_seed(5)
    before_rng = torch.random.get_rng_state()
    before_stats = {k: v.clone() for k, v in model.encoder.inner.norm.state_dict().items()}
    check_encoder_on_run_data(model, config, examples, [], tokenizing, micro_batch=2)
    assert torch.equal(torch.random.get_rng_state(), before_rng)
    for name, value in model.encoder.inner.norm.state_dict().items():
        assert torch.equal(value, before_stats[name]), name
    assert not model.training  # the mode it was in
