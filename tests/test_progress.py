"""Progress that knows where it writes: a live bar on a terminal; plain lines, every N steps, when the output
goes to a file or a pipe (the demo's log was 642 KB of bar updates, log lines glued to them); evaluation
progress with its total and time left; durations in minutes and seconds."""

from __future__ import annotations

import io
import logging

import pytest

from run_helpers import FAST, good_records, run_dir_of, tone_data

from lalmbench.progress import Progress, format_duration


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("seconds, said", [(0, "0 s"), (53.4, "53 s"), (59.6, "1 min 0 s"), (245, "4 min 5 s"),
                                           (3599, "59 min 59 s"), (3600, "1 h 00 min"), (7500, "2 h 05 min"),
                                           (90_061, "25 h 01 min")])
def test_durations_in_minutes_and_seconds(seconds, said):
    assert format_duration(seconds) == said


def test_the_training_estimate_says_53_seconds_not_0_h_00_min():
    from lalmbench.train import training_time_estimate

    line = training_time_estimate(5.3, 10)
    assert "about 53 s of training" in line and "0 h 00 min" not in line


def test_a_bar_on_a_terminal_with_log_lines_above_it():
    terminal = Terminal()
    logger = logging.getLogger("lalmbench")
    console = logging.StreamHandler(terminal)
    console.setFormatter(logging.Formatter("LOG %(message)s"))
    logger.addHandler(console)
    try:
        progress = Progress("train", total=6, unit="step", stream=terminal)
        for step in range(1, 7):
            progress.update(1)
            if step == 3:
                logger.warning("halfway")
        progress.close()
    finally:
        logger.removeHandler(console)
    written = terminal.getvalue()
    assert "\r" in written and "6/6" in written  # a live bar, redrawn in place
    # The log line starts a line of its own: the bar was cleared before it, never glued to it.
    before = written[:written.index("LOG halfway")]
    assert before.endswith(("\r", "\n")) and not before.rstrip("\r").endswith("]")
    assert "LOG halfway\n" in written


def test_in_a_file_no_bar_but_a_line_each_tenth_with_total_and_time_left():
    stream = io.StringIO()  # not a terminal
    logger, records = logging.getLogger("lalmbench"), []
    keep = logging.Handler()
    keep.emit = records.append
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        progress = Progress("eval_tones", total=200, unit="example", stream=stream, line_every=0.1)
        for _ in range(50):
            progress.update(4)
        progress.close()
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    assert stream.getvalue() == ""  # nothing written where a bar would have gone
    lines = [r.getMessage() for r in records if r.getMessage().startswith("eval_tones: ")]
    assert len(lines) == 10
    assert lines[0].startswith("eval_tones: 20/200 examples (10%), ") and lines[-1].startswith("eval_tones: 200/200 examples (100%), ")
    assert all(" elapsed, about " in line and line.endswith(" left") for line in lines)


def test_a_run_whose_output_goes_to_a_file_writes_plain_lines(tmp_path, capfd):
    """A run with progress on and stderr not a terminal (pytest captures it): no bar updates (no carriage
    return), the training's step lines every logging_steps with the time left, and the test set's progress
    with its total."""
    from lalmbench.runner import run

    train_yaml, eval_yaml = tone_data(tmp_path / "data", good_records("r", 12, seed=1), good_records("test", 6, seed=2))
    run("lalmbench.encoders.LogMelEncoder", str(train_yaml), str(eval_yaml), {},
        {**FAST, "max_steps": 6, "logging_steps": 3}, tmp_path / "out", allow_download=False, write_report=False,
        show_progress=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    steps = [line for line in err.splitlines() if "] step " in line]
    assert [line.split("] step ")[1].split(" ")[0] for line in steps] == ["3/6", "6/6"]
    assert all(" elapsed, about " in line for line in steps)
    assert "eval_tones: 6/6 examples (100%), " in err
    log = (run_dir_of(tmp_path / "out") / "log.txt").read_text()
    assert "\r" not in log and "eval_tones: 6/6 examples (100%), " in log
