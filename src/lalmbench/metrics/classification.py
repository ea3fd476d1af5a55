"""Accuracy (exact match of normalized strings) and mAP over ';'-separated label strings.

How a label string becomes labels depends on the protocol (config.PROTOCOLS):
  official   as the published system parses it: normalized with every punctuation mark kept, split on
             the separator, each part taken as it is. "Bark; Dog" holds the labels "bark" and " dog"
             (a leading space: no match for "dog"), and "Male speech, man speaking" only matches
             itself with its comma.
  corrected  normalized with the punctuation dropped (the separator kept), each label trimmed: the
             two strings above match "bark;dog" and "male speech man speaking".
"""

from __future__ import annotations

import unicodedata

import numpy as np

from lalmbench.metrics.normalize import normalize_text


def accuracy(predictions: list[str], references: list[str]) -> float:
    hits = sum(normalize_text(p) == normalize_text(r) for p, r in zip(predictions, references))
    return hits / len(references)


def split_labels(text: str, separator: str = ";", protocol: str = "official") -> list[str]:
    """The labels of one label string, as the protocol reads them (module docstring)."""
    if protocol == "official":
        return normalize_text(text, remove_punctuation=False).split(separator)
    # Split before the punctuation goes, so that any separator survives (not only ';'); NFKC first, so
    # that a full-width separator splits as well.
    return [normalize_text(part) for part in unicodedata.normalize("NFKC", str(text)).split(separator)]


def label_matrices(predictions: list[str], references: list[str], num_classes: int, separator: str = ";",
                   protocol: str = "official") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Binary indicator matrices (references, predictions) of width num_classes, and the label names.

    The label vocabulary is the set of labels in the references (sorted; column order does not change
    a macro average). Predicted labels outside it are ignored; unused columns stay all-zero.
    """
    reference_labels = [split_labels(r, separator, protocol) for r in references]
    vocabulary = sorted({label for labels in reference_labels for label in labels})
    if len(vocabulary) > num_classes:
        raise ValueError(f"mAP: the references use {len(vocabulary)} distinct labels but num_classes="
                         f"{num_classes}; set metric_args num_classes to at least {len(vocabulary)}")
    index = {label: i for i, label in enumerate(vocabulary)}
    targets = np.zeros((len(references), num_classes), dtype=np.float32)
    scores = np.zeros((len(predictions), num_classes), dtype=np.float32)
    for row, labels in enumerate(reference_labels):
        targets[row, [index[label] for label in labels]] = 1.0
    for row, text in enumerate(predictions):
        hits = [index[label] for label in split_labels(text, separator, protocol) if label in index]
        scores[row, hits] = 1.0
    return targets, scores, vocabulary


def mean_average_precision(predictions: list[str], references: list[str], num_classes: int,
                           separator: str = ";", protocol: str = "official") -> float:
    """Macro average precision (scikit-learn) of binary predictions against binary references.

    Columns no reference uses count as AP 0, as scikit-learn >= 1.9 does for them.
    """
    import warnings

    from sklearn.metrics import average_precision_score

    targets, scores, _ = label_matrices(predictions, references, num_classes, separator, protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No positive class found" for unused columns
        per_class = average_precision_score(targets, scores, average=None)
    per_class = np.nan_to_num(np.atleast_1d(np.asarray(per_class, dtype=np.float64)), nan=0.0)
    return float(per_class.mean())


def average_precision_per_class(predictions: list[str], references: list[str], num_classes: int,
                                separator: str = ";", protocol: str = "official") -> dict[str, float]:
    """AP of each label the references use (for reports)."""
    import warnings

    from sklearn.metrics import average_precision_score

    targets, scores, vocabulary = label_matrices(predictions, references, num_classes, separator, protocol)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for column, label in enumerate(vocabulary):
            out[label] = float(average_precision_score(targets[:, column], scores[:, column]))
    return out


# ---------------------------------------------------------------- the additive forms the bootstrap resamples

def accuracy_statistics(predictions, references, metric_args: dict, protocol: str):
    """Rows [hit, 1]; score = hits / rows."""
    from lalmbench.metrics.spec import mean_rows

    return mean_rows([float(normalize_text(p) == normalize_text(r)) for p, r in zip(predictions, references)])


def map_statistics(predictions, references, metric_args: dict, protocol: str):
    """mAP of binary scores per class, from (TP, predicted positives, positives, rows).

    With scores in {0, 1}, scikit-learn's precision-recall curve has at most two points: threshold 1
    (recall TP/P, precision TP/PP) and threshold 0 (recall 1, precision P/N), so
    AP = (TP/P) * (TP/PP) + (1 - TP/P) * (P/N); a class with no positive is AP 0 (docs/protocol.md).
    """
    from scipy import sparse

    from lalmbench.metrics.spec import ratio

    if "num_classes" not in metric_args:
        from lalmbench.errors import LalmbenchError

        raise LalmbenchError("mAP needs metric_args num_classes (it is in the task's eval config)")
    targets, scores, _ = label_matrices(list(predictions), list(references), int(metric_args["num_classes"]),
                                        separator=metric_args.get("separator", ";"), protocol=protocol)
    classes = targets.shape[1]
    rows = sparse.hstack([sparse.csr_matrix(targets * scores), sparse.csr_matrix(scores),
                          sparse.csr_matrix(targets), sparse.csr_matrix(np.ones((len(targets), 1)))]).tocsr()

    def reduce(totals: np.ndarray) -> np.ndarray:
        hits, predicted = totals[:, :classes], totals[:, classes:2 * classes]
        positives, count = totals[:, 2 * classes:3 * classes], totals[:, 3 * classes:]
        recall_at_one = ratio(hits, positives, 0.0)
        precision_at_one = ratio(hits, predicted, 0.0)
        base_rate = ratio(positives, np.broadcast_to(count, positives.shape), 0.0)
        ap = np.where(positives > 0, recall_at_one * precision_at_one + (1.0 - recall_at_one) * base_rate, 0.0)
        return ap.sum(axis=1) / classes

    return rows, reduce


# ---------------------------------------------------------------- one example's score, for the report

def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_text(prediction) == normalize_text(reference))


def label_jaccard(prediction: str, reference: str) -> float:
    """|predicted labels & reference labels| / |their union| (1 when both are empty)."""
    pred = {p.strip() for p in normalize_text(prediction, keep_label_separator=True).split(";") if p.strip()}
    ref = {r.strip() for r in normalize_text(reference, keep_label_separator=True).split(";") if r.strip()}
    return len(pred & ref) / len(pred | ref) if pred | ref else 1.0
