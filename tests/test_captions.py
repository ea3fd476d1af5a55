"""FENSE and DATE through the real mecat code path, with tiny stand-in models built here (no hub access).

The stand-in Sentence-BERT is a BERT with no transformer layers, zero position/type embeddings and
mean pooling, so a sentence embedding is the mean of LayerNorm(word vector) over its tokens. Every
word vector is +1/-1 on its own pair of dimensions (zero mean, so LayerNorm only rescales it), which
makes distinct words orthogonal and of equal length; [CLS]/[SEP]/[PAD] are zero vectors. Hence the
cosine of two sentences is |shared words| / sqrt(|words a| * |words b|), and scores can be computed by
hand. Token ids follow bert-base-uncased ([PAD]=0, [CLS]=101, [SEP]=102), which mecat hard-codes.
The stand-in error checker is a checkpoint in the FENSE format whose classifier outputs a constant
"error" logit: -20 (never an error) or +20 (always an error, score times 1 - 0.9).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

pytest.importorskip("mecat")
pytest.importorskip("sentence_transformers")
torch = pytest.importorskip("torch")

from lalmbench import metrics  # noqa: E402
from lalmbench.errors import LalmbenchError  # noqa: E402
from lalmbench.metrics import captions  # noqa: E402

WORDS = ["a", "dog", "barks", "loudly", "car", "passes", "by", "rain", "falls", "on", "roof", "bird",
         "sings", "music", "plays", "softly", "people", "talk", "the", "in"]
FIRST_WORD_ID = 104


def _build_bert(path: Path) -> "torch.nn.Module":
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = [f"[unused{i}]" for i in range(FIRST_WORD_ID + len(WORDS))]
    vocab[0], vocab[100], vocab[101], vocab[102], vocab[103] = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
    vocab[FIRST_WORD_ID:] = WORDS
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=2 * len(vocab), num_hidden_layers=0,
                        num_attention_heads=1, intermediate_size=4, max_position_embeddings=512,
                        hidden_dropout_prob=0.0)
    model = BertModel(config)
    with torch.no_grad():
        embeddings = model.embeddings
        embeddings.word_embeddings.weight.zero_()
        for token_id in range(FIRST_WORD_ID, len(vocab)):
            embeddings.word_embeddings.weight[token_id, 2 * token_id] = 1.0
            embeddings.word_embeddings.weight[token_id, 2 * token_id + 1] = -1.0
        embeddings.position_embeddings.weight.zero_()
        embeddings.token_type_embeddings.weight.zero_()
        embeddings.LayerNorm.weight.fill_(1.0)
        embeddings.LayerNorm.bias.zero_()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def _build_sbert(path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # module paths moved between sentence-transformers versions
        from sentence_transformers.models import Pooling, Transformer
    backbone = path.with_name(path.name + "-backbone")
    _build_bert(backbone)
    transformer = Transformer(str(backbone))
    pooling = Pooling(transformer.auto_model.config.hidden_size, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(path))


def _build_echecker(path: Path, error_logit: float) -> None:
    backbone = path.parent / (path.stem + "-backbone")
    model = _build_bert(backbone)
    state = {f"encoder.{name}": value for name, value in model.state_dict().items()}
    state["clf.weight"] = torch.zeros(5, model.config.hidden_size)
    state["clf.bias"] = torch.tensor([0.0, 0.0, 0.0, 0.0, error_logit])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_type": str(backbone), "num_classes": 5, "state_dict": state}, path)


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("caption-models")
    _build_sbert(root / "sbert")
    _build_echecker(root / "clean" / "echecker.ckpt", error_logit=-20.0)
    _build_echecker(root / "fense_data" / captions.ECHECKER_FILE, error_logit=20.0)
    return {"sbert": str(root / "sbert"), "clean": str(root / "clean" / "echecker.ckpt"),
            "always_error_dir": str(root / "fense_data")}


def test_fense_calls_mecat_as_the_protocol_says(standins, monkeypatch):
    import mecat

    calls = []
    original = mecat.evaluate

    def spy(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(mecat, "evaluate", spy)
    # After normalization both sides are "a dog barks": cosine 1, no error penalty.
    score = captions.fense(["A dog -- barks!"], ["a Dog, barks."], sbert_model=standins["sbert"],
                           echecker_model=standins["clean"])
    assert score == pytest.approx(1.0, abs=1e-4)
    assert calls == [{"predicted_data": [["a dog barks"]], "reference_data": [["a dog barks"]],
                      "task": "caption", "metrics": "fense", "subtask": "long"}]


def test_normalization_changes_the_score(standins):
    # normalize_text("a dog's") == "a dogs": {a, [UNK]} against {a, dog}, and [UNK] is a zero vector,
    # so cosine = 1 / sqrt(1 * 2) = 0.707107 (the raw text would tokenize to "dog ' s" and score 1).
    score = captions.fense(["a dog's"], ["a dog"], sbert_model=standins["sbert"],
                           echecker_model=standins["clean"])
    assert score == pytest.approx(0.7071, abs=1e-4)


def test_fense_hand_computed(standins):
    # Item 1: {a, dog, barks} vs {a, dog, barks, loudly}: 3 / sqrt(3 * 4) = 0.866025
    # Item 2: {rain, falls} vs {rain, falls}: 1.0. Mean 0.933013; mecat rounds to 4 places.
    score = captions.fense(["a dog barks", "rain falls"], ["a dog barks loudly", "rain falls"],
                           sbert_model=standins["sbert"], echecker_model=standins["clean"])
    assert score == pytest.approx(0.9330, abs=1e-4)


def test_fense_error_checker_penalty(standins):
    # The stand-in checker flags every caption: similarity 1 times (1 - penalty 0.9) = 0.1.
    score = captions.fense(["a dog barks", "rain falls"], ["a dog barks", "rain falls"],
                           sbert_model=standins["sbert"], echecker_model=standins["always_error_dir"])
    assert score == pytest.approx(0.1, abs=1e-4)


def test_date_hand_computed(standins):
    # Four captions with disjoint words, each predicted exactly: similarity 1 for each.
    # Discrimination rank = 1 - (#refs within delta/2 of the self-similarity) / n = 1 - 1/4 = 0.75
    # (the other references are orthogonal, similarity 0). DATE = 2 * 1 * 0.75 / 1.75 = 0.857143.
    texts = ["a dog barks", "rain falls on roof", "bird sings", "music plays softly"]
    score = captions.date(texts, texts, sbert_model=standins["sbert"], echecker_model=standins["clean"])
    assert score == pytest.approx(0.8571, abs=1e-4)


def test_date_of_answers_with_no_words_is_zero(standins):
    # Found by the dress rehearsal (scripts/rehearsal): a decoder that answers only punctuation leaves every
    # normalized prediction empty, and mecat's DATE then stops with a TypeError (no token to weigh) after
    # the whole training run. Nothing described scores 0 (its similarity to any reference is 0), per item too.
    predictions, references = ["...", "!!", ""], ["a dog barks", "rain falls", "bird sings"]
    kwargs = {"sbert_model": standins["sbert"], "echecker_model": standins["clean"]}
    assert captions.date(predictions, references, **kwargs) == 0.0
    assert captions.caption_item_scores("DATE", predictions, references, **kwargs) == [0.0, 0.0, 0.0]


def test_registry_uses_environment_variables(standins, monkeypatch):
    monkeypatch.setenv(captions.SBERT_ENV, standins["sbert"])
    monkeypatch.setenv(captions.ECHECKER_ENV, standins["clean"])
    monkeypatch.setenv("FENSE_DATA", "/nonexistent/fense-data")
    threads = torch.get_num_threads()
    # Predictions swapped: orthogonal captions, similarity 0.
    score = metrics.compute("FENSE", ["rain falls", "a dog barks"], ["a dog barks", "rain falls"])
    assert score == pytest.approx(0.0, abs=1e-4)
    assert os.environ["FENSE_DATA"] == "/nonexistent/fense-data"  # restored after the call
    assert torch.get_num_threads() == threads  # mecat's import-time set_num_threads(1) is undone


def test_default_echecker_location_is_fense_data(standins, monkeypatch):
    monkeypatch.delenv(captions.ECHECKER_ENV, raising=False)
    monkeypatch.setenv("FENSE_DATA", standins["always_error_dir"])
    located = captions.locate_caption_models(sbert_model=standins["sbert"])
    assert located.echecker_checkpoint == Path(standins["always_error_dir"]) / captions.ECHECKER_FILE
    assert Path(located.echecker_backbone).is_dir()


def test_preflight_ignores_other_metrics(monkeypatch):
    monkeypatch.setenv(captions.SBERT_ENV, "/nonexistent/sbert")
    captions.caption_models_preflight(["Accuracy", "mAP", "iWER"])  # nothing to check, no error


def test_preflight_names_every_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "empty-st-cache"))
    monkeypatch.setenv(captions.SBERT_ENV, "nobody/not-a-cached-model")
    monkeypatch.setenv(captions.ECHECKER_ENV, str(tmp_path / "missing.ckpt"))
    with pytest.raises(LalmbenchError) as caught:
        captions.caption_models_preflight(["Accuracy", "FENSE"])
    message = str(caught.value)
    assert "nobody/not-a-cached-model" in message and str(tmp_path / "missing.ckpt") in message
    assert captions.ECHECKER_URL in message and "hf download" in message


def test_preflight_rejects_a_checkpoint_that_is_not_fense(tmp_path, standins):
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    with pytest.raises(captions.CaptionModelsError, match="not a FENSE checkpoint"):
        captions.caption_models_preflight(["DATE"], sbert_model=standins["sbert"], echecker_model=str(bogus))


def test_preflight_passes_with_standins(standins):
    captions.caption_models_preflight(["DATE"], sbert_model=standins["sbert"], echecker_model=standins["clean"])
