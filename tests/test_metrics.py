"""Metric values computed by hand, through the public entry point lalmbench.metrics.compute."""

import pytest

from lalmbench import metrics
from lalmbench.metrics import normalize_text


def test_normalization_rules():
    # NFKC folds the full-width letters, lower case, '-' -> space, punctuation dropped, spaces collapsed.
    assert normalize_text("  Ｈｅｌｌｏ,   World-Wide!  ") == "hello world wide"
    assert normalize_text("dog;Cat", keep_label_separator=True) == "dog;cat"
    assert normalize_text("dog;Cat") == "dogcat"


def test_accuracy_exact_match_after_normalization():
    # 2 of 3 match: "Dog!" == "dog", "cat" != "cow", "Bird" == "bird."
    assert metrics.compute("Accuracy", ["Dog!", "cat", "Bird"], ["dog", "cow", "bird."]) == pytest.approx(2 / 3)


def test_map_by_hand():
    # References: {dog}, {cat, bird}. Vocabulary {bird, cat, dog} in 4 columns (one unused: AP 0).
    # bird: targets [0,1], scores [0,0] -> AP 0.5; cat: targets [0,1], scores [1,1] -> 0.5;
    # dog: targets [1,0], scores [1,0] -> 1.0; unused column -> 0.  Mean = 2.0 / 4 = 0.5.
    value = metrics.compute("mAP", ["dog;cat", "cat"], ["dog", "cat;bird"], num_classes=4)
    assert value == pytest.approx(0.5)


def test_map_perfect_and_label_outside_vocabulary_ignored():
    # Every reference label predicted, plus an unknown label "zebra" that is ignored: AP 1 for both
    # used columns; num_classes 2 leaves no unused column.
    assert metrics.compute("mAP", ["a;zebra", "b"], ["a", "b"], num_classes=2) == pytest.approx(1.0)


def test_map_needs_enough_classes():
    with pytest.raises(ValueError, match="num_classes"):
        metrics.compute("mAP", ["a"], ["a;b;c"], num_classes=2)


def test_iwer_corpus_level():
    # Corpus WER: ref words 3 + 2 = 5; errors: 1 substitution (c->d) + 1 deletion (f) = 2 -> WER 0.4.
    assert metrics.compute("iWER", ["a b d", "e"], ["A b c", "e f"]) == pytest.approx(0.6)


def test_iwer_is_clamped_at_zero():
    # 1 reference word, 3 insertions + 1 substitution -> WER 4 -> iWER max(0, -3) = 0.
    assert metrics.compute("iWER", ["w x y z"], ["a"]) == 0.0


def test_icer_counts_characters():
    # "你好世界" vs "你好世间": 1 substitution in 4 characters -> CER 0.25.
    assert metrics.compute("iCER", ["你好世间"], ["你好世界"]) == pytest.approx(0.75)


def test_unknown_metric_and_length_mismatch():
    with pytest.raises(KeyError, match="available"):
        metrics.compute("BLEU", ["a"], ["a"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metrics.compute("Accuracy", ["a", "b"], ["a"])


def test_registry_lists_all_protocol_metrics():
    assert {"Accuracy", "mAP", "iWER", "iCER", "FENSE", "DATE"} <= set(metrics.available())
