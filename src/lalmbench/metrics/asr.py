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


# ---------------------------------------------------------------- the additive form the bootstrap resamples

def edit_counts(references: list[str], hypotheses: list[str], unit: str):
    """Per pair: (substitutions + deletions + insertions, reference units), as jiwer counts them: the
    Levenshtein distance between the normalized texts' words (unit "word") or characters, spaces included."""
    import numpy as np
    from rapidfuzz.distance import Levenshtein

    if unit == "word":
        references, hypotheses = [r.split() for r in references], [h.split() for h in hypotheses]
    edits = np.array([Levenshtein.distance(r, h) for r, h in zip(references, hypotheses)], dtype=np.float64)
    return edits, np.array([len(r) for r in references], dtype=np.float64)


def error_rate_statistics(unit: str):
    """The additive form of iWER (unit "word") or iCER ("char"): rows [edits, reference units],
    score = max(0, 1 - edits / units) (jiwer's corpus rule)."""
    def statistics(predictions, references, metric_args: dict, protocol: str):
        import numpy as np

        from lalmbench.metrics.spec import ratio

        edits, units = edit_counts([normalize_text(r) for r in references], [normalize_text(p) for p in predictions],
                                   unit)
        if protocol != "official":
            # lalmbench's own rule: an utterance whose reference normalizes to nothing is not scored.
            edits = np.where(units > 0, edits, 0.0)

        def reduce(totals):
            # No reference unit and no edit: nothing to get wrong (score 1); edits over no unit: 0.
            rate = ratio(totals[:, 0], totals[:, 1], 0.0)
            rate = np.where((totals[:, 1] == 0) & (totals[:, 0] > 0), np.inf, rate)
            return np.maximum(0.0, 1.0 - rate)

        return np.stack([edits, units], axis=1), reduce

    return statistics


# ---------------------------------------------------------------- one example's score, for the report

def word_accuracy(prediction: str, reference: str) -> float:
    """1 - this example's WER, at least 0."""
    from rapidfuzz.distance import Levenshtein

    pred, ref = normalize_text(prediction).split(), normalize_text(reference).split()
    return max(0.0, 1.0 - Levenshtein.distance(ref, pred) / max(1, len(ref)))


def char_accuracy(prediction: str, reference: str) -> float:
    """1 - this example's CER, at least 0."""
    from rapidfuzz.distance import Levenshtein

    pred, ref = normalize_text(prediction), normalize_text(reference)
    return max(0.0, 1.0 - Levenshtein.distance(ref, pred) / max(1, len(ref)))
