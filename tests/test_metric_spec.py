"""The metric spec: one registered object per metric that intervals, ranking, compare and the report read.

A user-registered lower-is-better metric (the worked example of docs/metrics.md, run from the doc itself)
is scored, resampled, ranked and compared the right way round, checked against hand-computed values.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lalmbench import metrics
from lalmbench.report import leaderboard
from lalmbench.report.baselines import track_of
from lalmbench.report.confidence import Statistic, TaskAnswers, draw_clip_counts, metric_statistic
from run_dirs import write_run

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Every test registers into its own copy of the registry."""
    monkeypatch.setattr(metrics, "_REGISTRY", dict(metrics._REGISTRY))


def doc_example() -> str:
    """The code block docs/metrics.md marks as run by this test."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- this block is run by tests/test_metric_spec.py -->\n```python\n(.*?)```", text, re.S)
    assert found, "docs/metrics.md lost its worked example"
    return found.group(1)


def register_doc_example() -> dict:
    namespace: dict = {}
    exec(compile(doc_example(), str(DOC), "exec"), namespace)
    return namespace


def test_the_worked_example_is_one_function_and_one_registration():
    code = doc_example()
    assert code.count("\ndef ") == 1 and code.count("metrics.register(") == 1
    register_doc_example()
    spec = metrics.get("LengthGap")
    assert (spec.higher_is_better, spec.track) == (False, "B") and "LengthGap" in metrics.available()
    # (|3 - 4| + |1 - 3|) / 2, as the doc says
    assert metrics.compute("LengthGap", ["a dog barks", "rain"], ["a dog barks loudly", "heavy rain falls"]) == 1.5
    assert track_of("eval_my_task", "LengthGap") == "B"


def test_every_code_block_of_the_doc_runs_in_order():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    # YesF1: "yes" said on rows 1, 2; meant on rows 1, 3: one hit, F1 = 2 * 1 / (2 + 2) = 0.5.
    assert metrics.compute("YesF1", ["Yes", "yes", "no", "no"], ["yes", "no", "YES", "no"]) == 0.5
    assert (metrics.get("YesF1").track, metrics.get("YesF1").statistics) == ("A", None)
    stat = metric_statistic("YesF1", TaskAnswers(["yes", "no"], ["yes", "yes"], ["k1", "k2"]))
    assert type(stat).__name__ == "GenericStatistic" and stat.full() == pytest.approx(2 / 3)


def test_registering_a_taken_name_is_refused_unless_replacing():
    with pytest.raises(ValueError, match="'Accuracy' is already registered.*replace=True"):
        metrics.register("Accuracy", lambda p, r: 0.0)
    assert metrics.compute("Accuracy", ["dog"], ["dog"]) == 1.0  # the built-in is still there
    metrics.register("Accuracy", lambda p, r: 0.25, replace=True)
    assert metrics.compute("Accuracy", ["dog"], ["dog"]) == 0.25
    metrics.register(metrics.MetricSpec("Mine", lambda p, r: 0.5))
    with pytest.raises(ValueError, match="'Mine' is already registered"):
        metrics.register(metrics.per_example("Mine", lambda p, r: 1.0))
    with pytest.raises(ValueError, match="track must be one of A, B"):
        metrics.MetricSpec("Odd", lambda p, r: 0.0, track="C")
    with pytest.raises(KeyError, match="unknown metric 'Nope'"):
        metrics.compute("Nope", ["a"], ["a"])


def test_a_per_example_metric_is_resampled_exactly():
    register_doc_example()
    # gaps 1, 2, 0, 3 on four clips
    predictions, references = ["a b", "a", "x y", "a"], ["a", "a b c", "u v", "a b c d"]
    stat = metric_statistic("LengthGap", TaskAnswers(predictions, references, ["k1", "k2", "k3", "k4"]))
    assert isinstance(stat, Statistic) and stat.full() == pytest.approx(1.5)
    counts = draw_clip_counts(np.random.default_rng(0), 4, 30)
    for row, resampled in zip(counts, stat.scores(counts)):
        taken = np.repeat(np.arange(4), row)
        assert resampled == pytest.approx(metrics.compute("LengthGap", [predictions[i] for i in taken],
                                                          [references[i] for i in taken]))


def test_chance_level_of_a_lower_is_better_metric_is_its_lowest_constant_answer():
    register_doc_example()
    metrics.register("LengthGapChance", metrics.get("LengthGap").compute, higher_is_better=False, chance=True)
    # Constant answers among the references: "a b" gives gaps 0, 0, 1 (mean 1/3), "c" gives 1, 1, 0 (2/3).
    assert metrics.chance_level("LengthGapChance", ["a b", "a b", "c"]) == pytest.approx(1 / 3)
    assert metrics.chance_level("LengthGap", ["a b", "c"]) is None  # no chance level registered


def test_a_lower_is_better_metric_is_ranked_lowest_first(tmp_path):
    register_doc_example()
    # Track B, two tasks. Gap (lower better): raw 0.5, 2.0, 1.0 -> normalized (2 - x) / 1.5 = 1, 0, 2/3.
    # iWER (higher better): raw 0.2, 0.8, 0.5 -> 0, 1, 0.5. Means: A 0.5, B 0.5, C 7/12 -> ranks 2, 2, 1.
    # (Read as higher-is-better the gap would give A 0, B 1, C 1/3 and the ranks 3, 1, 2.)
    def run(name: str, gap_rows, wer_rows):
        return write_run(tmp_path, name, {"my_gap": {"metric": "LengthGap", "rows": gap_rows},
                                          "my_asr": {"metric": "iWER", "rows": wer_rows}})

    def wer_rows(right: int) -> list:  # 10 one-word utterances, `right` of them right: 1 - WER = right / 10
        return [("w" if i < right else "x", "w", f"u{i}") for i in range(10)]

    runs = [run("EncA", [("a", "a b", "c1"), ("a b", "a b", "c2")], wer_rows(2)),   # gaps 1, 0: 0.5
            run("EncB", [("a", "a b c", "c1"), ("a b", "a b c d", "c2")], wer_rows(8)),  # gaps 2, 2: 2.0
            run("EncC", [("a", "a b", "c1"), ("a", "a b", "c2")], wer_rows(5))]  # gaps 1, 1: 1.0
    board = leaderboard.leaderboard_table([str(p) for p in runs], resamples=300)
    index = {entry.name: i for i, entry in enumerate(board.entries)}
    assert board.tracks["B"] == ["my_asr", "my_gap"]
    normalized = {name: board.normalized[i]["my_gap"] for name, i in index.items()}
    assert normalized == pytest.approx({"EncA": 1.0, "EncB": 0.0, "EncC": 2 / 3})
    scores = {name: board.results[i]["B"].score for name, i in index.items()}
    assert scores == pytest.approx({"EncA": 0.5, "EncB": 0.5, "EncC": 7 / 12})
    assert {name: board.results[i]["B"].rank for name, i in index.items()} == {"EncA": 2, "EncB": 2, "EncC": 1}
    assert "Lower raw scores are better on my_gap (LengthGap)" in leaderboard.to_markdown(board)


def test_a_ranked_task_whose_metric_is_not_registered_is_named(tmp_path):
    # A public task (ranked by its name) scored with a metric this process does not know.
    runs = [write_run(tmp_path, name, {"esc-50": {"metric": "Accuracy", "rows": [(answer, "dog", "k")]}})
            for name, answer in (("EncA", "dog"), ("EncB", "cat"))]
    for run in runs:  # the runs say they were scored with "Gone"
        summary = (run / "run_summary.json").read_text().replace('"Accuracy"', '"Gone"')
        (run / "run_summary.json").write_text(summary)
    board = leaderboard.leaderboard_table([str(p) for p in runs])
    assert any("not registered here, ranked as higher-is-better: esc-50 (Gone)" in n for n in board.notes)
    assert [board.results[i]["A"].rank for i in range(2)] == [1, 2]


def test_rank_stability_of_a_lower_is_better_metric_hand_computed(tmp_path):
    register_doc_example()
    # One clip each: every resample repeats the full set, so the ranks (lowest gap first) are always kept.
    runs = [write_run(tmp_path, name, {"my_gap": {"metric": "LengthGap", "rows": [(answer, "a b", "k")]}})
            for name, answer in (("Far", "a b c d"), ("Near", "a b"))]
    board = leaderboard.leaderboard_table([str(p) for p in runs], resamples=100)
    index = {entry.name: i for i, entry in enumerate(board.entries)}
    assert board.results[index["Near"]]["B"].rank == 1 and board.results[index["Far"]]["B"].rank == 2
    assert board.stability[index["Near"]]["B"].kept == 1.0 and board.stability[index["Near"]]["B"].high == 1
    assert board.stability[index["Far"]]["B"].low == 2


def test_compare_counts_a_lower_score_as_better(tmp_path):
    from lalmbench.report.compare import compare_groups
    from lalmbench.report.run_groups import read_group

    register_doc_example()
    # A's gaps 0, 0; B's 0, 2: A is never worse, and better when B's clip c2 is drawn (chance 3/4).
    a = write_run(tmp_path, "EncA", {"my_gap": {"metric": "LengthGap", "rows": [("a", "a", "c1"), ("b", "b", "c2")]}})
    b = write_run(tmp_path, "EncB", {"my_gap": {"metric": "LengthGap", "rows": [("a", "a", "c1"), ("b c d", "b", "c2")]}})
    rows = {row.name: row for row in compare_groups(read_group([a], "A"), read_group([b], "B"), resamples=4000).rows}
    assert (rows["my_gap"].score_a, rows["my_gap"].score_b) == (0.0, 1.0)
    assert rows["my_gap"].a_better == pytest.approx(0.75, abs=0.03)
    assert rows["Track B"].a_better == pytest.approx(0.75, abs=0.03)


def test_report_orders_samples_by_the_spec_example_score():
    from lalmbench.report import html as report_html

    register_doc_example()
    assert report_html.example_score("LengthGap", "a b c", "a") == 2.0
    table = report_html._samples_table("LengthGap", [{"key": "k1", "prediction": "a b c d", "reference": "a"},
                                                     {"key": "k2", "prediction": "a", "reference": "a"}])
    best, worst = table.split("Worst predictions")
    assert best.index("k2") < best.index("k1") and worst.index("k1") < worst.index("k2")
    assert "per-example LengthGap" in table
