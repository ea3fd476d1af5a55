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

from lalmbench.config import DatasetSpec, EvalTaskConfig
from lalmbench.data.examples import BadDataCounter, Example, iter_examples
from lalmbench.errors import DataError


def _first_usable(name: str, key: str | None, shard: Path, protocol: str) -> tuple[Example | None, BadDataCounter]:
    """The first usable example of `shard` (None when it holds none), and the account of what was read."""
    counter = BadDataCounter()
    examples = iter_examples(name, shard, key, counter, protocol=protocol)
    try:
        found = next(examples, None)
        return (found[2] if found is not None else None), counter
    finally:
        examples.close()


def first_training_example(spec: DatasetSpec, shards: list[Path], protocol: str) -> Example | None:
    """The first usable example of a training dataset, its shards read in the given order (the real clip the
    encoder is checked on before training); None when none holds one (the training stream's rules decide)."""
    for shard in shards:
        example, _ = _first_usable(spec.name, spec.key, shard, protocol)
        if example is not None:
            return example
    return None


def _describe(name: str, shard: Path, counter: BadDataCounter) -> str:
    seen = counter.seen_total(name)
    if seen:
        return f"{shard}: {seen} example(s), none usable ({counter.problems(name)})"
    stray = sorted(member for _, member in counter.stray[name])
    if stray:
        return f"{shard}: no example (only members of no example: {', '.join(stray[:5])})"
    return f"{shard}: empty (no record)"


def problems_of_test_set(task: EvalTaskConfig, shards: list[Path], protocol: str
                         ) -> tuple[list[str], Example | None]:
    """What stops `task` from being evaluated (module docstring; empty when nothing does), and its first
    usable example."""
    problems, found = [], []
    for shard in shards:
        try:
            found.append((shard, *_first_usable(task.name, task.data.key, shard, protocol)))
        except DataError as exc:  # a damaged shard: examples.damaged_shard_error names it and where
            problems.append(f"test set {task.name}: {exc}")
    first = next((example for _, example, _ in found if example is not None), None)
    if problems:
        return problems, first
    if first is None:
        return [f"test set {task.name}: no usable example in its {len(shards)} shard(s) (target key "
                f"{task.data.key!r}): " + "; ".join(_describe(task.name, shard, counter) for shard, _, counter in found)
                ], None
    return [f"test set {task.name}: shard {shard} holds {counter.seen_total(task.name)} example(s) and none is usable "
            f"({counter.problems(task.name)})"
            for shard, example, counter in found if example is None and counter.seen_total(task.name)], first


def check_test_sets(tasks: list[EvalTaskConfig], shards: dict[str, list[Path]], protocol: str,
                    eval_config: str | None = None) -> list[Example]:
    """Stop (DataError) naming every test set that cannot be evaluated, before any training; else the first
    usable example of each test set (the encoder is checked on them before training)."""
    problems, firsts = [], []
    for task in tasks:
        task_problems, first = problems_of_test_set(task, shards[task.name], protocol)
        problems += task_problems
        firsts.append(first)
    if not problems:
        return firsts
    bad = len({problem.split(":", 1)[0] for problem in problems})
    where = f" in the eval config {eval_config}" if eval_config else ""
    raise DataError(
        f"{bad} test set(s) cannot be evaluated (checked before training, no training time spent):\n  - "
        + "\n  - ".join(problems)
        + f"\nFix the test set's `data` or `key`{where}; fetch damaged or missing shards again (delete them and run "
          "`lalmbench download TASK`); a shard without a usable example can be left out of the test set's `data` list.")
