"""Every exception lalmbench defines, in one place.

Most are errors a user can act on (LalmbenchError and its subclasses): each message says what is wrong,
with which value, and what to do. The last two groups are signals raised and caught inside a run, which
reach a user only through the LalmbenchError they are turned into (EncoderFailure -> EncoderRuntimeError;
AudioDecodeError -> an entry in the bad-data account). The modules that raise them import them from here
(and so still offer them under their old names: lalmbench.train.EncoderFailure, lalmbench.io_utils.OutputDirError,
...)."""


class LalmbenchError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class ConfigError(LalmbenchError):
    """A train or eval configuration is invalid."""


class EncoderContractError(LalmbenchError):
    """An encoder does not satisfy the challenge contract (docs/protocol.md, "What the encoder must be")."""

    def __init__(self, check: str, expected: str, got: str, fix: str = ""):
        self.check, self.expected, self.got, self.fix = check, expected, got, fix
        message = f"encoder check '{check}' failed: expected {expected}, got {got}"
        if fix:
            message += f". Fix: {fix}"
        super().__init__(message)


class DataError(LalmbenchError):
    """Shards are missing, unreadable or too corrupt to train on."""


class CheckpointError(LalmbenchError):
    """A checkpoint or the trained weights in a run directory cannot be read: damaged, from an older
    format, or holding objects other than tensors and plain values (which are never unpickled)."""


class DecoderLoadError(LalmbenchError):
    """The decoder model or its tokenizer cannot be loaded."""


class EncoderRuntimeError(LalmbenchError):
    """The encoder failed (exception, NaN/Inf, out of memory) on a specific example during a run."""


def did_you_mean(name: str, candidates) -> str:
    """' Did you mean "esc-50"?' for a near miss of one of `candidates`, else ''.

    Names are compared without case, '-', '_' and spaces first (esc50, ESC_50 -> esc-50), then by
    difflib's similarity (max_step -> max_steps).
    """
    import difflib
    import re

    candidates = [str(c) for c in candidates]
    squash = lambda text: re.sub(r"[^0-9a-z]", "", text.lower())
    same = [c for c in candidates if squash(c) == squash(name)]
    if not same:
        squashed = {squash(c): c for c in candidates}
        same = [squashed[m] for m in difflib.get_close_matches(squash(name), list(squashed), n=2, cutoff=0.75)]
    if not same:
        return ""
    return " Did you mean " + " or ".join(f"{c!r}" for c in same) + "?"


class RunInUseError(LalmbenchError):
    """Another process holds the run directory (the same run started twice)."""


class DeterminismError(LalmbenchError):
    """An operation has no deterministic implementation and the run claims determinism."""


class AnotherProcessFailed(LalmbenchError):
    """This process of a multi-process run stopped because another one failed (distributed.FailureWatch)."""


class OutputDirError(LalmbenchError):
    """The output location cannot be written (read-only, no permission, disk full)."""


class CaptionModelsError(LalmbenchError):
    """mecat, sentence-transformers or the models FENSE/DATE need are not available offline."""


class PackageError(LalmbenchError):
    """The submission directory cannot be packaged as asked."""


class ScaffoldError(LalmbenchError):
    """The scaffold cannot be written where or as asked."""


# -- signals inside a run ------------------------------------------------------------------------------------
class EncoderFailure(RuntimeError):
    """Raised inside a step when the encoder fails on a batch; carries the batch for the message.

    Training and evaluation turn it into EncoderRuntimeError, with what to do next."""

    def __init__(self, reason: str, batch: dict, rows: list[int] | None = None, sample_rate: int = 16_000):
        self.reason = reason
        lengths = batch["audio_mask"].sum(-1).tolist()
        rows = rows if rows is not None else list(range(len(lengths)))
        self.details = [f"{batch['refs'][r].shard} key {batch['refs'][r].key} ({lengths[r] / sample_rate:.2f} s)"
                        for r in rows]
        super().__init__(f"{reason}: " + "; ".join(self.details))


class EncoderFailureOnRanks(EncoderFailure):
    """EncoderFailure as every rank of a multi-process run sees it: the failures of all ranks."""

    def __init__(self, reports: list[str]):
        RuntimeError.__init__(self, "; ".join(reports))
        self.reason, self.details = "the encoder failed", reports


class AudioDecodeError(ValueError):
    """The bytes are not decodable audio, or hold no samples (the example is counted as bad data)."""
