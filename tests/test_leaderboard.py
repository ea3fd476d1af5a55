"""Leaderboard: per-task min-max normalization, track means and ranks, checked against hand-computed values."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from lalmbench.errors import LalmbenchError
from lalmbench.report import leaderboard
from lalmbench.report.baselines import PUBLISHED_BASELINES, TRACK_A_TASKS, TRACK_B_TASKS, task_key, track_of
from run_dirs import seed_group, write_run

METRICS = {"esc-50": "Accuracy", "gtzan": "Accuracy", "clotho": "FENSE", "librispeech": "iWER",
           "synth_tones": "Accuracy", "mystery": "BLEU"}


def make_run(root: Path, encoder: str, scores: dict[str, float], train_config: str = "task1",
             completed: bool = True, summary: bool = True, protocol: str = "official", limit: int | None = None,
             directory: str | None = None) -> Path:
    run_dir = root / train_config / (directory or encoder)
    run_dir.mkdir(parents=True)
    rows = ["Task\tscore\tweight"] + [f"eval_{task}\t{value}\t1" for task, value in scores.items()]
    overall = sum(scores.values()) / len(scores)
    rows.append(f"Overall\t{overall}\t{len(scores)}")
    (run_dir / "scores.tsv").write_text("\n".join(rows) + "\n")
    if summary:
        tasks = {f"eval_{task}": {"metric": METRICS.get(task, "Accuracy"), "metric_args": {}, "score": value,
                                  "weight": 1, "num_examples": 10} for task, value in scores.items()}
        (run_dir / "run_summary.json").write_text(json.dumps(
            {"encoder_name": encoder, "train_config": train_config, "tasks": tasks, "overall": overall,
             "protocol": protocol, "partial": None if limit is None else {"limit": limit}}))
    if completed:
        (run_dir / "COMPLETED").write_text("{}")
    return run_dir


@pytest.fixture
def three_runs(tmp_path):
    return [make_run(tmp_path, "EncA", {"esc-50": 0.80, "gtzan": 0.50, "clotho": 0.20}),
            make_run(tmp_path, "EncB", {"esc-50": 0.60, "gtzan": 0.70, "clotho": 0.30}),
            make_run(tmp_path, "EncC", {"esc-50": 0.40, "gtzan": 0.60, "clotho": 0.30})]


def _by_name(board):
    return {entry.name: i for i, entry in enumerate(board.entries)}


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every markdown table row, padding stripped (tabulate aligns the columns)."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("|")]


# Track A of `three_runs` (test_hand_computed_ranking): EncB's row, its task cells "normalized (raw)".
ENC_B_ROW = ["1", "EncB", "0.750", "2/2", "0.500 (0.600)", "1.000 (0.700)"]


def test_hand_computed_ranking(three_runs):
    board = leaderboard.leaderboard_table([str(p) for p in three_runs])
    index = _by_name(board)
    # esc-50: min 0.40, max 0.80 -> A (0.80-0.40)/0.40 = 1, B 0.20/0.40 = 0.5, C 0
    # gtzan:  min 0.50, max 0.70 -> A 0, B 1, C 0.10/0.20 = 0.5
    # clotho: min 0.20, max 0.30 -> A 0, B 1, C 1
    expected = {"EncA": {"esc-50": 1.0, "gtzan": 0.0, "clotho": 0.0},
                "EncB": {"esc-50": 0.5, "gtzan": 1.0, "clotho": 1.0},
                "EncC": {"esc-50": 0.0, "gtzan": 0.5, "clotho": 1.0}}
    for name, tasks in expected.items():
        assert board.normalized[index[name]] == pytest.approx(tasks)
    assert board.tracks == {"A": ["esc-50", "gtzan"], "B": ["clotho"]}
    # Track A means: A (1+0)/2 = 0.5, B (0.5+1)/2 = 0.75, C (0+0.5)/2 = 0.25 -> B 1st, A 2nd, C 3rd.
    track_a = {name: board.results[i]["A"] for name, i in index.items()}
    assert {n: r.score for n, r in track_a.items()} == pytest.approx({"EncA": 0.5, "EncB": 0.75, "EncC": 0.25})
    assert {n: r.rank for n, r in track_a.items()} == {"EncB": 1, "EncA": 2, "EncC": 3}
    # Track B: B and C tie at 1.0 and share rank 1; A (0.0) is 3rd.
    assert {n: board.results[i]["B"].rank for n, i in index.items()} == {"EncB": 1, "EncC": 1, "EncA": 3}
    assert [board.entries[i].name for i in board.ranked("A")] == ["EncB", "EncA", "EncC"]


def test_all_runs_tie_gives_one(tmp_path):
    runs = [make_run(tmp_path, name, {"esc-50": 0.5}) for name in ("EncA", "EncB")]
    board = leaderboard.leaderboard_table([str(p) for p in runs])
    assert [n["esc-50"] for n in board.normalized] == [leaderboard.TIE_SCORE, leaderboard.TIE_SCORE] == [1.0, 1.0]
    assert [r["A"].rank for r in board.results] == [1, 1]


def test_runs_scored_on_other_tasks_get_a_board_of_their_own(three_runs, tmp_path):
    other = make_run(tmp_path, "EncD", {"esc-50": 0.80, "clotho": 0.25})
    found = leaderboard.leaderboard_tables([str(p) for p in three_runs] + [str(other)])
    assert [board.title for board in found.boards] == ["3 tasks: clotho, esc-50, gtzan", "2 tasks: clotho, esc-50"]
    first, second = found.boards
    assert [e.name for e in first.entries] == ["EncA", "EncB", "EncC"] and [e.name for e in second.entries] == ["EncD"]
    # The three runs are ranked as without EncD (test_hand_computed_ranking); EncD alone ties with itself.
    assert [first.results[i]["A"].rank for i in range(3)] == [2, 1, 3]
    assert second.results[0]["A"].rank == 1 and second.normalized[0] == {"esc-50": 1.0, "clotho": 1.0}
    assert "2 different sets of tasks" in found.notes[0]
    markdown = leaderboard.set_to_markdown(found)
    assert "## Board 1: scored on 3 tasks: clotho, esc-50, gtzan" in markdown
    assert "## Board 2: scored on 2 tasks: clotho, esc-50" in markdown and "### Track A" in markdown
    rows = list(csv.DictReader(io.StringIO(leaderboard.set_to_csv(found))))
    assert [(row["board"], row["encoder"], row["track_A_rank"]) for row in rows] == [
        ("3 tasks: clotho, esc-50, gtzan", "EncB", "1"), ("3 tasks: clotho, esc-50, gtzan", "EncA", "2"),
        ("3 tasks: clotho, esc-50, gtzan", "EncC", "3"), ("2 tasks: clotho, esc-50", "EncD", "1")]
    assert rows[3]["gtzan_raw"] == "" and rows[3]["esc-50_normalized"] == "1.000000"
    with pytest.raises(LalmbenchError, match="need separate boards"):
        leaderboard.leaderboard_table([str(p) for p in three_runs] + [str(other)])


def test_build_leaderboard_flags_an_entry_missing_a_task(three_runs, tmp_path):
    # The library function still takes entries of different tasks (the command never gives it any).
    partial = make_run(tmp_path, "EncD", {"esc-50": 0.80, "clotho": 0.25})
    board = leaderboard.build_leaderboard([leaderboard.read_run(p) for p in three_runs + [partial]])
    index = _by_name(board)
    result = board.results[index["EncD"]]["A"]
    # esc-50 is still normalized over 0.40..0.80: EncD 1.0; it has no gtzan, so its Track A mean is 1.0.
    assert result.score == pytest.approx(1.0) and result.missing == ["gtzan"] and result.tasks_present == 1
    assert result.rank == 1
    markdown = leaderboard.to_markdown(board)
    assert "EncD *" in markdown and "missing" in markdown and "Track A misses gtzan" in markdown


def test_baselines_stand_beside_runs_of_their_suite_only(tmp_path):
    # Mine has Dasheng's published task1 scores, except esc-50: 0.695, halfway between Whisper (0.635)
    # and Dasheng (0.755).
    task1 = {task: PUBLISHED_BASELINES["Dasheng-base"][task] for task in TRACK_A_TASKS}
    mine = make_run(tmp_path, "Mine", {**task1, "esc-50": 0.695})
    synthetic = make_run(tmp_path, "Synth", {"synth_tones": 0.99, "mystery": 0.9}, train_config="demo")
    quick = make_run(tmp_path, "Quick", task1, limit=5, directory="Quick/limit-5")
    found = leaderboard.leaderboard_tables([str(tmp_path)], baselines=True)
    by_title = {board.title: board for board in found.boards}
    assert set(by_title) == {"suite task1 (15 tasks)", "2 tasks: mystery, synth_tones",
                             "suite task1 (15 tasks); partial, first 5 test examples per task (--limit 5)"}
    board = by_title["suite task1 (15 tasks)"]
    index = _by_name(board)
    assert set(index) == {"Mine", "Dasheng-base (published)", "Whisper-base (published)"}
    # Beside a task1 run the baselines keep their task1 scores only: no Track B.
    assert board.tracks == {"A": sorted(TRACK_A_TASKS), "B": []}
    assert board.normalized[index["Mine"]]["esc-50"] == pytest.approx(0.5)
    # Dasheng beats Whisper on 6 of the 15 tasks (cremad, esc-50, fluentspeechcommands, nsynth,
    # urbansound8k, voxceleb1): Dasheng 6/15 = 0.4, Whisper 9/15 = 0.6, Mine 5.5/15.
    scores = {name: board.results[i]["A"].score for name, i in index.items()}
    assert scores == pytest.approx({"Whisper-base (published)": 0.6, "Dasheng-base (published)": 0.4,
                                    "Mine": 5.5 / 15})
    assert [board.entries[i].name for i in board.ranked("A")] == ["Whisper-base (published)",
                                                                  "Dasheng-base (published)", "Mine"]
    # A synthetic run and a partial evaluation are never ranked beside the baselines, even when better.
    for title in ("2 tasks: mystery, synth_tones",
                  "suite task1 (15 tasks); partial, first 5 test examples per task (--limit 5)"):
        assert [e.name for e in by_title[title].entries] == ["Synth" if "synth" in title else "Quick"]
        assert title in found.notes[1]
    assert "not beside runs scored on" in found.notes[1]
    assert "partial evaluation: first 5 test examples per task (--limit 5)" in by_title[
        "suite task1 (15 tasks); partial, first 5 test examples per task (--limit 5)"].entries[0].notes


def test_baseline_data_matches_protocol():
    assert PUBLISHED_BASELINES["Dasheng-base"]["voxceleb1"] == 0.974
    assert PUBLISHED_BASELINES["Whisper-base"]["mecat"] == 0.624
    for scores in PUBLISHED_BASELINES.values():
        assert set(scores) == set(TRACK_A_TASKS) | set(TRACK_B_TASKS)
    assert task_key("eval_ESC-50") == task_key("esc-50") == "esc-50"
    assert track_of("eval_clotho") == "B" and track_of("eval_synth", "mAP") == "A" and track_of("x", "BLEU") is None


def test_tracks_for_custom_tasks_follow_the_metric(tmp_path):
    runs = [make_run(tmp_path, "EncA", {"synth_tones": 0.9, "mystery": 0.1}),
            make_run(tmp_path, "EncB", {"synth_tones": 0.3, "mystery": 0.2})]
    board = leaderboard.leaderboard_table([str(p) for p in runs])
    assert board.tracks["A"] == ["synth_tones"] and board.other_tasks == ["mystery"]
    assert "Tasks in no track" in leaderboard.to_markdown(board)


def test_names_from_summary_or_directory_and_disambiguated(tmp_path):
    first = make_run(tmp_path, "Enc", {"esc-50": 0.5}, train_config="task1")
    second = make_run(tmp_path, "Enc", {"esc-50": 0.6}, train_config="esc50_only")
    bare = make_run(tmp_path, "dir_named", {"esc-50": 0.7}, summary=False)  # no protocol recorded
    board = leaderboard.leaderboard_table([str(first), str(second), str(bare)], mixed_protocols=True)
    names = [entry.name for entry in board.entries]
    assert names[2] == "dir_named"
    assert names[0] != names[1] and names[0].startswith("Enc [") and str(first) in names[0]


def test_unfinished_runs_are_skipped_with_a_note(tmp_path):
    done = make_run(tmp_path, "Done", {"esc-50": 0.5})
    stopped = make_run(tmp_path, "Stopped", {"esc-50": 0.9}, completed=False)  # scores.tsv, no COMPLETED
    training = tmp_path / "task1" / "Training"  # started: identity and checkpoints, nothing scored yet
    (training / "checkpoint-200").mkdir(parents=True)
    (training / "run_identity.json").write_text("{}")
    quick = make_run(tmp_path, "Quick", {"esc-50": 0.7}, limit=3, directory="Quick/limit-3")
    (quick.parent / "run_identity.json").write_text("{}")  # trained, only evaluated with --limit 3
    group = tmp_path / "task1" / "Enc-seeds"
    seeds = [make_run(group, "Enc", {"esc-50": 0.6}, train_config=".", directory=f"seed-{s}",
                      completed=s == 42) for s in (42, 43)]
    (group / "seed_group.json").write_text(json.dumps({"runs": [seed.name for seed in seeds]}))
    # As a shell glob passes them (task1/*) and as a parent directory: the same runs are skipped.
    for paths in ([str(p) for p in sorted((tmp_path / "task1").iterdir())], [str(tmp_path / "task1")]):
        found = leaderboard.leaderboard_tables(paths)
        # Quick/limit-3 is ranked only when named, as the note on Quick says (the old code ranked it from the
        # parent directory while telling the user to pass it).
        assert [[e.name for e in board.entries] for board in found.boards] == [["Done"]]
        assert sorted(found.skipped) == sorted([
            f"{stopped}: no COMPLETED marker (the run stopped before it finished)",
            f"{training}: no scores.tsv (training or evaluation not finished)",
            f"{quick.parent}: no scores.tsv (training or evaluation not finished); it holds the partial "
            "evaluation(s) limit-3: pass that directory to rank it",
            f"seed group {group}: seed-43: no COMPLETED marker (the run stopped before it finished)"])
    assert "Skipped, not finished:" in leaderboard.set_to_markdown(found)
    assert done in [Path(e.source) for e in found.boards[0].entries]
    with pytest.raises(LalmbenchError, match="no finished run to rank; skipped:\n  .*Stopped"):
        leaderboard.leaderboard_tables([str(stopped)])


def test_command_prints_and_writes_files_only_into_output_dir(three_runs, tmp_path, capsys, monkeypatch):
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    assert leaderboard.leaderboard_command([str(tmp_path / "task1")], baselines=False, resamples=0) == 0
    captured = capsys.readouterr()
    assert ENC_B_ROW in table_rows(captured.out) and "--output-dir" in captured.err
    assert list(here.iterdir()) == []  # nothing written unasked


def test_command_writes_csv_and_markdown(three_runs, tmp_path, capsys):
    out = tmp_path / "board"
    # A parent directory stands for every run below it.
    assert leaderboard.leaderboard_command([str(tmp_path / "task1")], baselines=False, output_dir=str(out)) == 0
    printed = capsys.readouterr().out
    assert "Track A" in printed and "EncB" in printed
    rows = list(csv.DictReader(open(out / "leaderboard.csv")))
    assert [row["encoder"] for row in rows] == ["EncB", "EncA", "EncC"]
    assert {row["board"] for row in rows} == {"3 tasks: clotho, esc-50, gtzan"}
    assert rows[0]["track_A_rank"] == "1" and float(rows[0]["track_A_score"]) == pytest.approx(0.75)
    assert float(rows[1]["esc-50_raw"]) == 0.8 and float(rows[2]["gtzan_normalized"]) == pytest.approx(0.5)
    markdown = (out / "leaderboard.md").read_text()
    assert markdown.startswith("# Leaderboard") and ENC_B_ROW in table_rows(markdown)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(LalmbenchError, match="nothing does not exist"):
        leaderboard.leaderboard_table([str(tmp_path / "nothing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LalmbenchError, match="empty is not a run directory"):
        leaderboard.leaderboard_table([str(tmp_path / "empty")])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scores.tsv").write_text("a,b\n1,2\n")
    (bad / "COMPLETED").write_text("{}")
    with pytest.raises(LalmbenchError, match="not a lalmbench scores file"):
        leaderboard.leaderboard_table([str(bad)])
    with pytest.raises(LalmbenchError, match="no runs"):
        leaderboard.build_leaderboard([])


def test_runs_of_different_protocols_are_not_ranked_together(tmp_path):
    official = make_run(tmp_path, "EncA", {"esc-50": 0.8})
    corrected = make_run(tmp_path, "EncB", {"esc-50": 0.6}, protocol="corrected")
    with pytest.raises(LalmbenchError,
                       match=r"different protocols \(corrected: EncB; official: EncA\).*--mixed-protocols"):
        leaderboard.leaderboard_table([str(official), str(corrected)])
    task1 = make_run(tmp_path, "EncT", {task: 0.5 for task in TRACK_A_TASKS}, protocol="corrected")
    with pytest.raises(LalmbenchError, match="published baselines are official"):
        leaderboard.leaderboard_table([str(task1)], baselines=True)
    board = leaderboard.leaderboard_table([str(official), str(corrected)], mixed_protocols=True)
    assert [r["A"].rank for r in board.results] == [1, 2]
    assert "Protocols are mixed" in leaderboard.to_markdown(board)
    protocols = [row["protocol"] for row in csv.DictReader(io.StringIO(leaderboard.to_csv(board)))]
    assert protocols == ["official", "corrected"]


def _classification(right: int, total: int, offset: int = 0) -> list[tuple[str, str, str]]:
    """`total` one-row clips, the first `right` answered right."""
    return [("dog" if i < right else "cat", "dog", f"clip{i + offset}") for i in range(total)]


def test_rank_stability_hand_computed(tmp_path):
    # One task of one clip each: every resample repeats the full set, so every rank is kept in 100%.
    one = {"esc-50": {"metric": "Accuracy", "rows": [("dog", "dog", "k")]}}
    other = {"esc-50": {"metric": "Accuracy", "rows": [("cat", "dog", "k")]}}
    runs = [write_run(tmp_path, "EncA", one), write_run(tmp_path, "EncB", other)]
    board = leaderboard.leaderboard_table([str(p) for p in runs], resamples=200)
    assert [(s["A"].kept, s["A"].low, s["A"].high) for s in board.stability] == [(1.0, 1, 1), (1.0, 2, 2)]


def test_rank_stability_of_close_and_distant_runs(tmp_path):
    # Two runs on the same 40 clips, answering identically except on clip 0 (A right, B wrong): A is
    # ahead in a resample exactly when clip 0 is drawn, which has chance 1 - (39/40)^40 = 0.6368; when it
    # is not drawn they tie and share rank 1, so A keeps rank 1 always and B keeps rank 2 in 63.7%.
    rows_a = _classification(20, 40)
    rows_b = [("cat", "dog", "clip0")] + rows_a[1:]
    far = [("cat", "dog", f"clip{i}") for i in range(40)]  # every answer wrong: last in every resample
    runs = [write_run(tmp_path, "EncA", {"esc-50": {"metric": "Accuracy", "rows": rows_a}}),
            write_run(tmp_path, "EncB", {"esc-50": {"metric": "Accuracy", "rows": rows_b}}),
            write_run(tmp_path, "EncC", {"esc-50": {"metric": "Accuracy", "rows": far}})]
    board = leaderboard.leaderboard_table([str(p) for p in runs], resamples=4000)
    index = _by_name(board)
    stable = {name: board.stability[i]["A"] for name, i in index.items()}
    assert [board.results[index[n]]["A"].rank for n in ("EncA", "EncB", "EncC")] == [1, 2, 3]
    assert stable["EncA"].kept == 1.0 and stable["EncC"].kept == 1.0
    assert stable["EncB"].kept == pytest.approx(1 - (39 / 40) ** 40, abs=0.025)
    assert (stable["EncB"].low, stable["EncB"].high) == (1, 2)
    markdown = leaderboard.to_markdown(board)
    assert ["rank", "rank kept", "encoder", "score", "tasks", "esc-50"] in table_rows(markdown)
    assert ["2", f"{stable['EncB'].kept:.0%} (1–2)", "EncB"] in [row[:3] for row in table_rows(markdown)]
    rows = {row["encoder"]: row for row in csv.DictReader(io.StringIO(leaderboard.to_csv(board)))}
    assert float(rows["EncB"]["track_A_rank_kept"]) == pytest.approx(stable["EncB"].kept)
    assert rows["EncB"]["track_A_rank_low"] == "1" and rows["EncB"]["track_A_rank_high"] == "2"


def test_runs_without_kept_answers_are_held_fixed(tmp_path):
    mine = write_run(tmp_path / "task1", "Mine", {"esc-50": {"metric": "Accuracy", "rows": _classification(3, 4)}})
    low, high = make_run(tmp_path, "Low", {"esc-50": 0.6}), make_run(tmp_path, "High", {"esc-50": 0.9})
    board = leaderboard.leaderboard_table([str(mine), str(low), str(high)], resamples=4000)
    index = _by_name(board)
    # Mine scores 0.75, between Low (0.6) and High (0.9): rank 2. Resampled, it scores k/4 with
    # k ~ Binomial(4, 3/4): k = 4 (chance 81/256 = 0.316) puts it first, k = 3 (108/256 = 0.422) keeps it
    # second, k <= 2 (67/256 = 0.262) puts it last. Low and High keep their scores.
    stable = board.stability[index["Mine"]]["A"]
    assert board.results[index["Mine"]]["A"].rank == 2
    assert stable.kept == pytest.approx(108 / 256, abs=0.025) and (stable.low, stable.high) == (1, 3)
    assert board.stability[index["High"]]["A"].kept == pytest.approx(1 - 81 / 256, abs=0.025)
    assert "Held at their raw scores in the rank resampling: Low: esc-50 (no kept answers); High: esc-50" \
        in leaderboard.to_markdown(board)


def test_published_baselines_take_part_in_the_resampling(tmp_path):
    run = write_run(tmp_path, "Mine", {f"eval_{task}": {"metric": "Accuracy", "rows": _classification(3, 4)}
                                       for task in TRACK_A_TASKS})
    board = leaderboard.leaderboard_table([str(run)], baselines=True, resamples=100)
    assert len(board.entries) == 3 and board.resamples == 100
    assert all(s.get("A") is not None for s in board.stability)
    assert "Held at their raw scores" not in leaderboard.to_markdown(board)  # fixed by nature, not flagged


def test_seed_group_is_one_entry_with_its_spread(tmp_path):
    group_dir = tmp_path / "runs" / "EncA-seeds"
    seeds = [write_run(group_dir, "EncA", {"esc-50": {"metric": "Accuracy", "rows": _classification(right, 10)}},
                       seed=seed, directory=f"seed-{seed}") for seed, right in ((42, 6), (43, 8))]
    seed_group(group_dir, seeds)
    write_run(group_dir, "EncA", {"esc-50": {"metric": "Accuracy", "rows": _classification(1, 10)}},
              directory="seed-42.replaced-20260101-000000")  # moved aside by --force: not an entry
    write_run(tmp_path / "runs", "EncB", {"esc-50": {"metric": "Accuracy", "rows": _classification(5, 10)}})
    board = leaderboard.leaderboard_table([str(tmp_path / "runs")], resamples=200)  # found below the directory
    index = _by_name(board)
    assert set(index) == {"EncA (2 seeds)", "EncB"}
    group = board.entries[index["EncA (2 seeds)"]]
    assert group.scores == {"esc-50": pytest.approx(0.7)}
    assert group.spread == {"esc-50": pytest.approx(0.141421, abs=1e-6)}  # stdev of 0.6 and 0.8
    assert "0.700 ±0.141" in leaderboard.to_markdown(board)
    rows = {row["encoder"]: row for row in csv.DictReader(io.StringIO(leaderboard.to_csv(board)))}
    assert rows["EncA (2 seeds)"]["seeds"] == "2"
    assert float(rows["EncA (2 seeds)"]["esc-50_seed_sd"]) == pytest.approx(0.141421)


def test_seed_group_runs_must_share_an_identity(tmp_path):
    group_dir = tmp_path / "EncA-seeds"
    runs = [write_run(group_dir, "EncA", {"esc-50": {"metric": "Accuracy", "rows": _classification(5, 10)}},
                      seed=42, directory="seed-42"),
            write_run(group_dir, "EncA", {"esc-50": {"metric": "Accuracy", "rows": _classification(5, 10)}},
                      seed=43, directory="seed-43", train={"learning_rate": 0.1})]
    seed_group(group_dir, runs)
    with pytest.raises(LalmbenchError, match="differ in train.learning_rate, not only in the seed"):
        leaderboard.leaderboard_table([str(group_dir)])


def _accuracy(right: int) -> dict:
    return {"esc-50": {"metric": "Accuracy", "rows": _classification(right, 10)}}


def test_settings_that_differ_are_stated_and_another_budget_is_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "EncA", _accuracy(6), train={"max_steps": 5000, "learning_rate": 1e-4})
    write_run(runs, "EncB", _accuracy(8), train={"max_steps": 300, "learning_rate": 1e-4})
    with pytest.raises(LalmbenchError, match=r"different max_steps \(EncA 5000, EncB 300\).*--allow-different-settings"):
        leaderboard.leaderboard_tables([str(runs)], resamples=0)  # fails on the old code: ranked without a word
    found = leaderboard.leaderboard_tables([str(runs)], resamples=0, allow_different_settings=True)
    assert "settings that differ: max_steps: EncA 5000, EncB 300" in found.boards[0].notes
    assert any("ranked with --allow-different-settings despite different max_steps" in n for n in found.boards[0].notes)
    markdown = leaderboard.set_to_markdown(found)
    assert "> settings that differ: max_steps: EncA 5000, EncB 300" in markdown
    assert f"- EncA ({runs / 'EncA'}): train config train; max_steps 5000" in markdown  # its own value
    rows = {row["encoder"]: row for row in csv.DictReader(io.StringIO(leaderboard.set_to_csv(found)))}
    assert rows["EncB"]["notes"] == "train config train; max_steps 300"
    # Through the command: refused with status 2, allowed with the flag (and said on the output).
    from lalmbench.cli import main

    assert main(["leaderboard", str(runs), "--resamples", "0"]) == 2
    assert "different max_steps" in capsys.readouterr().err
    assert main(["leaderboard", str(runs), "--resamples", "0", "--allow-different-settings"]) == 0
    assert "ranked with --allow-different-settings" in capsys.readouterr().out


def test_a_learning_rate_difference_is_stated_not_refused(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "EncA", _accuracy(6), train={"learning_rate": 1e-4})
    write_run(runs, "EncB", _accuracy(8), train={"learning_rate": 3e-4}, summary={"global_batch_size": 8})
    board = leaderboard.leaderboard_table([str(runs)], resamples=0)
    assert board.notes == ["settings that differ: global batch size: EncA unrecorded, EncB 8; learning_rate: "
                           "EncA 0.0001, EncB 0.0003"]


def test_a_run_set_aside_by_force_is_never_ranked(tmp_path):
    runs = tmp_path / "runs"
    current = write_run(runs, "EncA", _accuracy(6))
    replaced = write_run(runs, "EncA", _accuracy(6), directory="EncA.replaced-20260101-000000")
    write_run(runs, "EncB", _accuracy(8))
    found = leaderboard.leaderboard_tables([str(runs)], resamples=0)  # fails on the old code: EncA ranked twice
    assert sorted(e.source for e in found.boards[0].entries) == sorted([str(current), str(runs / "EncB")])
    assert f"{replaced}: set aside by --force (20260101-000000); its replacement is {current}" in found.skipped
    with pytest.raises(LalmbenchError, match="no finished run to rank; skipped:\n  .*set aside by --force"):
        leaderboard.leaderboard_tables([str(replaced)])  # named on its own: still not ranked


def test_partial_evaluations_are_ranked_only_when_named(tmp_path):
    done = make_run(tmp_path, "Done", {"esc-50": 0.5})
    quick = make_run(tmp_path, "Done", {"esc-50": 0.9}, limit=8, directory="Done/limit-8")
    found = leaderboard.leaderboard_tables([str(tmp_path)], resamples=0)
    assert [[e.source for e in board.entries] for board in found.boards] == [[str(done)]]
    assert any(f"not ranked from a directory scan: {quick}" in note for note in found.notes)
    named = leaderboard.leaderboard_tables([str(quick)], resamples=0)
    assert [[e.source for e in board.entries] for board in named.boards] == [[str(quick)]]
    assert "partial" in named.boards[0].title


def test_written_boards_of_other_runs_are_kept_aside_not_overwritten(three_runs, tmp_path, capsys):
    out = tmp_path / "board"
    assert leaderboard.leaderboard_command([str(three_runs[0]), str(three_runs[1])], output_dir=str(out),
                                           resamples=0) == 0
    first = {name: (out / name).read_text() for name in ("leaderboard.csv", "leaderboard.md")}
    capsys.readouterr()
    # The same runs again: the same files, nothing to keep.
    assert leaderboard.leaderboard_command([str(three_runs[0]), str(three_runs[1])], output_dir=str(out),
                                           resamples=0) == 0
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.csv", "leaderboard.md"]
    # Other runs: the earlier board is moved aside (fails on the old code: overwritten without a word).
    assert leaderboard.leaderboard_command([str(p) for p in three_runs], output_dir=str(out), resamples=0) == 0
    kept = sorted(p for p in out.iterdir() if ".replaced-" in p.name)
    assert [p.suffix for p in kept] == [".csv", ".md"]
    assert {p.suffix: p.read_text() for p in kept} == {".csv": first["leaderboard.csv"], ".md": first["leaderboard.md"]}
    assert "EncC" in (out / "leaderboard.csv").read_text()
    assert f"kept the earlier {out / 'leaderboard.csv'} as {kept[0]}" in capsys.readouterr().out
