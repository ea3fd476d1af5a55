"""iWER and iCER: max(0, 1 - error rate), jiwer corpus-level over all utterances.

Empty references (after normalization) depend on the protocol:
  official   kept, as the published system keeps them. jiwer (>= 4.0) counts every word or character
             predicted for them as an insertion and adds nothing to the reference length; when all
             references are empty the "rate" is the number of insertions itself.
  corrected  dropped: such an utterance has no words to get wrong, and its insertions would be charged
             to the other utterances' reference length.
"""

from __future__ import annotations

from lalmbench.metrics.normalize import normalize_text


def _pairs(predictions: list[str], references: list[str], protocol: str) -> tuple[list[str], list[str]]:
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(p) for p in predictions]
    if protocol == "official":
        return refs, hyps
    kept = [(r, h) for r, h in zip(refs, hyps) if r]
    if not kept:
        raise ValueError("every reference is empty after normalization; nothing to score")
    return [r for r, _ in kept], [h for _, h in kept]


def iwer(predictions: list[str], references: list[str], protocol: str = "official") -> float:
    import jiwer

    refs, hyps = _pairs(predictions, references, protocol)
    return max(0.0, 1.0 - float(jiwer.wer(refs, hyps)))


def icer(predictions: list[str], references: list[str], protocol: str = "official") -> float:
    import jiwer

    refs, hyps = _pairs(predictions, references, protocol)
    return max(0.0, 1.0 - float(jiwer.cer(refs, hyps)))
