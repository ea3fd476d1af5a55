"""A run that reuses an earlier training (a rerun, a `--limit` look) keeps what that training measured:
run_summary.json carries the training's own seconds, steps and steps per second from
training_complete.json, and the evaluations' own seconds from the cached scores; this command's figures
go under `this_run`, and every reuse is recorded beside them (when, which training identity)."""

from __future__ import annotations

import json

import pytest

from run_helpers import FAST, finished_tiny_run, run_inprocess


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    root, train_yaml, eval_yaml, first = finished_tiny_run(tmp_path_factory.mktemp("reuse"))
    summary = json.loads((first.run_dir / "run_summary.json").read_text())
    return root, train_yaml, eval_yaml, first, summary


def _summary(directory):
    return json.loads((directory / "run_summary.json").read_text())


def test_the_training_run_records_its_own_figures(trained_once):
    _, _, _, first, summary = trained_once
    record = json.loads((first.run_dir / "training_complete.json").read_text())
    assert record["train_seconds"] > 0 and record["finished"]
    assert summary["train_seconds"] == record["train_seconds"]
    assert summary["steps"] == 6 and summary["train_steps_per_second"] == pytest.approx(6 / record["train_seconds"])
    assert summary["trained_at"] == record["finished"]
    assert summary["reused_training"] is False and summary["reuses"] == []
    assert summary["this_run"]["train_seconds"] == record["train_seconds"]
    assert summary["this_run"]["steps"] == 6
    scored = json.loads((first.run_dir / "scores" / "eval_tones.json").read_text())
    assert summary["eval_seconds"] == pytest.approx(scored["seconds"])


def test_a_rerun_keeps_the_training_figures_and_records_the_reuse(trained_once):
    root, train_yaml, eval_yaml, first, before = trained_once
    again = run_inprocess(train_yaml, eval_yaml, root / "out")
    assert again.reused_training and again.run_dir == first.run_dir
    after = _summary(first.run_dir)
    for name in ("train_seconds", "train_steps_per_second", "steps", "trained_at", "eval_seconds"):
        assert after[name] == before[name], name  # fails on the old code: train_seconds 0.0
    assert after["this_run"]["train_seconds"] == 0.0 and after["this_run"]["steps"] == 0
    assert after["reused_training"] is True
    [reuse] = after["reuses"]
    assert reuse["training_identity"] == before["identity"]
    assert reuse["scores_reused"] == ["eval_tones"] and reuse["when"]
    # A second rerun adds a second record and keeps the first.
    run_inprocess(train_yaml, eval_yaml, root / "out")
    later = _summary(first.run_dir)
    assert later["reuses"][0] == reuse and len(later["reuses"]) == 2
    assert later["train_seconds"] == before["train_seconds"]

    from lalmbench.report.html import write_report

    page = write_report(first.run_dir).read_text()
    assert f"{before['train_seconds']:.1f} s" in page  # the training's time, not "0 s"
    assert "reused 2 times" in page and before["trained_at"] in page


def test_a_limit_run_on_a_reused_training_keeps_the_training_figures(trained_once):
    from lalmbench.runner import run

    root, train_yaml, eval_yaml, first, before = trained_once
    result = run("lalmbench.encoders.LogMelEncoder", str(train_yaml), str(eval_yaml), {}, FAST, root / "out",
                 allow_download=False, write_report=False, show_progress=False, limit=2)
    assert result.reused_training and result.results_dir == first.run_dir / "limit-2"
    partial = _summary(result.results_dir)
    assert partial["train_seconds"] == before["train_seconds"]  # fails on the old code: 0.0
    assert partial["train_steps_per_second"] == before["train_steps_per_second"]
    [reuse] = partial["reuses"]
    assert reuse["training_identity"] == before["identity"] and reuse["scores_reused"] == []
    assert _summary(first.run_dir)["train_seconds"] == before["train_seconds"]  # the full run's summary untouched
