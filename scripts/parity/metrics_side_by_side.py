"""Metric code on the same strings: items 6 (mAP parsing), 9 (empty references) and 10 (reference round
trip) of docs/fidelity.md, under protocol official.

    python scripts/parity/metrics_side_by_side.py

Published side: xares_llm.metrics' Accuracy, mAP, iWER and iCER called as its trainer calls them, with the
token decoding step replaced by one that hands over the given strings (so only normalization and scoring
are compared). lalmbench side: `lalmbench.metrics.compute(name, predictions, references, protocol=...)`.
Target: |diff| <= 1e-9 on every suite and probe under official; corrected is printed for contrast.

Item 10 is a property of evaluation, not of a metric: the published system scores against
decode(tokenize(reference)).strip(). The round trip is printed here for a few texts; whether lalmbench
scores the same strings is measured on whole evaluations in generate_side_by_side.py.
"""

from __future__ import annotations

import warnings

import numpy as np

from kit import Tally, published_tokenizer, tiny_decoder

warnings.filterwarnings("ignore")
TOLERANCE = 1e-9

SUITES = {
    "Accuracy": dict(
        predictions=["Dog", "dog.", "", "  dog   barking ", "dog-barking", "Ｄｏｇ", "dogs", "3", "three", "Happy!", "cat",
                     "genuine", "3.0", "Male speech, man speaking", "spoof"],
        references=["dog", "dog", "dog", "dog barking", "dog barking", "dog", "dog's", "3", "3", "happy", "dog",
                    "Genuine", "3", "male speech man speaking", "True"]),
    "mAP": dict(
        num_classes=8,
        predictions=["Bark;Dog", "bark; dog", "Dog;Bark", "", "Cat,Meow", "Male speech man speaking", "male_speech;speech",
                     "Walk, footsteps;Dog", "Meow;Cat;Bark", "dog;dog", "Speech", "Bark"],
        references=["Bark;Dog", "Bark;Dog", "Bark", "Dog", "Cat;Meow", "Male speech, man speaking", "Male_speech;Speech",
                    "Walk, footsteps", "Cat;Meow", "Dog", "Speech;Male speech, man speaking", "Bark;Dog"]),
    "iWER": dict(
        predictions=["HELLO WORLD", "hello world and more", "", "the cat sat on the mat.", "one two three",
                     "it's a dog-eat-dog world", "a b c d e f g"],
        references=["hello world.", "hello world", "some words here", "The cat sat on the mat", "1 2 3",
                    "ITS A DOG EAT DOG WORLD", "a b"]),
    "iCER": dict(
        predictions=["你好世界", "你好，世界。", "", "今天天气很好", "abc", "一二三", "ＡＢＣ１２３"],
        references=["你好世界", "你好世界", "北京欢迎你", "今天天气不错", "ABC", "123", "abc123"]),
}

MAP_PROBES = [("bark; dog", "Bark;Dog"), ("Male speech man speaking", "Male speech, man speaking"),
              ("male_speech", "Male_speech"), ("Bark ;Dog", "Bark;Dog"), ("dog", "Dog")]

ROUND_TRIP_TEXTS = [" dog ", "Dog;Bark", "it 's a test .", "你好，世界。", "don't  stop", "a\tb\nc", "Ｆｕｌｌ",
                    "<|im_end|> x", "café naïve"]


class GivenStrings:
    """Stands in for the published TokenDecoder: returns the given strings instead of decoding tokens."""

    def __init__(self, predictions, references):
        self.predictions, self.references = predictions, references

    def decode_predictions(self, _):
        return list(self.predictions), list(self.references)


def published(name: str, predictions, references, **kwargs) -> float:
    from xares_llm.metrics import get_metric

    metric = get_metric(name, tokenizer=None, **kwargs)
    metric.tokendecoder = GivenStrings(predictions, references)
    return float(list(metric(None).values())[0])


def ours(name: str, predictions, references, protocol: str = "official", **kwargs) -> float:
    from lalmbench import metrics

    return metrics.compute(name, predictions, references, protocol=protocol, **kwargs)


def main() -> None:
    tally = Tally("metrics on identical strings (protocol official)")
    for name, case in SUITES.items():
        kwargs = {k: v for k, v in case.items() if k not in ("predictions", "references")}
        reference = published(name, case["predictions"], case["references"], **kwargs)
        tally.compare(f"{name} suite ({len(case['references'])} pairs)", reference,
                      ours(name, case["predictions"], case["references"], **kwargs), TOLERANCE)
        print(f"    contrast, corrected: {ours(name, case['predictions'], case['references'], 'corrected', **kwargs):.6f}")

    for prediction, reference_text in MAP_PROBES:  # one pair plus a filler, num_classes 4
        predictions, references = [prediction, "zzz"], [reference_text, "Other"]
        tally.compare(f"mAP probe {prediction!r} vs {reference_text!r}", published("mAP", predictions, references, num_classes=4),
                      ours("mAP", predictions, references, num_classes=4), TOLERANCE)
    predictions, references = ["a", "b", "a;b", ""], ["a", "b", "a;b", "a"]
    for classes in (2, 5):
        tally.compare(f"mAP with unused columns (2 labels, num_classes {classes})",
                      published("mAP", predictions, references, num_classes=classes),
                      ours("mAP", predictions, references, num_classes=classes), TOLERANCE)

    for name in ("iWER", "iCER", "Accuracy"):
        predictions, references = ["hello", "x"], ["hello", ""]
        reference = published(name, predictions, references)
        tally.compare(f"{name} with an empty reference", reference, ours(name, predictions, references), TOLERANCE)
        print(f"    contrast, corrected: {ours(name, predictions, references, 'corrected')}")

    # the published scoring reference: decode(tokenize(text)).strip() through its TokenDecoder
    from transformers import EvalPrediction
    from xares_llm.metrics import TokenDecoder

    tokenizer = published_tokenizer(tiny_decoder())
    ids = [tokenizer(text)["input_ids"] for text in ROUND_TRIP_TEXTS]
    labels = np.full((len(ids), max(map(len, ids))), -100)
    for row, row_ids in enumerate(ids):
        labels[row, : len(row_ids)] = row_ids
    _, decoded = TokenDecoder(tokenizer).decode_predictions(
        EvalPrediction(predictions=np.zeros((len(ids), 1), dtype=int), label_ids=labels))
    print("\nreferences as the published system scores them (decode(tokenize(text)).strip()):")
    for text, scored in zip(ROUND_TRIP_TEXTS, decoded):
        verdict = "same" if text == scored else ("same after strip" if text.strip() == scored else "DIFFERENT")
        print(f"  {text!r:22s} -> {scored!r:22s} {verdict}")
    tally.finish()


if __name__ == "__main__":
    main()
