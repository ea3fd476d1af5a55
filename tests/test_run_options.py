"""`lalmbench run --limit N` and `--tasks a,b` end to end on the demo's synthetic shards: where the results
go, how they are marked, and that partial and subset results never stand in for full ones."""

import csv
import json

import pytest
import yaml

from lalmbench.cli import main
from lalmbench.errors import LalmbenchError

FAST = {"decoder_model_name": "tiny-random", "max_steps": 4, "save_steps": 4, "shuffle_buffer": 8, "sort_buffer": 4,
        "per_device_train_batch_size": 2, "warmup_steps": 1, "max_new_tokens": 3, "torch_num_threads": 1,
        "lora_r": 2}
TASKS = ["eval_tones", "eval_chords", "eval_count", "eval_melody"]


def _run(train_yaml, eval_yaml, output, *extra):
    return main(["run", "lalmbench.encoders.LogMelEncoder", str(train_yaml), str(eval_yaml), "--output-dir",
                 str(output), "--args", json.dumps(FAST), *extra])


@pytest.fixture(scope="module")
def full_then_partial(demo_suite, tmp_path_factory):
    """A full run, then the same run with --limit 3 (reusing its training); what each printed."""
    train_yaml, eval_yaml, _ = demo_suite
    output = tmp_path_factory.mktemp("runs")
    run_dir = output / "train" / "LogMelEncoder"
    assert _run(train_yaml, eval_yaml, output, "--no-report") == 0
    full_files = {name: (run_dir / name).read_bytes() for name in ["scores.tsv", "run_summary.json", "COMPLETED"]
                  + [f"predictions_{t}.csv" for t in TASKS] + [f"scores/{t}.json" for t in TASKS]}
    assert _run(train_yaml, eval_yaml, output, "--limit", "3") == 0
    return output, run_dir, full_files


def test_limit_answers_the_first_examples_and_marks_every_output(full_then_partial, capsys):
    output, run_dir, _ = full_then_partial
    partial = run_dir / "limit-3"
    rows = list(csv.DictReader(open(partial / "scores.tsv"), delimiter="\t"))
    assert [r["Task"] for r in rows] == TASKS + ["Overall"]
    assert {r["limit"] for r in rows} == {"3"}  # every row says it
    summary = json.loads((partial / "run_summary.json").read_text())
    assert summary["partial"] == {"limit": 3}
    assert {t: summary["tasks"][t]["num_examples"] for t in TASKS} == {t: 3 for t in TASKS}
    assert json.loads((partial / "COMPLETED").read_text())["partial"] == {"limit": 3}
    # The demo's test shard is one per task, read by one loader worker: the first three are its first records.
    for task in TASKS:
        keys = [r["key"] for r in csv.DictReader(open(partial / f"predictions_{task}.csv"))]
        assert keys == [f"{task[5:]}_test_{i:05d}" for i in range(3)]
    report = (partial / "report.html").read_text()
    assert "PARTIAL: first 3 test examples per task" in report and "Partial evaluation (--limit 3)" in report
    assert "train_log.csv is missing" not in report  # the training curve comes from the run it evaluates


def test_limit_keeps_the_full_evaluation_and_trains_nothing(full_then_partial):
    output, run_dir, full_files = full_then_partial
    for name, content in full_files.items():  # nothing of the full evaluation was touched
        assert (run_dir / name).read_bytes() == content, name
    log = (run_dir / "log.txt").read_text()
    assert log.count("reusing the finished training of this run identity") == 1  # the --limit run
    keys = {json.loads((run_dir / "scores" / f"{t}.json").read_text())["key"] for t in TASKS}
    partial_keys = {json.loads((run_dir / "limit-3" / "scores" / f"{t}.json").read_text())["key"] for t in TASKS}
    assert not keys & partial_keys  # the limit is part of the evaluation identity
    identity = json.loads((run_dir / "limit-3" / "scores" / "eval_tones.json").read_text())["identity"]
    assert identity["limit"] == 3


def test_full_run_after_a_partial_one_reuses_only_full_scores(full_then_partial, demo_suite, capsys):
    output, run_dir, full_files = full_then_partial
    train_yaml, eval_yaml, _ = demo_suite
    assert _run(train_yaml, eval_yaml, output, "--no-report") == 0
    assert "PARTIAL" not in capsys.readouterr().out
    log = (run_dir / "log.txt").read_text()
    assert log.count("eval_tones: reusing the cached score") == 1
    assert (run_dir / "scores.tsv").read_bytes() == full_files["scores.tsv"]


def test_leaderboard_and_compare_keep_partial_apart(full_then_partial, capsys):
    from lalmbench.report import compare, leaderboard

    output, run_dir, _ = full_then_partial
    # A directory scan ranks the full evaluation and names the partial one; named, the partial one is ranked
    # in a board of its own, never beside the full one.
    found = leaderboard.leaderboard_tables([str(output)])
    assert [[e.source for e in board.entries] for board in found.boards] == [[str(run_dir)]]
    assert any(f"not ranked from a directory scan: {run_dir / 'limit-3'}" in note for note in found.notes)
    found = leaderboard.leaderboard_tables([str(run_dir), str(run_dir / "limit-3")])
    assert [[e.source for e in board.entries] for board in found.boards] == [[str(run_dir)],
                                                                           [str(run_dir / "limit-3")]]
    assert found.boards[1].title.endswith("partial, first 3 test examples per task (--limit 3)")
    with pytest.raises(LalmbenchError, match="evaluated on different test examples: A .* on full test sets, "
                                             "B .* on the first 3 test examples per task"):
        compare.compare_command([str(run_dir)], [str(run_dir / "limit-3")])


def test_the_printed_table_says_partial(demo_suite, tmp_path, capsys):
    train_yaml, eval_yaml, _ = demo_suite
    assert _run(train_yaml, eval_yaml, tmp_path, "--limit", "2", "--no-report") == 0
    out = capsys.readouterr().out
    assert "PARTIAL: only the first 2 test examples of each test set were evaluated (--limit 2)" in out
    assert f"Results in {tmp_path / 'train' / 'LogMelEncoder' / 'limit-2'}" in out
    # The run directory holds the training, no full evaluation: not a finished run for the leaderboard.
    assert not (tmp_path / "train" / "LogMelEncoder" / "scores.tsv").exists()


def test_tasks_trains_and_scores_the_picked_datasets_in_a_run_of_their_own(demo_suite, tmp_path, capsys):
    train_yaml, eval_yaml, _ = demo_suite
    assert _run(train_yaml, eval_yaml, tmp_path, "--tasks", "count,TONES", "--no-report") == 0
    run_dir = tmp_path / "train@tones,count" / "LogMelEncoder"  # the configs' order, not the typed one
    rows = list(csv.DictReader(open(run_dir / "scores.tsv"), delimiter="\t"))
    assert [r["Task"] for r in rows] == ["eval_tones", "eval_count", "Overall"]
    config = yaml.safe_load(open(run_dir / "config.yaml"))
    assert list(config["train_data"]) == ["tones", "count"] and config["config_name"] == "train@tones,count"
    assert list(yaml.safe_load(open(run_dir / "eval_config.yaml"))) == ["eval_tones", "eval_count"]
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["train_config"] == "train@tones,count"
    identity = json.loads((run_dir / "run_identity.json").read_text())["identity"]
    assert sorted(identity["train_data"]) == ["count", "tones"]  # the mixture keys the training identity
    # A typo stops the run before anything is written, with a suggestion.
    code = _run(train_yaml, eval_yaml, tmp_path / "typo", "--tasks", "tone")
    assert code == 2 and "Did you mean 'tones'?" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


# -- which examples --limit takes (evaluate.py), on test_evaluate's small hand-described shards ---------------------

def _limited(protocol, tmp_path, tiny, limit, num_workers=2):
    from test_evaluate import BATCHING_PROMPT, _small_shards, _task

    from lalmbench.data.examples import BadDataCounter
    from lalmbench.distributed import DistInfo
    from lalmbench.evaluate import _published_length, corrected_batches, official_batches
    from lalmbench.data.tokenizing import Tokenizing

    shards = _small_shards(tmp_path)
    task = _task(shards, 4, num_workers)
    if protocol == "official":
        tokenize = Tokenizing(tiny[1], {task.name: BATCHING_PROMPT}, "official")
        batches = official_batches(task, shards, BadDataCounter(), DistInfo(), 4,
                                   lambda example: _published_length(example, tokenize, 16_000), limit)
        return [[example.text for example in examples] for examples, _ in batches]
    return [[(example.ref.key, len(fills)) for example, fills in zip(examples, filled)]
            for examples, filled in corrected_batches(task, shards, BadDataCounter(), DistInfo(), 4, limit)]


@pytest.fixture(scope="module")
def tiny():
    from lalmbench.model.decoder import load_decoder

    return load_decoder("tiny-random")


def test_official_limit_takes_the_first_examples_handed_out(tmp_path, tiny):
    # Two workers hand out b0-b3 | a0 "a1 one" "a1 two" a2 | b4 c0 c1 c2 | a3 a4 a5 (test_evaluate.py).
    # The first 6 are short clips of one prompt: the sort keeps their order.
    assert _limited("official", tmp_path, tiny, 6) == [["b0", "b1", "b2", "b3"], ["a0", "a1 one"]]
    # The first 10 include the long clip b4, which the sort puts first among them.
    assert _limited("official", tmp_path, tiny, 10) == [["b4", "b0", "b1", "b2"], ["b3", "a0", "a1 one", "a1 two"],
                                                        ["a2", "c0"]]


def test_corrected_limit_takes_the_first_examples_in_shard_order(tmp_path, tiny):
    # Shards a, b, c as given; a holds a0, "a1 one", "a1 two", a2 .. a5 (a5 long): 7 examples.
    assert _limited("corrected", tmp_path, tiny, 7) == [[("a5", 1), ("a0", 1), ("a1", 2), ("a2", 1)],
                                                        [("a3", 1), ("a4", 1)]]
    # Two examples: a0 and the first caption of a1 only.
    assert _limited("corrected", tmp_path, tiny, 2) == [[("a0", 1), ("a1", 1)]]
