"""Near misses get a suggestion: task names, config names (lalmbench.errors.did_you_mean)."""

import pytest

from lalmbench.config import load_train_config
from lalmbench.errors import ConfigError, did_you_mean
from lalmbench.tasks.listing import tasks_command


def test_did_you_mean_handles_separators_case_and_typos():
    assert did_you_mean("esc50", ["esc-50", "gtzan"]) == " Did you mean 'esc-50'?"
    assert did_you_mean("ESC_50", ["esc-50"]) == " Did you mean 'esc-50'?"
    assert did_you_mean("max_step", ["max_steps", "seed"]) == " Did you mean 'max_steps'?"
    assert did_you_mean("librispeech_gender", ["librispeech", "librispeech-gender"]) == " Did you mean 'librispeech-gender'?"
    assert did_you_mean("zzz", ["esc-50", "gtzan"]) == ""


def test_unknown_train_config_suggests_the_builtin():
    with pytest.raises(ConfigError, match="Did you mean 'esc-50'"):
        load_train_config("esc50")


def test_tasks_command_suggests_the_task():
    with pytest.raises(ConfigError, match="Did you mean 'fsd50k'"):
        tasks_command("fsd-50k")


def test_every_exception_is_defined_in_errors_and_keeps_its_old_import_path():
    """One class per error, defined in lalmbench.errors; the modules that raise them still offer them."""
    import lalmbench.data.audio
    import lalmbench.encoders.package
    import lalmbench.encoders.scaffold
    import lalmbench.io_utils
    import lalmbench.metrics.captions
    import lalmbench.train
    from lalmbench import errors

    old_homes = {lalmbench.train: ["EncoderFailure", "EncoderFailureOnRanks"], lalmbench.io_utils: ["OutputDirError"],
                 lalmbench.metrics.captions: ["CaptionModelsError"], lalmbench.encoders.package: ["PackageError"],
                 lalmbench.encoders.scaffold: ["ScaffoldError"], lalmbench.data.audio: ["AudioDecodeError"]}
    for module, names in old_homes.items():
        for name in names:
            assert getattr(module, name) is getattr(errors, name), (module.__name__, name)
            assert getattr(errors, name).__module__ == "lalmbench.errors"
    assert issubclass(errors.OutputDirError, errors.LalmbenchError)  # the CLI prints it without a traceback
    assert not issubclass(errors.EncoderFailure, errors.LalmbenchError)  # a signal, turned into EncoderRuntimeError


def test_output_piped_into_head_ends_quietly():
    """`lalmbench tasks | head -2`: the closed pipe is no traceback and no error status."""
    import subprocess
    import sys

    listing = subprocess.Popen([sys.executable, "-m", "lalmbench", "tasks"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    listing.stdout.close()  # the reader is gone before the listing is written (as after `head -1`): EPIPE
    status = listing.wait(timeout=60)
    assert status == 0 and b"Traceback" not in listing.stderr.read()
