"""Exceptions a user can act on. Each message says what is wrong, with which value, and what to do."""


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
