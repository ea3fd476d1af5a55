"""iWER and iCER: max(0, 1 - error rate), jiwer corpus-level over all utterances."""

from __future__ import annotations

from lalmbench.metrics.normalize import normalize_text


def _pairs(predictions: list[str], references: list[str]) -> tuple[list[str], list[str]]:
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(p) for p in predictions]
    # jiwer refuses empty references; an utterance whose reference normalizes to nothing has no words
    # to get wrong, so it is dropped (the published system would crash on it).
    kept = [(r, h) for r, h in zip(refs, hyps) if r]
    if not kept:
        raise ValueError("every reference is empty after normalization; nothing to score")
    return [r for r, _ in kept], [h for _, h in kept]


def iwer(predictions: list[str], references: list[str]) -> float:
    import jiwer

    refs, hyps = _pairs(predictions, references)
    return max(0.0, 1.0 - float(jiwer.wer(refs, hyps)))


def icer(predictions: list[str], references: list[str]) -> float:
    import jiwer

    refs, hyps = _pairs(predictions, references)
    return max(0.0, 1.0 - float(jiwer.cer(refs, hyps)))
