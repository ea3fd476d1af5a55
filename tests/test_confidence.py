"""Bootstrap intervals: resampled scores against hand-computed bootstrap distributions, the additive forms
against the metrics themselves, and a run's intervals in scores.tsv, run_summary.json and the table."""

from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest

from lalmbench import metrics
from lalmbench.report import confidence
from lalmbench.report.confidence import (GenericStatistic, Statistic, TaskAnswers, TaskSpec, checked_statistic,
                                         draw_clip_counts, metric_statistic, percentile_interval, resample_scores,
                                         run_intervals, score_interval, task_rng)
from run_dirs import write_run

MANY = 20_000  # resamples for distribution checks: a share's standard error is at most 0.0035


def answers(rows: list[tuple[str, str, str]]) -> TaskAnswers:
    return TaskAnswers([p for p, _, _ in rows], [r for _, r, _ in rows], [k for _, _, k in rows])


def shares(values: np.ndarray) -> dict[float, float]:
    rounded = np.round(values, 9)
    return {float(v): float(np.mean(rounded == v)) for v in np.unique(rounded)}


def test_accuracy_three_clips_hand_computed():
    # Hits 1, 1, 0: a resample's score is k/3 with k ~ Binomial(3, 2/3):
    # P(0) = 1/27, P(1/3) = 6/27, P(2/3) = 12/27, P(1) = 8/27.
    stat = metric_statistic("Accuracy", answers([("a", "a", "k1"), ("b", "b", "k2"), ("c", "x", "k3")]))
    interval, values = score_interval(stat, "t", resamples=MANY)
    expected = {0.0: 1 / 27, round(1 / 3, 9): 6 / 27, round(2 / 3, 9): 12 / 27, 1.0: 8 / 27}
    assert shares(values) == pytest.approx(expected, abs=0.012)
    # 2.5%: P(0) = 0.037 > 0.025, so the lower bound is 0; 97.5%: P(< 1) = 19/27 = 0.70, so the upper is 1.
    assert (interval.low, interval.high) == (0.0, 1.0)
    assert interval.covers(stat.full()) and stat.full() == pytest.approx(2 / 3)


def test_single_example_interval_is_the_score():
    for metric, rows, score in [("Accuracy", [("dog", "Dog", "k")], 1.0),
                                ("iWER", [("a x c", "a b c", "k")], 2 / 3),
                                ("Accuracy", [("dog", "dog", "k"), ("dog", "cat", "k"), ("x", "dog", "k")], 1 / 3)]:
        stat = metric_statistic(metric, answers(rows))
        interval, values = score_interval(stat, "t", resamples=200)
        assert stat.clips == 1  # caption copies of one clip are one clip
        assert interval.low == pytest.approx(score) and interval.high == pytest.approx(score)
        assert np.allclose(values, score)


def test_interval_covers_the_full_set_score():
    # 400 clips, 300 hits: normal approximation 0.75 +- 1.96 * sqrt(0.75 * 0.25 / 400) = 0.75 +- 0.0424.
    rows = [("yes" if i < 300 else "no", "yes", f"clip{i}") for i in range(400)]
    stat = metric_statistic("Accuracy", answers(rows))
    interval, _ = score_interval(stat, "t", resamples=4000)
    assert interval.covers(0.75)
    assert interval.low == pytest.approx(0.75 - 0.0424, abs=0.008)
    assert interval.high == pytest.approx(0.75 + 0.0424, abs=0.008)


def test_caption_copies_of_a_clip_are_drawn_together():
    # Clip a has three rows, all right; clip b one row, wrong. Resampling two clips gives {a, a}: 1,
    # {a, b}: 3 of 4 rows right, {b, b}: 0, with chances 1/4, 1/2, 1/4 (rows drawn alone would give more values).
    rows = [("x", "x", "a"), ("y", "y", "a"), ("z", "z", "a"), ("w", "v", "b")]
    _, values = score_interval(metric_statistic("Accuracy", answers(rows)), "t", resamples=MANY)
    assert shares(values) == pytest.approx({0.0: 0.25, 0.75: 0.5, 1.0: 0.25}, abs=0.012)


def test_iwer_is_recomputed_at_corpus_level_in_every_resample():
    # Utterance 1: 4 words, none wrong. Utterance 2: 2 words, both deleted. Corpus WER of {1, 2} is 2/6,
    # so iWER 2/3 (a mean of per-utterance scores would give 1/2); {1, 1}: 1; {2, 2}: 1 - 4/4 = 0.
    rows = [("a b c d", "a b c d", "u1"), ("", "x y", "u2")]
    stat = metric_statistic("iWER", answers(rows))
    assert stat.full() == pytest.approx(metrics.compute("iWER", ["a b c d", ""], ["a b c d", "x y"]))
    assert stat.full() == pytest.approx(2 / 3)
    _, values = score_interval(stat, "t", resamples=MANY)
    assert shares(values) == pytest.approx({0.0: 0.25, round(2 / 3, 9): 0.5, 1.0: 0.25}, abs=0.012)


@pytest.mark.parametrize("protocol", ["official", "corrected"])
def test_error_rates_match_the_metric_with_empty_references(protocol):
    rows = [("do re mi", "do re mi fa", "1"), ("sol", "", "2"), ("la la", "la", "3"), ("", "", "4"),
            ("ti do", "re, mi!", "5")]
    for metric in ("iWER", "iCER"):
        stat = metric_statistic(metric, answers(rows), protocol=protocol)
        expected = metrics.compute(metric, [p for p, _, _ in rows], [r for _, r, _ in rows], protocol=protocol)
        assert stat.full() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("protocol", ["official", "corrected"])
def test_map_closed_form_matches_scikit_learn_on_resamples(protocol):
    rng = np.random.default_rng(3)
    labels = ["Dog", "bark", "Rain, heavy", "car horn", "rare-bird"]
    weights = np.array([0.3, 0.3, 0.2, 0.18, 0.02])  # rare-bird falls out of many resamples (AP 0 there)
    references = ["; ".join(rng.choice(labels, size=rng.integers(1, 3), replace=False, p=weights)) for _ in range(40)]
    predictions = [r if rng.random() < 0.5 else ";".join(rng.choice(labels, size=rng.integers(0, 3), replace=False))
                   for r in references]
    rows = list(zip(predictions, references, [str(i) for i in range(40)]))
    args = {"num_classes": 12}
    stat = metric_statistic("mAP", answers(rows), args, protocol)
    assert isinstance(stat, Statistic)
    assert stat.full() == pytest.approx(metrics.compute("mAP", predictions, references, protocol=protocol, **args),
                                        abs=1e-12)
    counts = draw_clip_counts(np.random.default_rng(0), 40, 25)
    for row, resampled in zip(counts, stat.scores(counts)):
        taken = np.repeat(np.arange(40), row)
        expected = metrics.compute("mAP", [predictions[i] for i in taken], [references[i] for i in taken],
                                   protocol=protocol, **args)
        assert resampled == pytest.approx(expected, abs=1e-12)


def test_a_metric_without_an_additive_form_is_recomputed(monkeypatch):
    monkeypatch.setitem(metrics._REGISTRY, "SameFirstWord", metrics.MetricSpec(
        "SameFirstWord", lambda p, r: sum(a.split()[:1] == b.split()[:1] for a, b in zip(p, r)) / len(r)))
    rows = [(f"w{i % 3} x", f"w{i % 2} y", f"c{i // 2}") for i in range(30)]  # 15 clips of 2 rows
    generic = metric_statistic("SameFirstWord", answers(rows))
    assert isinstance(generic, GenericStatistic)
    # Same first word == same label here, so the metric equals Accuracy on the first words.
    exact = metric_statistic("Accuracy", answers([(p.split()[0], r.split()[0], k) for p, r, k in rows]))
    counts = draw_clip_counts(np.random.default_rng(1), 15, 50)
    assert np.allclose(generic.scores(counts), exact.scores(counts))
    _, values = score_interval(generic, "t", resamples=5000)
    assert len(values) == confidence.GENERIC_RESAMPLES  # kept small: each resample calls the metric


def test_a_form_that_disagrees_with_the_recorded_score_falls_back(caplog):
    rows = [("a", "a", "1"), ("b", "c", "2")]
    assert isinstance(checked_statistic("Accuracy", answers(rows), {}, "official", 0.5), Statistic)
    fallback = checked_statistic("Accuracy", answers(rows), {}, "official", 0.25)
    assert isinstance(fallback, GenericStatistic) and "recompute the metric" in caplog.text


def test_draws_are_seeded_per_task():
    counts = draw_clip_counts(np.random.default_rng(0), 7, 100)
    assert counts.shape == (100, 7) and (counts.sum(axis=1) == 7).all()
    stat = metric_statistic("Accuracy", answers([("a", "a" if i % 3 else "b", str(i)) for i in range(60)]))
    first, again = score_interval(stat, "eval_esc-50")[1], score_interval(stat, "esc-50")[1]
    assert np.array_equal(first, again)  # eval_esc-50 and esc-50 are one task
    assert not np.array_equal(first, score_interval(stat, "gtzan")[1])
    assert not np.array_equal(first, score_interval(stat, "esc-50", seed=1)[1])
    both = resample_scores([stat, stat], stat.clips, 30, task_rng(0, "x"))
    assert np.array_equal(both[0], both[1])  # paired: every statistic sees the same draws


def test_percentile_interval_ignores_unscorable_resamples():
    assert percentile_interval(np.array([np.nan, 1.0, 1.0])).high == 1.0
    assert math.isnan(percentile_interval(np.array([np.nan])).low)


def test_run_intervals_single_examples_and_overall(tmp_path):
    # Two one-example tasks: every resample repeats the full set, so the intervals are the scores and
    # the Overall interval is the weighted mean (1 * 1 + 3 * 0) / 4 = 0.25.
    run = write_run(tmp_path, "Enc", {"right": {"metric": "Accuracy", "rows": [("a", "a", "k")]},
                                      "wrong": {"metric": "Accuracy", "rows": [("a", "b", "k")], "weight": 3.0}})
    result = run_intervals(run, [TaskSpec("right", "Accuracy", 1.0), TaskSpec("wrong", "Accuracy", 0.0, 3.0)])
    assert (result.tasks["right"].interval.low, result.tasks["right"].interval.high) == (1.0, 1.0)
    assert (result.tasks["wrong"].interval.low, result.tasks["wrong"].interval.high) == (0.0, 0.0)
    assert (result.overall.low, result.overall.high) == (0.25, 0.25)
    summary = result.summary()
    assert summary["tasks"]["right"]["clips"] == 1 and summary["overall"] == {"ci_low": 0.25, "ci_high": 0.25}


def test_run_intervals_note_a_task_without_answers(tmp_path):
    run = write_run(tmp_path, "Enc", {"tones": {"metric": "Accuracy", "rows": [("a", "a", "1"), ("a", "b", "2")]}})
    result = run_intervals(run, [TaskSpec("tones", "Accuracy", 0.5), TaskSpec("gone", "Accuracy", 0.3)])
    assert result.tasks["tones"].interval is not None
    assert result.tasks["gone"].interval is None and "predictions_gone.csv" in result.tasks["gone"].note
    assert result.overall is None  # an Overall interval needs every task's


def test_cost_on_a_ten_thousand_example_test_set(capsys):
    rng = np.random.default_rng(0)
    labels = [f"label {i}" for i in range(200)]
    references = list(rng.choice(labels, 10_000))
    rows = [(r if rng.random() < 0.6 else str(rng.choice(labels)), r, str(i)) for i, r in enumerate(references)]
    started = time.perf_counter()
    stat = metric_statistic("Accuracy", answers(rows))
    interval, values = score_interval(stat, "cost")
    seconds = time.perf_counter() - started
    print(f"Accuracy, 10,000 clips, {len(values)} resamples: {seconds:.2f} s, interval {interval}")
    assert seconds < 5.0 and interval.covers(stat.full()) and interval.high - interval.low < 0.03


@pytest.mark.slow
def test_cost_of_every_metric_on_ten_thousand_examples(capsys):
    """The figure quoted in docs/confidence.md: seconds to build and resample each metric (1,000 resamples)."""
    rng = np.random.default_rng(0)
    n = 10_000
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, rng.integers(3, 15))) for _ in range(n)]
    noisy = [" ".join(w if rng.random() < 0.8 else str(rng.choice(words)) for w in t.split()) for t in texts]
    labels = [f"label {i}" for i in range(200)]
    multi = [";".join(rng.choice(labels, rng.integers(1, 4), replace=False)) for _ in range(n)]
    guessed = [";".join(m.split(";")[:1] + list(rng.choice(labels, rng.integers(0, 2)))) for m in multi]
    single = list(rng.choice(labels, n))
    cases = [("Accuracy", [(r if rng.random() < 0.6 else "x", r) for r in single], {}),
             ("iWER", list(zip(noisy, texts)), {}), ("iCER", list(zip(noisy, texts)), {}),
             ("mAP", list(zip(guessed, multi)), {"num_classes": 200})]
    for metric, pairs, args in cases:
        rows = [(p, r, str(i)) for i, (p, r) in enumerate(pairs)]
        started = time.perf_counter()
        stat = metric_statistic(metric, answers(rows), args)
        built = time.perf_counter()
        interval, _ = score_interval(stat, metric)
        done = time.perf_counter()
        with capsys.disabled():
            print(f"\n{metric}: 10,000 clips, build {built - started:.2f} s + 1,000 resamples "
                  f"{done - built:.2f} s, score {stat.full():.4f}, interval {interval}")
        assert done - started < 10.0


def test_fense_intervals_from_kept_item_scores(tmp_path):
    pytest.importorskip("mecat")
    pytest.importorskip("sentence_transformers")
    from test_captions import _build_echecker, _build_sbert

    _build_sbert(tmp_path / "sbert")
    _build_echecker(tmp_path / "clean" / "echecker.ckpt", error_logit=-20.0)
    models = {"sbert_model": str(tmp_path / "sbert"), "echecker_model": str(tmp_path / "clean" / "echecker.ckpt")}
    # Per item: 3 / sqrt(3 * 4) = 0.866025 and 1.0 (test_captions.py); clip c1 has two captions.
    rows = [("a dog barks", "a dog barks loudly", "c1"), ("rain falls", "rain falls", "c1"),
            ("bird sings", "bird sings", "c2")]
    run = write_run(tmp_path / "runs", "Enc", {"clotho": {"metric": "FENSE", "rows": rows, "metric_args": models}})
    score = json.loads((run / "run_summary.json").read_text())["tasks"]["clotho"]["score"]
    assert score == pytest.approx((0.866025 + 1 + 1) / 3, abs=1e-4)
    result = run_intervals(run, [TaskSpec("clotho", "FENSE", score, 1.0, models)])
    interval = result.tasks["clotho"].interval
    # Two clips: c1 (two items, sum 1.866025) and c2 (1.0): resamples {c1, c1} 0.933013, {c1, c2}
    # 0.955342, {c2, c2} 1.0; the central 95% spans from the lowest to the highest.
    assert interval.low == pytest.approx(0.933013, abs=1e-5) and interval.high == pytest.approx(1.0)
    kept = json.loads((run / "scores" / "clotho.items.json").read_text())
    assert kept["scores"] == pytest.approx([0.866025, 1.0, 1.0], abs=1e-5)
    # Later readers (compare, leaderboard) use the kept scores, without the models.
    again = confidence.caption_item_scores(run, "clotho", "FENSE", confidence.read_answers(run, "clotho"), {},
                                           compute=False)
    assert again == kept["scores"]


def test_runner_writes_intervals(tmp_path, demo_suite, capsys):
    from lalmbench.cli import main

    train_yaml, eval_yaml, _ = demo_suite
    args = {"max_steps": 2, "save_steps": 2, "shuffle_buffer": 8, "sort_buffer": 4, "max_new_tokens": 4}
    code = main(["run", "lalmbench.encoders.LogMelEncoder", str(train_yaml), str(eval_yaml), "--args", json.dumps(args),
                 "--output-dir", str(tmp_path), "--no-report"])
    assert code == 0
    run = tmp_path / "train" / "LogMelEncoder"
    rows = list(csv.DictReader(open(run / "scores.tsv"), delimiter="\t"))
    assert list(rows[0]) == ["Task", "score", "weight", "ci_low", "ci_high"]
    for row in rows:
        assert float(row["ci_low"]) <= float(row["ci_high"])
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["confidence"]["resamples"] == 1000
    assert summary["confidence"]["overall"]["ci_low"] <= summary["overall"] <= summary["confidence"]["overall"]["ci_high"]
    for name, task in summary["tasks"].items():
        assert task["clips"] == task["num_examples"] and task["ci_low"] <= task["ci_high"]
    table = capsys.readouterr().out
    assert "95% CI" in table and f"[{float(rows[-1]['ci_low']):.4f}, " in table


def test_report_shows_the_intervals(tmp_path):
    from lalmbench.report.html import write_report

    run = write_run(tmp_path, "Enc", {"tones": {"metric": "Accuracy", "rows": [("a", "a", "1"), ("a", "b", "2")]}})
    result = run_intervals(run, [TaskSpec("tones", "Accuracy", 0.5)])
    summary = json.loads((run / "run_summary.json").read_text())
    summary["tasks"]["tones"].update(result.tasks["tones"].as_dict())
    summary["confidence"] = result.summary()
    (run / "run_summary.json").write_text(json.dumps(summary))
    page = write_report(run).read_text()
    # Two clips, one right: resamples score 0, 1/2 or 1, so the interval is 0 to 1 (task and Overall).
    assert "95% interval" in page and page.count("0.0000 – 1.0000") == 2
