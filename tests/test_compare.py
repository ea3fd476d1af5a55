"""`lalmbench compare`: paired bootstrap differences against hand-computed distributions, the refusals, seed
groups, and the command's output, on run directories written with chosen answers (tests/run_dirs.py)."""

from __future__ import annotations

import json

import pytest

from lalmbench.cli import main
from lalmbench.errors import LalmbenchError
from lalmbench.report.compare import compare_groups, format_comparison
from lalmbench.report.run_groups import read_group
from run_dirs import seed_group, write_run


def accuracy_task(right: list[bool], metric: str = "Accuracy", **extra) -> dict:
    rows = [("dog" if ok else "cat", "dog", f"clip{i}") for i, ok in enumerate(right)]
    return {"metric": metric, "rows": rows, **extra}


def compare(a, b, **kwargs):
    return compare_groups(read_group([a], "A"), read_group([b], "B"), **kwargs)


def by_name(comparison) -> dict:
    return {row.name: row for row in comparison.rows}


def test_paired_difference_hand_computed(tmp_path):
    # A is right on both clips, B on clip0 only. A resample draws two clips: B scores 1 ({0, 0}, chance
    # 1/4), 1/2 ({0, 1}, 1/2) or 0 ({1, 1}, 1/4); A always 1. So A - B is 0, 1/2 or 1 and A is ahead in
    # 3/4 of the resamples; the 95% interval runs from 0 to 1.
    a = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True, True])})
    b = write_run(tmp_path, "EncB", {"esc-50": accuracy_task([True, False])})
    row = by_name(compare(a, b, resamples=20_000))["esc-50"]
    assert (row.score_a, row.score_b, row.difference) == (1.0, 0.5, 0.5)
    assert row.a_better == pytest.approx(0.75, abs=0.01)
    assert (row.interval.low, row.interval.high) == (0.0, 1.0)
    assert (row.clips, row.rows) == (2, 2)


def test_pairing_leaves_only_the_clips_that_differ(tmp_path):
    # 40 clips answered alike except clip0 (A right, B wrong): A - B = (times clip0 is drawn) / 40, with the
    # count ~ Binomial(40, 1/40). A is ahead unless clip0 is missed: 1 - (39/40)^40 = 0.6368. The count's
    # 97.5% quantile is 3 (P(<= 2) = 0.920, P(<= 3) = 0.981), so the interval is [0, 3/40].
    answers_a = [i % 2 == 0 for i in range(40)]
    answers_b = [False] + answers_a[1:]
    a = write_run(tmp_path, "EncA", {"esc-50": accuracy_task(answers_a)})
    b = write_run(tmp_path, "EncB", {"esc-50": accuracy_task(answers_b)})
    row = by_name(compare(a, b, resamples=20_000))["esc-50"]
    assert row.difference == pytest.approx(1 / 40)
    assert row.a_better == pytest.approx(1 - (39 / 40) ** 40, abs=0.01)
    assert (row.interval.low, row.interval.high) == (0.0, pytest.approx(3 / 40))


def test_track_means_and_overall(tmp_path):
    # One clip per task, so every resample is the full set: exact differences.
    # esc-50 (Track A): A 1, B 0. gtzan (Track A): A 0, B 0. librispeech (Track B, iWER): A 1, B 1 - 2/2 = 0.
    # Track A: (1 + 0) / 2 - 0 = 0.5; Track B: 1. Overall with weights 1, 1, 2: (1 + 0 + 2) / 4 - 0 = 0.75.
    def tasks(right: bool) -> dict:
        return {"esc-50": accuracy_task([right]), "gtzan": accuracy_task([False]),
                "librispeech": {"metric": "iWER", "rows": [("a b" if right else "", "a b", "u1")], "weight": 2.0}}

    comparison = compare(write_run(tmp_path, "EncA", tasks(True)), write_run(tmp_path, "EncB", tasks(False)),
                         resamples=50)
    rows = by_name(comparison)
    assert list(rows) == ["esc-50", "gtzan", "librispeech", "Track A", "Track B", "Overall"]
    for name, difference, better in [("esc-50", 1.0, 1.0), ("gtzan", 0.0, 0.0), ("librispeech", 1.0, 1.0),
                                     ("Track A", 0.5, 1.0), ("Track B", 1.0, 1.0), ("Overall", 0.75, 1.0)]:
        row = rows[name]
        assert row.difference == pytest.approx(difference)
        assert (row.interval.low, row.interval.high) == (pytest.approx(difference), pytest.approx(difference))
        assert row.a_better == better


def test_answers_only_one_run_has_are_left_out(tmp_path):
    # B lost clip 9 (say, a clip that failed to decode): 9 of A's 10 answers match (90%, the least allowed).
    a = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True] * 10)})
    b_rows = accuracy_task([False] * 9)
    b = write_run(tmp_path, "EncB", {"esc-50": b_rows})
    comparison = compare(a, b, resamples=100)
    row = by_name(comparison)["esc-50"]
    assert (row.rows, row.score_a, row.score_b) == (9, 1.0, 0.0)
    assert any("1 answer(s) outside them are left out" in note for note in comparison.notes)


def test_refuses_different_protocols(tmp_path):
    a = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True])})
    b = write_run(tmp_path, "EncB", {"esc-50": accuracy_task([True])}, protocol="corrected")
    with pytest.raises(LalmbenchError, match=r"different protocols: A \(EncA\) official, B \(EncB\) corrected"):
        compare(a, b)
    old = write_run(tmp_path, "EncC", {"esc-50": accuracy_task([True])}, protocol=None)
    with pytest.raises(LalmbenchError, match="B \\(EncC\\) unrecorded"):
        compare(a, old)


def test_refuses_different_tasks_unless_common_only(tmp_path):
    a = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True]), "gtzan": accuracy_task([True])})
    b = write_run(tmp_path, "EncB", {"esc-50": accuracy_task([False]), "cremad": accuracy_task([True])})
    with pytest.raises(LalmbenchError, match=r"only A \(EncA\) has gtzan; only B \(EncB\) has cremad.*--common-only"):
        compare(a, b)
    assert [row.name for row in compare(a, b, common_only=True, resamples=20).rows] == ["esc-50", "Track A", "Overall"]
    c = write_run(tmp_path, "EncC", {"cremad": accuracy_task([True])})
    with pytest.raises(LalmbenchError, match="share no test set"):
        compare(a, c, common_only=True)


def test_refuses_different_test_set_definitions(tmp_path):
    a = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True])})
    b = write_run(tmp_path, "EncB", {"esc-50": accuracy_task([True], data={"data": ["other/*.tar"], "key": "label"})})
    with pytest.raises(LalmbenchError, match="esc-50: .*EncB and .*EncA differ in data"):
        compare(a, b)
    c = write_run(tmp_path, "EncC", {"esc-50": accuracy_task([True], weight=2.0)})
    with pytest.raises(LalmbenchError, match="differ in weight"):
        compare(a, c)


def test_refuses_test_sets_whose_answers_do_not_match(tmp_path):
    a = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True] * 10)})
    rows = accuracy_task([True] * 10)
    rows["rows"] = [(p, r, f"other{i}") if i < 5 else (p, r, k) for i, (p, r, k) in enumerate(rows["rows"])]
    b = write_run(tmp_path, "EncB", {"esc-50": rows})
    with pytest.raises(LalmbenchError, match="only 5 of the 10 answers of .*EncA are answered by every compared run"):
        compare(a, b)


def test_seed_group_resamples_its_seeds(tmp_path):
    # A: two seeds on one clip, right (seed 42) and wrong (seed 43); B: wrong. Each resample draws A's two
    # seeds with replacement: A scores 1 (chance 1/4), 1/2 (1/2) or 0 (1/4); B 0. A is ahead in 3/4.
    group_dir = tmp_path / "EncA-seeds"
    seeds = [write_run(group_dir, "EncA", {"esc-50": accuracy_task([right])}, seed=seed, directory=f"seed-{seed}")
             for seed, right in ((42, True), (43, False))]
    seed_group(group_dir, seeds)
    b = write_run(tmp_path, "EncB", {"esc-50": accuracy_task([False])})
    comparison = compare_groups(read_group([group_dir], "A"), read_group([b], "B"), resamples=20_000)
    row = by_name(comparison)["esc-50"]
    assert row.score_a == 0.5 and row.spread_a == pytest.approx(2 ** -0.5) and row.spread_b is None
    assert row.a_better == pytest.approx(0.75, abs=0.01)
    assert (row.interval.low, row.interval.high) == (0.0, 1.0)
    text = format_comparison(comparison)
    assert "2 seeds: 42, 43" in text and "0.5000 ±0.7071" in text and "seed noise" in text


def test_group_of_runs_of_different_identities_is_refused(tmp_path):
    first = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True])}, directory="one")
    other = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True])}, directory="two", train={"lora_r": 4})
    same_seed = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True])}, directory="three")
    with pytest.raises(LalmbenchError, match="differ in train.lora_r, not only in the seed"):
        read_group([first, other])
    with pytest.raises(LalmbenchError, match=r"seed\(s\) \[42\] appear in more than one run"):
        read_group([first, same_seed])


def test_command_prints_the_table_and_writes_json(tmp_path, capsys):
    a = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True, True, False, True])})
    b = write_run(tmp_path, "EncB", {"esc-50": accuracy_task([True, False, False, True])})
    out = tmp_path / "compare.json"
    assert main(["compare", str(a), str(b), "--resamples", "300", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("task"))
    assert header.split() == ["task", "metric", "A", "B", "A-B", "95%", "CI", "of", "A-B", "A", "better", "in", "clips"]
    assert "esc-50" in printed and "+0.2500" in printed and "Overall" in printed
    written = json.loads(out.read_text())
    assert written["protocol"] == "official" and written["resamples"] == 300
    assert written["rows"][0]["difference"] == pytest.approx(0.25) and 0 <= written["rows"][0]["a_better_share"] <= 1
    # several runs per side: A's two runs against B; an error exits with status 2 and says why
    a2 = write_run(tmp_path, "EncA", {"esc-50": accuracy_task([True, True, True, True])}, seed=43, directory="EncA2")
    assert main(["compare", str(a), str(a2), "--vs", str(b), "--resamples", "100"]) == 0
    assert "2 seeds: 42, 43" in capsys.readouterr().out
    assert main(["compare", str(a)]) == 2
    assert "compare takes two runs" in capsys.readouterr().err


@pytest.mark.slow
def test_seeds_flag_trains_a_group_that_compare_and_leaderboard_read(tmp_path, demo_suite, capsys):
    import csv

    train_yaml, eval_yaml, _ = demo_suite
    args = {"max_steps": 2, "save_steps": 2, "shuffle_buffer": 8, "sort_buffer": 4, "max_new_tokens": 4, "seed": 7}
    assert main(["run", "lalmbench.encoders.LogMelEncoder", str(train_yaml), str(eval_yaml), "--args", json.dumps(args),
                 "--output-dir", str(tmp_path), "--no-report", "--seeds", "2"]) == 0
    group = tmp_path / "train" / "LogMelEncoder-seeds"
    assert json.loads((group / "seed_group.json").read_text())["runs"] == ["seed-7", "seed-8"]
    for seed in (7, 8):
        identity = json.loads((group / f"seed-{seed}" / "run_identity.json").read_text())["identity"]
        assert identity["train"]["seed"] == seed
    rows = list(csv.DictReader(open(group / "seed_scores.tsv"), delimiter="\t"))
    assert [r["Task"] for r in rows][-1] == "Overall" and all(r["seeds"] == "2" for r in rows)
    assert "mean" in capsys.readouterr().out
    assert main(["compare", str(group), str(group / "seed-7"), "--resamples", "50"]) == 0
    assert "2 seeds: 7, 8" in capsys.readouterr().out
    assert main(["leaderboard", str(tmp_path), "--output-dir", str(tmp_path), "--resamples", "50"]) == 0
    assert "LogMelEncoder (2 seeds)" in capsys.readouterr().out


def _revisions(commit: str) -> dict:
    return {"data_revisions": [{"repo_id": "mispeech/xares_llm_data", "revision": "main", "commits": [commit],
                                "files": 2, "unrecorded_files": 0}]}


def test_states_every_setting_that_differs_and_refuses_another_training_budget(tmp_path, capsys):
    task = {"esc-50": accuracy_task([True, False])}
    long = write_run(tmp_path, "EncA", task, train={"max_steps": 5000, "learning_rate": 1e-4},
                     summary={"evaluation_settings": {"max_new_tokens": 150}, "global_batch_size": 4})
    short = write_run(tmp_path, "EncB", task, train={"max_steps": 300, "learning_rate": 3e-4},
                      summary={"evaluation_settings": {"max_new_tokens": 20}, "global_batch_size": 8})
    with pytest.raises(LalmbenchError, match=r"max_steps \(A 5000, B 300\).*--allow-different-settings"):
        compare(long, short)  # fails on the old code: compared without a word
    text = format_comparison(compare(long, short, allow_different_settings=True))
    assert "compared with --allow-different-settings despite different max_steps" in text
    settings = next(line for line in text.splitlines() if line.startswith("settings that differ"))
    assert settings == ("settings that differ: global batch size: A 4, B 8; learning_rate: A 0.0001, B 0.0003; "
                        "max_new_tokens: A 150, B 20; max_steps: A 5000, B 300")
    # A difference that leaves the comparison meaningful is stated, not refused.
    other_rate = write_run(tmp_path, "EncC", task, train={"max_steps": 5000, "learning_rate": 3e-4},
                           summary={"evaluation_settings": {"max_new_tokens": 150}, "global_batch_size": 4})
    text = format_comparison(compare(long, other_rate))
    assert "settings that differ: learning_rate: A 0.0001, B 0.0003" in text
    assert "--allow-different-settings" not in text
    # The command: refused with status 2 and the reason; allowed with the flag, which the output states.
    assert main(["compare", str(long), str(short), "--resamples", "50"]) == 2
    assert "different max_steps (A 5000, B 300)" in capsys.readouterr().err
    assert main(["compare", str(long), str(short), "--resamples", "50", "--allow-different-settings"]) == 0
    assert "compared with --allow-different-settings" in capsys.readouterr().out


def test_refuses_another_decoder_or_data_revision(tmp_path):
    task = {"esc-50": accuracy_task([True, False])}
    base = write_run(tmp_path, "EncA", task, summary=_revisions("aaaa"))
    other_decoder = write_run(tmp_path, "EncB", task, summary=_revisions("aaaa"),
                              identity={"decoder": {"name": "HuggingFaceTB/SmolLM2-135M", "revision": "c1"}})
    other_data = write_run(tmp_path, "EncC", task, summary=_revisions("bbbb"))
    same = write_run(tmp_path, "EncD", task, summary=_revisions("aaaa"))
    with pytest.raises(LalmbenchError, match=r"decoder \(A tiny-random, B HuggingFaceTB/SmolLM2-135M@c1\)"):
        compare(base, other_decoder)
    with pytest.raises(LalmbenchError, match=r"data revisions \(A mispeech/xares_llm_data@main: aaaa, B "
                                             r"mispeech/xares_llm_data@main: bbbb\)"):
        compare(base, other_data)
    text = format_comparison(compare(base, same))
    assert "settings: the same training and evaluation settings" in text
    # Files whose commit was not recorded (fetched by the published system) may be the same: stated only.
    unknown = write_run(tmp_path, "EncE", task, summary={"data_revisions": [
        {"repo_id": "mispeech/xares_llm_data", "revision": "main", "commits": [], "files": 2, "unrecorded_files": 2}]})
    text = format_comparison(compare(base, unknown))
    assert ("settings that differ: data revisions: A mispeech/xares_llm_data@main: aaaa, B "
            "mispeech/xares_llm_data@main: unrecorded") in text


def test_a_side_set_aside_by_force_is_named_as_such(tmp_path):
    task = {"esc-50": accuracy_task([True, False])}
    current = write_run(tmp_path, "EncA", task)
    old = write_run(tmp_path, "EncA", task, directory="EncA.replaced-20260101-000000")
    text = format_comparison(compare(current, old))
    assert f"note: {old} was set aside by --force (20260101-000000); its replacement is {current}" in text
