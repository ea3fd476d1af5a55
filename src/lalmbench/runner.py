"""The main run, top to bottom: prepare, train (or reuse), evaluate (or reuse), write the results.

    configs -> encoder (loaded, validated, frozen) -> data (fetched, resolved) -> decoder + LoRA + projector
    -> run directory (keyed by the training identity, made and locked only now)     phases/preparation.py
    -> train (or resume, or reuse)                                                   phases/training.py
    -> evaluate every test set (or reuse cached scores)                              phases/evaluation.py
    -> scores.tsv, predictions, summary, report                                      phases/results.py

The training identity (identity.py) covers what the trained weights depend on; a finished run with the
same identity is reused and an interrupted one resumed (both say which identity they matched); a
different identity never reuses anything. Scores are cached per test set under its evaluation identity
(the training identity, the evaluation-only settings, the test set's config and shards). Rank 0 takes
these decisions and broadcasts them, so every process acts on the same view of the disk. An exception on
any process stops every process (distributed.FailureWatch).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lalmbench.distributed import stops_every_process_on_failure
from lalmbench.encoders.loading import encoder_display_name
from lalmbench.errors import DeterminismError
from lalmbench.phases.evaluation import evaluate_or_reuse
from lalmbench.phases.preparation import RunRequest, prepare
from lalmbench.phases.results import RunResult, write_results
from lalmbench.phases.run_directory import RunClaim, log_stop
from lalmbench.phases.training import train_or_reuse
from lalmbench.process_state import restores_process_state
from lalmbench.run_configs import check_limit, configs_yaml, resolve_configs, run_directory
from lalmbench.train import nondeterministic_operation


@restores_process_state  # a library call leaves the process's logging, warnings and hub settings as they were
def run(encoder: str, train: str = "task1", eval: str | None = None, model_args: dict | None = None,
        overrides: dict | None = None, output_dir: str | Path = "lalmbench_runs", force: bool = False,
        allow_download: bool = True, write_report: bool = True, show_progress: bool = True,
        extra_columns: dict | None = None, run_name: str | None = None, limit: int | None = None,
        task_names: list[str] | None = None) -> RunResult:
    """Train and evaluate; `run_name` replaces the encoder's name in the run directory's path. `task_names`
    picks datasets of the suite (run_configs.py); `limit` evaluates only the first `limit` examples of
    each test set, a partial evaluation kept in `<run_dir>/limit-<limit>/` (`partial_results_dir`).

    The run directory is locked while the run lasts; a run that fails before its first training step
    removes the directory it made (an earlier run's directory is never removed)."""
    request = RunRequest(encoder=encoder, train=train, eval=eval, model_args=model_args, overrides=overrides,
                         output_dir=output_dir, force=force, allow_download=allow_download,
                         write_report=write_report, show_progress=show_progress, extra_columns=extra_columns,
                         run_name=run_name, limit=limit, task_names=task_names)
    claim = RunClaim()
    try:
        return _run(request, claim)
    except BaseException as exc:
        stopped = exc
        cause = nondeterministic_operation(exc)
        if cause is not None:
            stopped = DeterminismError(
                f"{cause} has no deterministic implementation on this device, and this run is deterministic "
                f"(deterministic: true, the default). To run it anyway, without bit-reproducible results, "
                f"set deterministic to false: --args '{{\"deterministic\": false}}'")
        log_stop(stopped)  # the reason, last in log.txt (a directory that holds nothing to resume then goes)
        claim.discard_if_untrained()
        if stopped is not exc:
            raise stopped from exc
        raise
    finally:
        claim.release()


@stops_every_process_on_failure  # an exception on one process stops them all (distributed.FailureWatch)
def _run(request: RunRequest, claim: RunClaim) -> RunResult:
    prepared = prepare(request, claim)  # nothing written before its run directory claim
    trained = train_or_reuse(prepared)
    evaluated = evaluate_or_reuse(prepared)  # the model as training left it
    return write_results(prepared, trained, evaluated)


def run_command(encoder: str, train: str = "task1", eval: str | None = None, model_args: dict | None = None,
                overrides: dict | None = None, output_dir: str = "lalmbench_runs", force: bool = False,
                allow_download: bool = True, write_report: bool = True, limit: int | None = None,
                task_names: list[str] | None = None, print_config: bool = False) -> int:
    if print_config:  # the configs as this run would use them; no encoder, data, network or output directory
        check_limit(limit)
        config, tasks, _ = resolve_configs(train, eval, overrides, task_names)
        run_dir = run_directory(output_dir, config, encoder_display_name(encoder))  # the name only: nothing imported
        sys.stdout.write(configs_yaml(config, tasks, limit, run_dir))
        return 0
    run(encoder, train, eval, model_args, overrides, output_dir, force, allow_download, write_report,
        limit=limit, task_names=task_names)
    return 0
