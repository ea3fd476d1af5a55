"""Command line: parse arguments and call the library. No logic lives here.

    lalmbench run ENCODER [TRAIN] [EVAL] [--model-args JSON] [--args JSON] [--output-dir DIR] [--tasks A,B]
                  [--limit N] [--print-config]
    lalmbench demo [--output-dir DIR] [--data-only]
    lalmbench check ENCODER [--model-args JSON] [--device cpu|cuda] [--json]
    lalmbench tasks [SUITE]
    lalmbench download SUITE|TASK...
    lalmbench bench [--quick] [--device cpu|cuda] [--compile|--no-compile] [--steps N] [--protocol P]
    lalmbench report RUN_DIR
    lalmbench leaderboard RUN_DIR... [--baselines] [--mixed-protocols] [--allow-different-settings] [--output-dir DIR]
    lalmbench compare RUN_A RUN_B | RUN_A... --vs RUN_B... [--output FILE]
    lalmbench new-encoder DIR
    lalmbench package DIR [--include-weights]
"""

from __future__ import annotations

import argparse
import sys

from lalmbench import __version__

RUN_EPILOG = """\
TRAIN and EVAL are a built-in name (see `lalmbench tasks`) or a YAML file in the published XARES-LLM
format. Every training field is a flag (above); --args sets several at once, as JSON, a YAML mapping or
a YAML file:
  lalmbench run my_encoder.py task1 --max-steps 2000 --bf16 --decoder-model-name tiny-random
  lalmbench run my_encoder.py task1 --args '{max_steps: 2000, bf16: true}'
Precedence: flags over --args over the YAML over the defaults (which reproduce the official protocol).
"""


def build_parser() -> argparse.ArgumentParser:
    from lalmbench.config import TrainConfig
    from lalmbench.config_flags import add_config_flags
    from lalmbench.demo import DEMO_TRAINING
    from lalmbench.protocols import DEFAULT_PROTOCOL, PROTOCOLS

    parser = argparse.ArgumentParser(
        prog="lalmbench",
        description="Score an audio encoder by the audio language model built on it "
                    "(Interspeech 2026 Audio Encoder Capability Challenge protocol).")
    parser.add_argument("--version", action="version", version=f"lalmbench {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="train and evaluate an LALM on an encoder",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RUN_EPILOG)
    run.add_argument("encoder", help="encoder .py file (one attribute ending in 'Encoder'), dotted path pkg.module.Class, "
                     "or hear:MODULE (a HEAR-API module name or .py file)")
    run.add_argument("train", nargs="?", default="task1", help="train config: built-in name or YAML file (default: task1)")
    run.add_argument("eval", nargs="?", default=None, help="eval config: built-in name or YAML file (default: same name as TRAIN)")
    run.add_argument("--model-args", default=None, metavar="JSON", help="keyword arguments for the encoder constructor, as JSON")
    run.add_argument("--args", default=None, metavar="JSON|YAML",
                     help="training field overrides: a JSON object, a YAML mapping or a YAML file (see below)")
    run.add_argument("--output-dir", default="lalmbench_runs", metavar="DIR", help="where run directories go (default: ./lalmbench_runs)")
    run.add_argument("--force", action="store_true", help="recompute everything even if a finished run with the same identity exists")
    run.add_argument("--no-download", action="store_true", help="never fetch missing shards; stop and list them instead")
    run.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    run.add_argument("--seeds", type=int, default=1, metavar="N",
                     help="train N seeds (seed, seed+1, ...), each its own run, in <encoder>-seeds/; prints mean and spread")
    run.add_argument("--tasks", default=None, metavar="A,B",
                     help="only these datasets of the suite (train mixture and test sets), e.g. --tasks esc-50,gtzan; "
                          "the run is named <train>@<tasks> and never reuses a full-suite run")
    run.add_argument("--limit", type=int, default=None, metavar="N",
                     help="a quick partial look: evaluate only the first N test examples of each test set (training "
                          "is unchanged); results go to <run_dir>/limit-N/, marked partial, never mixed with full ones")
    run.add_argument("--print-config", action="store_true",
                     help="print the resolved train and eval configs (two YAML documents, train first) and exit; "
                          "loads no encoder and touches no data, network or output directory")
    add_config_flags(run, TrainConfig, "training fields (each overrides the YAML and --args)", skip=("train_data",))
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="offline demo: synthetic tasks, LogMelEncoder, tiny-random decoder")
    demo.add_argument("--output-dir", default="demo_output", metavar="DIR", help="where the demo writes data and results (default: ./demo_output)")
    demo.add_argument("--data-only", nargs="?", const=True, default=None, metavar="DIR",
                      help="only write the synthetic shards plus train.yaml and eval.yaml into --output-dir "
                           "(`--data-only DIR`, the older spelling, writes them into DIR)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: 0)")
    demo.add_argument("--args", default=None, metavar="JSON|YAML", help="training field overrides (JSON, YAML or a YAML file)")
    add_config_flags(demo, TrainConfig, "training fields (each overrides the demo's and --args)",
                     skip=("train_data", "config_name"), defaults=DEMO_TRAINING)
    demo.set_defaults(handler=_demo)

    check = commands.add_parser("check", help="check an encoder against the challenge contract")
    check.add_argument("encoder", help="encoder .py file, dotted path, or hear:MODULE (a HEAR-API module)")
    check.add_argument("--model-args", default=None, metavar="JSON", help="keyword arguments for the encoder constructor, as JSON")
    check.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device to run the checks on (default: cpu)")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(handler=_check)

    tasks = commands.add_parser(
        "tasks", help="list the built-in tasks and suites", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Suites as published: task1 (15 classification datasets), task2 (5 open-ended), all (20).\n"
               "Every dataset name (esc-50, fsd50k, librispeech, ...) is also a train and eval config, with\n"
               "the published single-dataset settings. Opt-in, never a default: extended = task1 plus two\n"
               "tasks the published configs lack, librispeech-gender (LibriSpeech shards, target from the\n"
               "speaker metadata field `gender;sex`: first present wins) and nsynth-pitch (NSynth shards,\n"
               "field `pitch`).")
    tasks.add_argument("suite", nargs="?", default="all", help="suite or dataset name (default: all)")
    tasks.set_defaults(handler=_tasks)

    download = commands.add_parser(
        "download", help="fetch the shards of suites or tasks ahead of a run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Files go to --data-home, else $LALMBENCH_DATA_HOME, else $XARES_DATA_HOME, else ./xares_data,\n"
               "with the hub's layout.\n"
               "Environment: HF_ENDPOINT (mirror, default https://huggingface.co), HF_TOKEN (gated/private\n"
               "repos), HF_HUB_OFFLINE=1 (never download). A `revision:` in a dataset pins its files.\n"
               "Files already here are kept; after an interruption, run it again to fetch the rest.")
    download.add_argument("targets", nargs="+", metavar="SUITE|TASK",
                          help="suite names (task1, task2, all, extended), task names, or train/eval YAML files")
    download.add_argument("--workers", type=int, default=4, help="parallel downloads (default: 4)")
    download.add_argument("--split", choices=["train", "test", "both"], default="both", help="which shards to fetch (default: both)")
    download.add_argument("--data-home", default=None, metavar="DIR",
                          help="where the shards go (as `run --data-home`; default: the environment's data home, below)")
    download.set_defaults(handler=_download)

    bench = commands.add_parser("bench", help="measure training and evaluation speed on the benchmark workload")
    bench.add_argument("--quick", action="store_true", help="a short run: about 3 min on a 2-core CPU (longer when other jobs share it)")
    bench.add_argument("--device", default=None, choices=["cpu", "cuda"], help="device (default: cuda when available)")
    bench.add_argument("--output", default="bench.json", metavar="FILE", help="where to write the figures (default: bench.json)")
    bench.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="include the torch.compile paths (default: on a GPU only; compiling takes minutes on a CPU)")
    bench.add_argument("--steps", type=int, default=None, metavar="N",
                       help="measured steps per path (default: 195 after 5 warm-up steps, 6 with --quick)")
    bench.add_argument("--protocol", default=DEFAULT_PROTOCOL, choices=PROTOCOLS,
                       help="the protocol whose training stream the paths train on; the other protocol's stream is "
                            "timed beside it (default: official)")
    bench.set_defaults(handler=_bench)

    report = commands.add_parser("report", help="write an HTML report (and PNGs) for a run directory")
    report.add_argument("run_dir", help="a run directory holding scores.tsv")
    report.set_defaults(handler=_report)

    board = commands.add_parser(
        "leaderboard", help="rank runs the way the challenge ranks them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Only runs scored on the same tasks (and the same --limit) are ranked together; runs of another task\n"
               "set get a board of their own. Unfinished runs (no scores.tsv or COMPLETED) are skipped with a note,\n"
               "and so are runs moved aside by `run --force` (<name>.replaced-<time>): never ranked. A partial\n"
               "evaluation (<run>/limit-N) is ranked only when named. Settings that differ between a board's runs\n"
               "are stated; another max_steps, decoder or data revision needs --allow-different-settings.")
    board.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                       help="run directories, seed-group directories, or directories above them")
    board.add_argument("--baselines", action="store_true",
                       help="add the published Dasheng-base and Whisper-base rows beside runs scored on task1, task2 or all")
    board.add_argument("--output-dir", default=None, metavar="DIR",
                       help="also write leaderboard.csv and leaderboard.md there (default: print only)")
    board.add_argument("--mixed-protocols", action="store_true",
                       help="rank runs of different protocols together (refused by default: their scores differ by protocol)")
    board.add_argument("--allow-different-settings", action="store_true",
                       help="rank runs trained with another max_steps, decoder or data revision together (refused by "
                            "default; every differing setting is listed either way)")
    board.add_argument("--resamples", type=int, default=1000, metavar="N",
                       help="bootstrap resamples for rank stability (default: 1000; 0 skips it)")
    board.set_defaults(handler=_leaderboard)

    compare = commands.add_parser(
        "compare", help="is run A better than run B? a paired bootstrap over the test clips both answered",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="A side is a run directory, a seed group written by `run --seeds` (or any directory holding runs of\n"
               "one identity), or several run directories: `compare A1 A2 --vs B1 B2`. Refused when the protocols,\n"
               "the tasks or a test set's definition differ, or (unless --allow-different-settings) the training\n"
               "budget, decoder or data revision; every other setting that differs is stated.")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="RUN_A RUN_B, or A's runs when --vs is given")
    compare.add_argument("--vs", nargs="+", default=None, metavar="RUN", help="B's runs (a group of seeds)")
    compare.add_argument("--resamples", type=int, default=1000, metavar="N", help="bootstrap resamples (default: 1000)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: 0)")
    compare.add_argument("--common-only", action="store_true", help="compare only the tasks both sides have")
    compare.add_argument("--allow-different-settings", action="store_true",
                         help="compare runs trained with another max_steps, decoder or data revision (refused by "
                              "default; every differing setting is listed either way)")
    compare.add_argument("--output", "--json", dest="json", default=None, metavar="FILE",
                         help="also write the comparison to FILE, as JSON")
    compare.set_defaults(handler=_compare)

    scaffold = commands.add_parser("new-encoder", help="scaffold a submission repository for a new encoder")
    scaffold.add_argument("directory", help="directory to create")
    scaffold.add_argument("--name", default="MyEncoder", help="class name (must end in 'Encoder'; default: MyEncoder)")
    scaffold.set_defaults(handler=_new_encoder)

    package = commands.add_parser("package", help="check an encoder repository and write the submission ZIP")
    package.add_argument("directory", help="the submission directory (as made by new-encoder)")
    package.add_argument("--include-weights", action="store_true", help="put weight files into the ZIP")
    package.add_argument("--output", default=None, metavar="ZIP", help="ZIP path (default: DIR.zip)")
    package.set_defaults(handler=_package)
    return parser


# -- one handler per command (set_defaults above): it reads its arguments and calls the library ----------
def _overrides(args: argparse.Namespace) -> dict:
    """The training field overrides: the generated flags over --args."""
    from lalmbench.config_flags import collect_overrides, parse_mapping_arg

    return {**parse_mapping_arg(args.args, "--args"), **collect_overrides(args)}


def _model_args(args: argparse.Namespace) -> dict:
    from lalmbench.config_flags import parse_mapping_arg

    return parse_mapping_arg(args.model_args, "--model-args")


def _run(args: argparse.Namespace) -> int:
    from lalmbench.run_configs import parse_task_names

    overrides, task_names = _overrides(args), parse_task_names(args.tasks)
    run_args = dict(encoder=args.encoder, train=args.train, eval=args.eval, model_args=_model_args(args),
                    overrides=overrides, output_dir=args.output_dir, force=args.force,
                    allow_download=not args.no_download, write_report=not args.no_report,
                    task_names=task_names, limit=args.limit)
    if args.seeds != 1 and not args.print_config:
        from lalmbench.seeds import run_seeds_command

        return run_seeds_command(args.seeds, **run_args)
    from lalmbench.runner import run_command

    return run_command(**run_args, print_config=args.print_config)


def _demo(args: argparse.Namespace) -> int:
    from lalmbench.demo import demo_command

    data_only = args.output_dir if args.data_only is True else args.data_only
    return demo_command(output_dir=args.output_dir, data_only=data_only, seed=args.seed, overrides=_overrides(args))


def _check(args: argparse.Namespace) -> int:
    from lalmbench.encoders.check import check_command

    return check_command(encoder=args.encoder, model_args=_model_args(args), device=args.device, as_json=args.json)


def _tasks(args: argparse.Namespace) -> int:
    from lalmbench.tasks.listing import tasks_command

    return tasks_command(args.suite)


def _download(args: argparse.Namespace) -> int:
    from lalmbench.data.download import download_command

    return download_command(args.targets, workers=args.workers, split=args.split, home=args.data_home)


def _bench(args: argparse.Namespace) -> int:
    from lalmbench.bench import bench_command

    return bench_command(quick=args.quick, device=args.device, output=args.output, compile_paths=args.compile,
                         measured_steps=args.steps, protocol=args.protocol)


def _report(args: argparse.Namespace) -> int:
    from lalmbench.report.html import report_command

    return report_command(args.run_dir)


def _leaderboard(args: argparse.Namespace) -> int:
    from lalmbench.report.leaderboard import leaderboard_command

    return leaderboard_command(args.run_dirs, baselines=args.baselines, output_dir=args.output_dir,
                               mixed_protocols=args.mixed_protocols, resamples=args.resamples,
                               allow_different_settings=args.allow_different_settings)


def _compare(args: argparse.Namespace) -> int:
    from lalmbench.report.compare import compare_command, split_sides

    runs_a, runs_b = split_sides(args.runs, args.vs)
    return compare_command(runs_a, runs_b, resamples=args.resamples, seed=args.seed, common_only=args.common_only,
                           json_path=args.json, allow_different_settings=args.allow_different_settings)


def _new_encoder(args: argparse.Namespace) -> int:
    from lalmbench.encoders.scaffold import new_encoder_command

    return new_encoder_command(args.directory, class_name=args.name)


def _package(args: argparse.Namespace) -> int:
    from lalmbench.encoders.package import package_command

    return package_command(args.directory, include_weights=args.include_weights, output=args.output)


def main(argv: list[str] | None = None) -> int:
    from lalmbench.errors import LalmbenchError
    from lalmbench.threads import prefer_sleeping_waits

    prefer_sleeping_waits()  # before anything imports torch: OpenMP reads it once (lalmbench.threads)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except LalmbenchError as exc:
        print(f"lalmbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lalmbench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
