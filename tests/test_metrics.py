"""Metric values through the public entry point lalmbench.metrics.compute.

Values are either computed by hand (the comments show how) or, where marked "published", produced by the
published system's own metric classes (XARES-LLM 0.0.12, scikit-learn 1.7.2, jiwer 4.0.0) on the same
strings; the kit cases are those of the parity kit's exp_a_metrics.py. Under the default protocol
(`official`) lalmbench must give the published number; `corrected` differs where noted.
"""

import pytest

from lalmbench import metrics
from lalmbench.metrics import normalize_text


def test_normalization_rules():
    # NFKC folds the full-width letters, lower case, '-' -> space, punctuation dropped, spaces collapsed.
    assert normalize_text("  Ｈｅｌｌｏ,   World-Wide!  ") == "hello world wide"
    assert normalize_text("dog;Cat", keep_label_separator=True) == "dog;cat"
    assert normalize_text("dog;Cat") == "dogcat"
    # The published mAP normalization: the same, but every punctuation mark stays.
    assert normalize_text(" Male  speech, Man-Speaking; Dog ", remove_punctuation=False) == "male speech, man speaking; dog"


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


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="unknown protocol 'published'"):
        metrics.compute("Accuracy", ["a"], ["a"], protocol="published")


# -- the parity kit's cases (exp_a_metrics.py), published values ---------------------------------------------------

KIT_CASES = {
    "Accuracy": (dict(), 0.6666666666666666,
                 ["Dog", "dog.", "", "  dog   barking ", "dog-barking", "Ｄｏｇ", "dogs", "3", "three", "Happy!", "cat",
                  "genuine", "3.0", "Male speech, man speaking", "spoof"],
                 ["dog", "dog", "dog", "dog barking", "dog barking", "dog", "dog's", "3", "3", "happy", "dog", "Genuine",
                  "3", "male speech man speaking", "True"]),
    "mAP": (dict(num_classes=8), 0.6979166666666667,
            ["Bark;Dog", "bark; dog", "Dog;Bark", "", "Cat,Meow", "Male speech man speaking", "male_speech;speech",
             "Walk, footsteps;Dog", "Meow;Cat;Bark", "dog;dog", "Speech", "Bark"],
            ["Bark;Dog", "Bark;Dog", "Bark", "Dog", "Cat;Meow", "Male speech, man speaking", "Male_speech;Speech",
             "Walk, footsteps", "Cat;Meow", "Dog", "Speech;Male speech, man speaking", "Bark;Dog"]),
    "iWER": (dict(), 0.45833333333333337,
             ["HELLO WORLD", "hello world and more", "", "the cat sat on the mat.", "one two three",
              "it's a dog-eat-dog world", "a b c d e f g"],
             ["hello world.", "hello world", "some words here", "The cat sat on the mat", "1 2 3",
              "ITS A DOG EAT DOG WORLD", "a b"]),
    "iCER": (dict(), 0.6451612903225806,
             ["你好世界", "你好，世界。", "", "今天天气很好", "abc", "一二三", "ＡＢＣ１２３"],
             ["你好世界", "你好世界", "北京欢迎你", "今天天气不错", "ABC", "123", "abc123"]),
}


@pytest.mark.parametrize("name", sorted(KIT_CASES))
def test_kit_cases_give_the_published_values(name):
    kwargs, published, predictions, references = KIT_CASES[name]
    assert metrics.compute(name, predictions, references, **kwargs) == pytest.approx(published, abs=1e-12)
    assert metrics.compute(name, predictions, references, protocol="official", **kwargs) == pytest.approx(
        published, abs=1e-12)


def test_kit_map_case_under_corrected():
    # corrected reads "bark; dog", "Male speech man speaking", "Walk, footsteps" and "Cat,Meow" as the
    # references' labels; its value is the one lalmbench gave before the protocol existed (FIDELITY.md #6).
    kwargs, _, predictions, references = KIT_CASES["mAP"]
    value = metrics.compute("mAP", predictions, references, protocol="corrected", **kwargs)
    assert value == pytest.approx(0.759583, abs=5e-7)


@pytest.mark.parametrize("prediction, reference, published, corrected", [
    # Hand-checked (official, first row): references {bark, dog} and {other}, 3 labels in 4 columns. The
    # prediction "bark; dog" holds "bark" and " dog", and " dog" is no label: bark AP 1, dog AP 0.5 (never
    # predicted: precision 1/2 at full recall), other AP 0.5, unused column 0 -> 2/4. corrected finds dog
    # too: (1 + 1 + 0.5 + 0) / 4.
    ("bark; dog", "Bark;Dog", 0.5, 0.625),
    ("Male speech man speaking", "Male speech, man speaking", 0.25, 0.375),  # the comma is part of the label
    ("male_speech", "Male_speech", 0.375, 0.375),
    ("Bark ;Dog", "Bark;Dog", 0.5, 0.625),  # "bark " is not "bark"
    ("dog", "Dog", 0.375, 0.375),
])
def test_kit_map_probes(prediction, reference, published, corrected):
    predictions, references = [prediction, "zzz"], [reference, "Other"]
    assert metrics.compute("mAP", predictions, references, num_classes=4) == pytest.approx(published)
    assert metrics.compute("mAP", predictions, references, num_classes=4, protocol="corrected") == pytest.approx(corrected)


@pytest.mark.parametrize("protocol", ["official", "corrected"])
def test_map_unused_columns_count_as_zero(protocol):
    # Published 0.9583 / 0.3833. a: targets [1,0,1,1], scores [1,0,1,0] -> precision 1 up to recall 2/3,
    # then 3/4 up to recall 1: AP 2/3 + 1/3 * 3/4 = 11/12; b: predicted exactly -> 1. Mean 23/24; with
    # 5 columns the 3 unused ones count 0: (11/12 + 1) / 5 = 23/60.
    predictions, references = ["a", "b", "a;b", ""], ["a", "b", "a;b", "a"]
    assert metrics.compute("mAP", predictions, references, num_classes=2, protocol=protocol) == pytest.approx(23 / 24)
    assert metrics.compute("mAP", predictions, references, num_classes=5, protocol=protocol) == pytest.approx(23 / 60)


def test_empty_reference_kept_under_official_dropped_under_corrected():
    # Published: iWER 0 and iCER 0.8. The empty reference adds no length and its "x" is one insertion:
    # WER = 1 insertion / 1 reference word = 1 -> iWER 0; CER = 1 / 5 characters ("hello") -> iCER 0.8.
    predictions, references = ["hello", "x"], ["hello", ""]
    assert metrics.compute("iWER", predictions, references) == 0.0
    assert metrics.compute("iCER", predictions, references) == pytest.approx(0.8)
    assert metrics.compute("iWER", predictions, references, protocol="corrected") == 1.0
    assert metrics.compute("iCER", predictions, references, protocol="corrected") == 1.0
    assert metrics.compute("Accuracy", predictions, references) == 0.5  # no protocol difference


# -- more published values (XARES-LLM 0.0.12's metric classes on these strings) -----------------------------------

@pytest.mark.parametrize("name, predictions, references, kwargs, published, corrected", [
    # All predictions empty: every column's AP is its share of positives (2/3 each); 6 columns: 2 * 2/3 / 6.
    ("mAP", ["", "", ""], ["a", "b", "a;b"], dict(num_classes=2), 2 / 3, 2 / 3),
    ("mAP", ["", "", ""], ["a", "b", "a;b"], dict(num_classes=6), 2 / 9, 2 / 9),
    # One label per clip. dog: targets [1,0,0], scores [1,0,1] -> precision 1/2 at recall 1: AP 1/2;
    # cat: targets [0,1,1], scores [0,1,0] -> 1/2 * 1 + 1/2 * 2/3 = 5/6; unused column 0: (1/2 + 5/6) / 3.
    ("mAP", ["dog", "cat", "dog"], ["dog", "cat", "cat"], dict(num_classes=3), 4 / 9, 4 / 9),
    ("mAP", ["dog", "cat", "dog", "cat"], ["dog"] * 4, dict(num_classes=1), 1.0, 1.0),  # one class, all positive
    ("mAP", ["a;", "b", "a"], ["a;", "b", "a"], dict(num_classes=3), 1.0, 1.0),  # "a;" holds the label ""
    # official labels: speech, male and "speech, male" (comma kept); "speech; male" predicts speech only.
    # speech: targets [1,1,0], scores [0,1,1] -> 1/2 * 1/2 + 1/2 * 2/3 = 7/12; male: [1,1,0] vs [0,0,1] ->
    # 2/3; "speech, male": [0,0,1] vs [1,0,0] -> 1/3. Mean 19/36. corrected reads "speech, male" as
    # speech + male.
    ("mAP", ["Speech, male", "speech; male", "Speech;Male"], ["Speech;Male", "Speech;Male", "Speech, male"],
     dict(num_classes=3), 19 / 36, 0.5),
    ("mAP", ["a | b", "a"], ["a|b", "a|b"], dict(num_classes=2, separator="|"), 1.0, 1.0),
    ("iWER", ["", ""], ["hello world", "foo"], {}, 0.0, 0.0),  # all predictions empty: 3 deletions of 3
    ("iWER", ["", ""], ["", ""], {}, 1.0, None),  # nothing to say, nothing said: WER 0
    ("iWER", ["hello", "..."], ["hello", "!!!"], {}, 1.0, 1.0),  # empty only after normalization
    ("iWER", ["one two", "x y z"], ["one two three", ""], {}, 0.0, 2 / 3),  # 1 deletion + 3 insertions of 3
    ("iCER", ["你好", "好"], ["你好", "。"], {}, 2 / 3, 2 / 3),  # "。" is no ASCII punctuation: 1 of 3 wrong
    ("iCER", ["", ""], ["你好", "世界"], {}, 0.0, 0.0),
])
def test_more_published_values(name, predictions, references, kwargs, published, corrected):
    assert metrics.compute(name, predictions, references, **kwargs) == pytest.approx(published)
    if corrected is None:
        with pytest.raises(ValueError, match="every reference is empty"):
            metrics.compute(name, predictions, references, protocol="corrected", **kwargs)
    else:
        assert metrics.compute(name, predictions, references, protocol="corrected", **kwargs) == pytest.approx(corrected)


@pytest.mark.parametrize("name", ["iWER", "iCER"])
def test_all_references_empty_official_rate_is_the_insertion_count(name):
    # jiwer 4.0.0 with no reference words returns the number of insertions (3 words / 4 characters) as the
    # rate, so the published score is 0; corrected has nothing to score and says so.
    assert metrics.compute(name, ["a b", "c"], ["", ""]) == 0.0
    with pytest.raises(ValueError, match="every reference is empty"):
        metrics.compute(name, ["a b", "c"], ["", ""], protocol="corrected")
