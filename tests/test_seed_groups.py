"""Seed groups are keyed by what their runs share: `run --seeds` with other settings writes a new group
beside the old one and never rewrites it; the same settings with more seeds extend the group."""

from __future__ import annotations

import json

from lalmbench.seeds import run_seeds
from run_helpers import FAST, tiny_data

ENCODER = "lalmbench.encoders.LogMelEncoder"


def _seeds(train_yaml, eval_yaml, output, seeds: int, **overrides):
    return run_seeds(ENCODER, str(train_yaml), str(eval_yaml), {}, {**FAST, "save_steps": 100, **overrides}, output,
                     seeds=seeds, allow_download=False, write_report=False, show_progress=False)


def _members(group):
    recorded = json.loads((group / "seed_group.json").read_text())
    return [json.loads((group / run / "run_identity.json").read_text())["identity"]["train"]
            for run in recorded["runs"]]


def test_a_group_with_other_settings_is_a_new_group_and_the_old_one_is_kept(tmp_path, capsys):
    train_yaml, eval_yaml = tiny_data(tmp_path / "data")
    out = tmp_path / "out"
    first = _seeds(train_yaml, eval_yaml, out, 2, max_steps=3)
    assert first == out / "train" / "LogMelEncoder-seeds"
    kept = {name: (first / name).read_bytes() for name in ("seed_group.json", "seed_scores.tsv")}
    assert [(m["seed"], m["max_steps"]) for m in _members(first)] == [(42, 3), (43, 3)]

    second = _seeds(train_yaml, eval_yaml, out, 2, max_steps=2)  # another training budget: another group
    # fails on the old code: both files were rewritten for the new group, the old runs referenced by nothing
    assert {name: (first / name).read_bytes() for name in kept} == kept
    key = json.loads((second / "seed_group.json").read_text())["group_key"]
    assert second == out / "train" / f"LogMelEncoder-seeds-{key[:8]}"
    assert [(m["seed"], m["max_steps"]) for m in _members(second)] == [(42, 2), (43, 2)]
    printed = capsys.readouterr().out
    assert f"{first} holds a seed group with other settings (max_steps: there 3, here 2)" in printed

    # The first settings again, with one more seed: the first group grows, its two runs reused.
    third = _seeds(train_yaml, eval_yaml, out, 3, max_steps=3)
    assert third == first
    assert [(m["seed"], m["max_steps"]) for m in _members(first)] == [(42, 3), (43, 3), (44, 3)]
    rows = (first / "seed_scores.tsv").read_text().splitlines()
    assert rows[-1].split("\t")[0] == "Overall" and rows[-1].split("\t")[-1] == "3"
    # Fewer seeds of the same settings: the group keeps all three.
    _seeds(train_yaml, eval_yaml, out, 1, max_steps=3)
    assert len(_members(first)) == 3
    assert "keeps seeds 42, 43, 44" in capsys.readouterr().out

    # Both groups are read as groups, and put side by side only when asked (another training budget).
    import pytest

    from lalmbench.errors import LalmbenchError
    from lalmbench.report.leaderboard import leaderboard_tables
    from lalmbench.report.run_groups import read_group

    assert read_group([second]).seeds == [42, 43]
    with pytest.raises(LalmbenchError, match="different max_steps"):
        leaderboard_tables([str(out)])
    found = leaderboard_tables([str(out)], allow_different_settings=True)
    assert sorted(len(entry.members) for entry in found.boards[0].entries) == [2, 3]
    assert sorted(entry.source for entry in found.boards[0].entries) == sorted([str(first), str(second)])
