"""The `s4sweep` command: subcommands in a plain dict, logging configured here once.

User errors (a bad sweep file, a broken dataset, a missing checkpoint) print one line and exit 2; `--debug` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("s4sweep")


class UsageError(Exception):
    """The command cannot run as asked; the message says what to change."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from orchestrator.runs import RunError
    from orchestrator.spec import SpecError
    from orchestrator.tracking import TrackingError
    from trainers.config import ConfigError
    from trainers.data import DataError

    return (UsageError, SpecError, ConfigError, DataError, FileNotFoundError, RunError, TrackingError)


# --- commands -------------------------------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.spec import describe, load_spec, resolve_spec_path

    spec = load_spec(resolve_spec_path(args.spec))
    if args.dry_run:
        print(describe(spec))
        return 0
    from orchestrator.sweep import launch

    outcome = launch(spec, storage=args.storage, run_name=args.run_name, resume=args.resume,
                     tracking_uri=args.tracking_uri, address=args.address, max_concurrent=args.max_concurrent,
                     trigger=args.trigger)
    print(outcome.table)
    print(f"sweep run {outcome.run.run_id}: {outcome.run.status} (MLflow experiment {spec.name!r}, "
          f"parent run {outcome.run.parent_run_id}, tracking {outcome.run.tracking_uri})")
    return outcome.exit_code


def cmd_ui(args: argparse.Namespace) -> int:
    from orchestrator.runs import storage_root
    from orchestrator.sweep import tracking_uri_for
    from orchestrator.tracking import serve_ui

    uri = tracking_uri_for(storage_root(args.storage), args.tracking_uri)
    print(f"MLflow UI for {uri} on http://{args.host}:{args.port} (Ctrl-C stops it)")
    return serve_ui(uri, host=args.host, port=args.port)


def cmd_train(args: argparse.Namespace) -> int:
    from orchestrator.console import ConsoleReporter
    from orchestrator.spec import load_spec, resolve_spec_path
    from trainers.s4gan.train import train

    spec = load_spec(resolve_spec_path(args.spec))
    trials, names = spec.trials(), spec.trial_names()
    if not 0 <= args.trial < len(trials):
        raise UsageError(f"--trial {args.trial}: {spec.source} has {len(trials)} trials (0..{len(trials) - 1})")
    cfg, name = trials[args.trial], names[args.trial]
    out = Path(args.out or Path("runs") / "train" / f"{spec.name}-{name}").resolve()
    log.info("trial %d of %s (%s) -> %s", args.trial, spec.name, name, out)
    reporter = ConsoleReporter(total=cfg.schedule.iterations, desc=name)
    resume = Path(args.resume).resolve() if args.resume else None
    with reporter:
        result = train(cfg, reporter=reporter, workdir=out, resume=resume)
    reporter.print_tables(result)
    print(f"metrics: {out / 'metrics.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from orchestrator.console import print_eval
    from trainers.s4gan.predict import evaluate_checkpoint

    result = evaluate_checkpoint(Path(args.checkpoint), dataset=args.dataset, root=args.root, split=args.split,
                                 label_set=args.label_set, eval_size=tuple(args.eval_size) if args.eval_size else None,
                                 out=Path(args.out) if args.out else None,
                                 save_predictions=Path(args.save_predictions) if args.save_predictions else None)
    print_eval(result)
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from trainers.data.synth import generate

    n_val = args.n_val if args.n_val is not None else max(2, args.n // 4)
    summary = generate(Path(args.out).resolve(), n_train=args.n, n_val=n_val, seed=args.seed,
                       size=(args.height, args.width))
    print(f"wrote {args.n} train + {n_val} val scenes to {Path(args.out).resolve()}")
    for name, share in summary.frequencies.items():
        print(f"  {name:<14} {100 * share:6.2f}%")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from trainers.data.check import check_dataset

    problems, counted = check_dataset(Path(args.root).resolve(), splits=args.split)
    for line in problems:
        print(line)
    print(f"checked {counted} image/label pairs: {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_spaces(args: argparse.Namespace) -> int:
    import os
    import re

    from orchestrator.spec import load_spec, shipped_spaces

    for path in shipped_spaces():
        needs = sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text())) - set(os.environ))
        # count the trials even when a dataset root is not set here: the root does not change the grid
        spec = load_spec(path, env={**os.environ, **{v: f"<{v}>" for v in needs}})
        note = f"  (needs {', '.join(needs)})" if needs else ""
        print(f"{path.stem:<24} {len(spec.trials()):>4} trials  {spec.description}{note}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sweep": cmd_sweep,
    "train": cmd_train,
    "eval": cmd_eval,
    "data synth": cmd_data_synth,
    "data check": cmd_data_check,
    "spaces": cmd_spaces,
    "ui": cmd_ui,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s4sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sweep", help="run a sweep file (default: the shipped smoke sweep)")
    p.add_argument("spec", nargs="?", help="sweep file path or shipped name (see `s4sweep spaces`)")
    p.add_argument("--dry-run", action="store_true", help="print the trial count, what varies and a compute estimate")
    p.add_argument("--resume", nargs="?", const="", metavar="RUN",
                   help="continue the latest unfinished run of this sweep, or the named run")
    p.add_argument("--run-name", help="the new run's id (default <sweep>-<UTC timestamp>)")
    p.add_argument("--address", help="Ray cluster to attach to (default: $RAY_ADDRESS, else a private local one)")
    p.add_argument("--storage", help="run directory root or shared storage (default: $S4SWEEP_HOME, else ./runs)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else embedded)")
    p.add_argument("--trigger", default="manual", help="recorded on the run, e.g. nightly")

    p = sub.add_parser("train", help="train one trial of a sweep file, without Ray")
    p.add_argument("spec")
    p.add_argument("--trial", type=int, default=0, help="index into the sweep's trials (default 0)")
    p.add_argument("--out", help="trial directory (default runs/train/<sweep>-<trial>)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint directory")

    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset")
    p.add_argument("checkpoint", help="a checkpoint directory written by train")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root")
    p.add_argument("--label-set")
    p.add_argument("--split", default="val")
    p.add_argument("--eval-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--out", help="directory for metrics.json (default: beside the checkpoint)")
    p.add_argument("--save-predictions", metavar="DIR", help="one raw-label-id PNG per image (benchmark format)")

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="write generated road scenes in the Cityscapes layout")
    p.add_argument("--out", required=True)
    p.add_argument("--layout", choices=["cityscapes"], default="cityscapes")
    p.add_argument("--n", type=int, default=48, help="train images (val gets a quarter unless --n-val)")
    p.add_argument("--n-val", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p = data.add_parser("check", help="scan a dataset tree and name every broken file")
    p.add_argument("root")
    p.add_argument("--split", nargs="+", default=["train", "val"])

    sub.add_parser("spaces", help="list the shipped sweep files")
    p = sub.add_parser("ui", help="serve the MLflow UI on the embedded store (127.0.0.1)")
    p.add_argument("--storage")
    p.add_argument("--tracking-uri")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    name = args.command if args.command != "data" else f"data {args.data_command}"
    try:
        return COMMANDS[name](args)
    except _user_errors() as e:
        if args.debug:
            raise
        print(f"s4sweep {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"s4sweep {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
