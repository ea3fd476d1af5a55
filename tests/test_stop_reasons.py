"""Why a run stopped is in its log.txt as well as on stderr: a data error, an encoder error, Ctrl-C
(KeyboardInterrupt) or any other exception. log.txt used to just end; the reason was on stderr only."""

from __future__ import annotations

import pytest

from run_helpers import good_records, nan_wav, run_dir_of, run_inprocess, tone_data

from lalmbench.errors import DataError, EncoderRuntimeError

# Fine for its first `after` calls (the contract check, the check on real clips, the first training steps),
# then fails as `mode` says.
FAILING_LATER = '''
from lalmbench.encoders import logmel


class LaterEncoder(logmel.LogMelEncoder):
    def __init__(self, mode: str = "interrupt", after: int = 7):
        super().__init__()
        self.mode, self.after, self.calls = mode, after, 0

    def forward(self, audio, audio_attention_mask=None):
        self.calls += 1
        if self.calls > self.after:
            if self.mode == "interrupt":
                raise KeyboardInterrupt
            if self.mode == "bug":
                raise SystemError("an internal error")
            raise ValueError("cannot handle this clip")
        return super().forward(audio, audio_attention_mask)
'''


@pytest.mark.parametrize("mode, error, logged", [
    ("interrupt", KeyboardInterrupt, "run stopped: interrupted (KeyboardInterrupt: Ctrl-C or a stop signal)"),
    ("encoder", EncoderRuntimeError, "run stopped: the encoder failed at step 3: the encoder raised "
                                     "builtins.ValueError: cannot handle this clip"),
])
def test_the_reason_of_a_stop_is_the_last_entry_of_log_txt(tmp_path, capfd, encoder_file, mode, error, logged):
    train_yaml, eval_yaml = tone_data(tmp_path / "data", good_records("r", 12, seed=1), good_records("test", 4, seed=2))
    with pytest.raises(error):
        run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {"max_steps": 6, "save_steps": 2,
                                                                "protocol": "corrected"},
                      encoder=encoder_file("later", FAILING_LATER), model_args={"mode": mode})
    log = (run_dir_of(tmp_path / "out", "later") / "log.txt").read_text().rstrip("\n")
    last = log.splitlines()[-1]
    assert last.split("] ", 1)[1].startswith(logged), last
    assert "ERROR" in last.split("] ", 1)[0]
    # On stderr the reason is said once, by whoever handles the exception (the CLI), not twice.
    assert "run stopped:" not in capfd.readouterr().err


def test_a_data_error_and_an_unexpected_exception_are_logged_too(tmp_path, capfd, encoder_file):
    records = good_records("r", 20, seed=7)
    for index in (3, 8, 13):
        records[index]["wav"] = nan_wav()
    train_yaml, eval_yaml = tone_data(tmp_path / "data", records, good_records("test", 4, seed=2))
    args = {"shuffle_buffer": 1, "sort_buffer": 2, "per_device_train_batch_size": 2, "max_steps": 10,
            "save_steps": 2, "max_bad_fraction": 0.1, "protocol": "corrected"}
    with pytest.raises(DataError) as caught:
        run_inprocess(train_yaml, eval_yaml, tmp_path / "out", args)
    log = (run_dir_of(tmp_path / "out") / "log.txt").read_text()
    assert log.rstrip("\n").splitlines()[-1].endswith(f"run stopped: {caught.value}")

    with pytest.raises(EncoderRuntimeError):  # an encoder's own exception is the encoder's failure
        run_inprocess(train_yaml, eval_yaml, tmp_path / "bug", {**args, "max_bad_fraction": 0.5},
                      encoder=encoder_file("later", FAILING_LATER), model_args={"mode": "bug"})
    log = (run_dir_of(tmp_path / "bug", "later") / "log.txt").read_text()
    assert "run stopped: the encoder failed at step 3: the encoder raised builtins.SystemError: an internal error" in log


def test_any_other_exception_is_logged_with_its_traceback(tmp_path, monkeypatch, capfd):
    import lalmbench.runner

    def crash(prepared):
        raise RuntimeError("the metric crashed")

    monkeypatch.setattr(lalmbench.runner, "evaluate_or_reuse", crash)
    train_yaml, eval_yaml = tone_data(tmp_path / "data", good_records("r", 8, seed=1), good_records("test", 2, seed=2))
    with pytest.raises(RuntimeError, match="the metric crashed"):
        run_inprocess(train_yaml, eval_yaml, tmp_path / "out", {"max_steps": 2})
    log = (run_dir_of(tmp_path / "out") / "log.txt").read_text()
    stop = log.index("run stopped: RuntimeError: the metric crashed")
    assert "Traceback (most recent call last)" in log[stop:] and 'raise RuntimeError("the metric crashed")' in log[stop:]
    assert "run stopped:" not in capfd.readouterr().err
