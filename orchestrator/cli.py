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
    from orchestrator.storage import StorageError
    from orchestrator.submit import SubmitError
    from orchestrator.tracking import TrackingError
    from trainers.config import ConfigError
    from trainers.data import DataError
    from trainers.s4gan.checkpoint import CheckpointError  # torch-free at import

    return (UsageError, SpecError, ConfigError, DataError, FileNotFoundError, RunError, TrackingError,
            SubmitError, CheckpointError, StorageError)


# --- commands -------------------------------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.spec import describe, load_spec, resolve_spec_path, weight_warnings

    spec = load_spec(resolve_spec_path(args.spec), max_trials=args.max_trials)
    if args.dry_run:
        print(describe(spec))
        return 0
    for line in weight_warnings(spec.trials()):  # the dry run prints them; a real launch logs them before it starts
        log.warning(line.removeprefix("WARNING: "))
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

    spec = load_spec(resolve_spec_path(args.spec), max_trials=args.max_trials)
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
                                 label_set=args.label_set, remap=args.remap,
                                 eval_size=tuple(args.eval_size) if args.eval_size else None,
                                 out=Path(args.out) if args.out else None,
                                 save_predictions=Path(args.save_predictions) if args.save_predictions else None)
    print_eval(result)
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from trainers.data import synth_val_images

    n_val = args.n_val if args.n_val is not None else synth_val_images(args.n)
    out = Path(args.out).resolve()
    if args.layout == "idd":  # sizes vary by design (trainers/data/synth_idd.py SIZES): --height/--width do not apply
        from trainers.data.synth_idd import generate as generate_idd

        idd = generate_idd(out, n_train=args.n, n_val=n_val, seed=args.seed)
        print(f"wrote {args.n} train + {n_val} val IDD-layout scenes (polygons and label PNGs) to {out}")
        for label_set, share in idd.void_share.items():
            print(f"  {label_set:<7} void (ignored) {100 * share:6.2f}% of train pixels")
        return 0
    from trainers.data.synth import generate

    summary = generate(out, n_train=args.n, n_val=n_val, seed=args.seed, size=(args.height, args.width))
    print(f"wrote {args.n} train + {n_val} val scenes to {out}")
    for name, share in summary.frequencies.items():
        print(f"  {name:<14} {100 * share:6.2f}%")
    return 0


def cmd_data_prepare_idd(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trainers.data.idd import prepare_idd

    root = Path(args.root).resolve()
    with tqdm(desc="rasterising", unit="file", dynamic_ncols=True) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = prepare_idd(root, args.label_set, splits=args.split, workers=args.workers,
                             skip_unknown=args.skip_unknown, progress=progress)
    for line in report.problems:
        print(line)
    print(f"{report.files} polygon files, label sets {', '.join(dict.fromkeys(args.label_set))}: "
          f"{report.written} PNGs written, {report.current} already up to date, {report.failed} file(s) failed, "
          f"{len(report.problems)} problem(s)")
    return 1 if report.problems else 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from trainers.data.check import scan_dataset

    report = scan_dataset(Path(args.root).resolve(), splits=args.split, layout=args.layout, label_sets=args.label_set)
    for line in report.problems:
        print(line)
    print(f"checked {report.root}: {report.summary()}")
    return 1 if report.problems else 0


def cmd_submit(args: argparse.Namespace) -> int:
    import os

    from orchestrator.spec import DEFAULT_MAX_TRIALS, load_spec, resolve_spec_path
    from orchestrator.submit import plan, submit

    address = args.address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UsageError("no cluster: pass --address http://<head>:8265 (or set RAY_API_SERVER_ADDRESS)")
    path = resolve_spec_path(args.spec)
    job = plan(load_spec(path, max_trials=args.max_trials), path, tracking_uri=args.tracking_uri,
               storage=args.storage, run_name=args.run_name, trigger=args.trigger, max_concurrent=args.max_concurrent,
               max_trials=args.max_trials if args.max_trials != DEFAULT_MAX_TRIALS else None)
    return submit(job, address=address, wait=args.wait)


def _sweep_name(arg: str) -> str:
    """`report`/`regress` take what `sweep` took: a sweep name, a shipped file's stem (`adaptive_vs_static`, whose
    sweep is named `adaptive-vs-static`) or a sweep file's path; the last two give the file's `name:`."""
    from orchestrator.spec import SpecError, resolve_spec_path
    from orchestrator.spec.files import read_sweep_file

    try:
        data, _ = read_sweep_file(resolve_spec_path(arg))
    except SpecError:
        return arg  # not a sweep file: a sweep name
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else arg


def cmd_report(args: argparse.Namespace) -> int:
    import tempfile

    from orchestrator import regress, report, results

    tolerances = _tolerances(args.tolerance)
    runs = _report_runs(args)
    if len(runs) > 1 and args.emit_baseline:
        raise UsageError(f"--emit-baseline takes one run (a baseline pins one sweep run), but got {len(runs)}: "
                         f"{', '.join(r.run_id for r in runs)}")
    combined = "" if len(runs) == 1 else "report-" + "+".join(r.run_id for r in runs)
    out = results.output_dir(runs[0], combined or "report", args.out)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    with tempfile.TemporaryDirectory(prefix="s4sweep-report-") as cache:
        collected = [results.collect(run, cache=Path(cache) / run.run_id) for run in runs]
        try:
            options = [report.options_for(res, axis=args.columns, small_objects=args.small_objects)
                       for res in collected]
            built, res = (report.build(collected[0], options[0]), collected[0]) if len(runs) == 1 else \
                report.combine(collected, options)
            report.write(built, res, out, formats)
        except ValueError as e:  # an unknown --columns axis or --format
            raise UsageError(str(e)) from None
    for run in runs:
        report.publish(run, out, combined or "report")
    print(report.to_markdown(built))
    print(f"report of run {', '.join(r.run_id for r in runs)}: {out} (also on the MLflow parent run of each, under "
          f"{combined or 'report'}/)")
    if args.emit_baseline:
        try:
            regress.emit_baseline(res, built, Path(args.emit_baseline).resolve(), tolerances=tolerances)
        except regress.BaselineError as e:
            raise UsageError(str(e)) from None
        print(f"baseline written: {Path(args.emit_baseline).resolve()}")
    return 0


def _report_runs(args: argparse.Namespace) -> list:
    """The runs a report covers: the latest ended run of each sweep; or one --run per sweep; or one sweep and any
    number of its runs; or runs by id alone."""
    from orchestrator import results

    sweeps, ids = [_sweep_name(s) for s in args.sweep], args.run or []
    if not ids:
        pairs: list[tuple[str | None, str | None]] = [(s, None) for s in sweeps]
    elif len(sweeps) == len(ids):
        pairs = list(zip(sweeps, ids, strict=True))
    elif len(sweeps) <= 1:
        pairs = [(sweeps[0] if sweeps else None, run) for run in ids]
    else:
        raise UsageError(f"give one --run per sweep, one sweep and any number of its runs, or --run alone; but got "
                         f"{len(sweeps)} sweeps and {len(ids)} --run")
    if not pairs:
        raise UsageError("name a sweep (s4sweep report SWEEP [SWEEP ...]) or a run (--run RUN)")
    return [results.find_run(s, r, tracking_uri=args.tracking_uri, storage=args.storage) for s, r in pairs]


def cmd_regress(args: argparse.Namespace) -> int:
    import tempfile

    from orchestrator import regress, report, results

    try:
        baseline = regress.read_baseline(Path(args.baseline))
    except regress.BaselineError as e:
        raise UsageError(str(e)) from None
    sweep = _sweep_name(args.sweep)
    if baseline["sweep"] != sweep:
        raise UsageError(f"baseline {args.baseline}: pins sweep {baseline['sweep']!r}, not {sweep!r}; pass that "
                         "sweep's baseline (or regress that sweep)")
    run = results.find_run(sweep, args.run, tracking_uri=args.tracking_uri, storage=args.storage)
    before = results.previous_run(run, storage=args.storage)
    with tempfile.TemporaryDirectory(prefix="s4sweep-regress-") as cache:
        res = results.collect(run, cache=Path(cache))
        previous = results.collect(before, cache=Path(cache) / "previous", artifacts=False) if before else None
        verdict = regress.compare(res, baseline, baseline_file=args.baseline, previous=previous)
    out = results.output_dir(run, "regress", args.out)
    regress.write(verdict, out)
    report.publish(run, out, "regress")
    if args.webhook:
        regress.notify(args.webhook, verdict)
    print(regress.to_markdown(verdict))
    print(f"verdict of run {run.run_id}: {out} (also on MLflow parent run {run.parent_run_id}, under regress/)")
    return verdict.exit_code


def _tolerances(pairs: list[str] | None) -> dict[str, float]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"--tolerance must be KEY=NUMBER (e.g. miou_abs=0.01), but got {pair!r}")
    return out


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
    "data prepare-idd": cmd_data_prepare_idd,
    "data check": cmd_data_check,
    "spaces": cmd_spaces,
    "report": cmd_report,
    "regress": cmd_regress,
    "ui": cmd_ui,
    "submit": cmd_submit,
}


def build_parser() -> argparse.ArgumentParser:
    import os

    from trainers.data.labels_idd import ID_TYPE
    from trainers.data.synth import SIZE as SYNTH_SIZE

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
    p.add_argument("--storage", help="run directory root: a path (shared storage on several nodes) or an object-store "
                                     "URI, s3://bucket/prefix (default: $S4SWEEP_HOME, else ./runs)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    _max_trials(p)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else embedded)")
    p.add_argument("--trigger", default="manual", help="recorded on the run, e.g. nightly")

    p = sub.add_parser("train", help="train one trial of a sweep file, without Ray")
    p.add_argument("spec")
    p.add_argument("--trial", type=int, default=0, help="index into the sweep's trials (default 0)")
    p.add_argument("--out", help="trial directory (default runs/train/<sweep>-<trial>)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint directory")
    _max_trials(p)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset")
    p.add_argument("checkpoint", help="a checkpoint directory written by train")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root")
    p.add_argument("--label-set")
    p.add_argument("--remap", help="declared remap from the model's label set, e.g. level4->cs19")
    p.add_argument("--split", default="val")
    p.add_argument("--eval-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--out", help="directory for metrics.json (default: beside the checkpoint)")
    p.add_argument("--save-predictions", metavar="DIR", help="one raw-label-id PNG per image (benchmark format)")

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="write generated road scenes in the Cityscapes or the IDD layout")
    p.add_argument("--out", required=True)
    p.add_argument("--layout", choices=["cityscapes", "idd"], default="cityscapes",
                   help="idd: polygon JSON of varied sizes plus the label PNGs of every label set")
    p.add_argument("--n", type=int, default=48, help="train images (val gets a quarter unless --n-val)")
    p.add_argument("--n-val", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=SYNTH_SIZE[0], help="cityscapes layout only")
    p.add_argument("--width", type=int, default=SYNTH_SIZE[1], help="cityscapes layout only")
    p = data.add_parser("prepare-idd", help="rasterise IDD polygons into *_gtFine_label<set>Ids.png beside them")
    p.add_argument("root", help="the unpacked IDD root (leftImg8bit/, gtFine/)")
    p.add_argument("--label-set", nargs="+", default=["level3"], choices=list(ID_TYPE),
                   help="one or more label sets (default level3, the benchmark's 26 classes)")
    p.add_argument("--split", nargs="+", help="splits under gtFine/ (default: every one there)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: every core)")
    p.add_argument("--skip-unknown", action="store_true",
                   help="write PNGs for files with unknown labels too, skipping those objects (still reported)")
    p = data.add_parser("check", help="scan a dataset tree (Cityscapes or IDD) and name every broken file")
    p.add_argument("root")
    p.add_argument("--split", nargs="+", default=["train", "val"])
    p.add_argument("--layout", choices=["cityscapes", "idd"], help="default: detected from the files")
    p.add_argument("--label-set", nargs="+", choices=list(ID_TYPE),
                   help="IDD: label PNGs to check (default: every label set with prepared PNGs)")

    p = sub.add_parser("submit", help="run a sweep as a Ray job on a remote cluster (see cluster/README.md)")
    p.add_argument("spec", help="sweep file inside the project, or shipped name")
    p.add_argument("--address", help="the cluster's job API, http://<head>:8265 (default: $RAY_API_SERVER_ADDRESS)")
    p.add_argument("--wait", action="store_true", help="follow the job's logs; exit 0 if it succeeded, else 1")
    p.add_argument("--tracking-uri", help="the MLflow server the trials log to (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--storage", help="shared storage on the cluster (default: the cluster's $S4SWEEP_HOME)")
    p.add_argument("--run-name", help="the run id and submission id (default <sweep>-<UTC timestamp>)")
    p.add_argument("--trigger", default="manual", help="recorded on the run, e.g. nightly")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    _max_trials(p)

    p = sub.add_parser("report", help="per-class tables, statistics, pictures and cost of one or several sweep runs")
    p.add_argument("sweep", nargs="*", help="sweep names or files; several: one table per shared evaluation set "
                                            "with every run's columns")
    p.add_argument("--run", action="append", help="a run id (default: the latest finished or failed run of each "
                                                  "sweep); repeat it for several runs")
    p.add_argument("--format", default="md,csv,html,png", help="comma-separated: md, csv, html, png (default all)")
    p.add_argument("--out", help="output folder (default: <run directory>/report)")
    p.add_argument("--columns", metavar="AXIS", help="column axis: variant (default) or a varied param, e.g. seed")
    p.add_argument("--small-objects", action="store_true",
                   help="recall by object size, from each trial's final evaluation")
    p.add_argument("--emit-baseline", metavar="FILE", help="also write a baseline JSON for `s4sweep regress`")
    p.add_argument("--tolerance", action="append", metavar="KEY=VALUE",
                   help="with --emit-baseline: miou_abs, iou_abs (fractions), wall_rel, seed_std_k")
    p.add_argument("--storage")
    p.add_argument("--tracking-uri")

    p = sub.add_parser("regress", help="compare a sweep run with a pinned baseline (exit 0 pass, 1 regression, "
                                       "2 unusable inputs)")
    p.add_argument("sweep", help="the sweep's name")
    p.add_argument("--baseline", required=True, metavar="FILE", help="written by `report --emit-baseline`")
    p.add_argument("--run", help="a run id (default: the latest finished or failed run of the sweep)")
    p.add_argument("--out", help="output folder (default: <run directory>/regress)")
    p.add_argument("--webhook", metavar="URL", help="POST the verdict as JSON to this URL")
    p.add_argument("--storage")
    p.add_argument("--tracking-uri")

    sub.add_parser("spaces", help="list the shipped sweep files")
    p = sub.add_parser("ui", help="serve the MLflow UI on the embedded store (127.0.0.1)")
    p.add_argument("--storage")
    p.add_argument("--tracking-uri")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    return parser


def _max_trials(parser: argparse.ArgumentParser) -> None:
    from orchestrator.spec import DEFAULT_MAX_TRIALS

    parser.add_argument("--max-trials", type=_positive_int, default=DEFAULT_MAX_TRIALS, metavar="N",
                        help=f"refuse a sweep of more than N trials (default {DEFAULT_MAX_TRIALS}); a larger grid "
                             "is usually a typo")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}")
    return value


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
