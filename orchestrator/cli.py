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

from orchestrator.cli_parser import build_parser

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
    from trainers.data.tables import DataError
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
    from orchestrator.runs import train_dir
    from orchestrator.spec import load_spec, resolve_spec_path
    from trainers.s4gan.train import train

    spec = load_spec(resolve_spec_path(args.spec), max_trials=args.max_trials)
    trials, names = spec.trials(), spec.trial_names()
    if not 0 <= args.trial < len(trials):
        raise UsageError(f"--trial {args.trial}: {spec.source} has {len(trials)} trials (0..{len(trials) - 1})")
    cfg, name = trials[args.trial], names[args.trial]
    out = Path(args.out or train_dir(f"{spec.name}-{name}")).resolve()
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
    from trainers.data.roots import synth_val_images

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
