"""Test sets checked before training: a bad test set costs seconds, not a training run.

For every test set of the run, each shard is opened and read until its first usable example, by the
rules the evaluation reads it with (`examples.iter_examples` under the run's protocol: under `official`
an empty string is a target, as published; under `corrected` it is none). A test set stops the run when

  - a shard is damaged (cut short, a broken member header, corrupt gzip data before its first usable
    example): the error names the shard and where it breaks;
  - none of its shards holds a usable example (empty shards, the targets not under the configured key,
    unreadable audio): the evaluation would have nothing to score;
  - one of its shards holds examples and none is usable: every example of that shard would be skipped
    (a wrong key or format), which the evaluation's 1% rule would find only after training.

An empty shard beside shards with usable examples loses nothing and passes. Every problem of every test
set is reported at once, with what was expected and what was found. What lies past a shard's first
usable example is read when the test set is evaluated in full: the fraction of unusable examples
(`BadDataCounter.check`) and damage further in (a downloaded shard was checked against the hub's sha256
already). Reading (decompressing) all test data here would cost minutes on the real suites.
"""

from __future__ import annotations

from pathlib import Path

from lalmbench.config import EvalTaskConfig
from lalmbench.data.examples import BadDataCounter, iter_examples
from lalmbench.errors import DataError


def _first_usable(task: EvalTaskConfig, shard: Path, protocol: str) -> tuple[bool, BadDataCounter]:
    """Whether `shard` holds a usable example of `task`, and the account of what was read before it."""
    counter = BadDataCounter()
    examples = iter_examples(task.name, shard, task.data.key, counter, protocol=protocol)
    try:
        return next(examples, None) is not None, counter
    finally:
        examples.close()


def _describe(name: str, shard: Path, counter: BadDataCounter) -> str:
    seen = counter.seen_total(name)
    if seen:
        return f"{shard}: {seen} example(s), none usable ({counter.problems(name)})"
    stray = sorted(member for _, member in counter.stray[name])
    if stray:
        return f"{shard}: no example (only members of no example: {', '.join(stray[:5])})"
    return f"{shard}: empty (no record)"


def problems_of_test_set(task: EvalTaskConfig, shards: list[Path], protocol: str) -> list[str]:
    """What stops `task` from being evaluated (module docstring); empty when nothing does."""
    problems, found = [], []
    for shard in shards:
        try:
            found.append((shard, *_first_usable(task, shard, protocol)))
        except DataError as exc:  # a damaged shard: examples.damaged_shard_error names it and where
            problems.append(f"test set {task.name}: {exc}")
    if problems:
        return problems
    if not any(usable for _, usable, _ in found):
        return [f"test set {task.name}: no usable example in its {len(shards)} shard(s) (target key "
                f"{task.data.key!r}): " + "; ".join(_describe(task.name, shard, counter) for shard, _, counter in found)]
    return [f"test set {task.name}: shard {shard} holds {counter.seen_total(task.name)} example(s) and none is usable "
            f"({counter.problems(task.name)})"
            for shard, usable, counter in found if not usable and counter.seen_total(task.name)]


def check_test_sets(tasks: list[EvalTaskConfig], shards: dict[str, list[Path]], protocol: str,
                    eval_config: str | None = None) -> None:
    """Stop (DataError) naming every test set that cannot be evaluated, before any training."""
    problems = [problem for task in tasks for problem in problems_of_test_set(task, shards[task.name], protocol)]
    if not problems:
        return
    bad = len({problem.split(":", 1)[0] for problem in problems})
    where = f" in the eval config {eval_config}" if eval_config else ""
    raise DataError(
        f"{bad} test set(s) cannot be evaluated (checked before training, no training time spent):\n  - "
        + "\n  - ".join(problems)
        + f"\nFix the test set's `data` or `key`{where}; fetch damaged or missing shards again (delete them and run "
          "`lalmbench download TASK`); a shard without a usable example can be left out of the test set's `data` list.")
