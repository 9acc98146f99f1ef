"""The `s4sweep` command line: every subcommand's arguments, in one parser (orchestrator/cli.py runs them)."""

from __future__ import annotations

import argparse
import os

from orchestrator.spec import DEFAULT_MAX_TRIALS
from trainers.data.labels_idd import ID_TYPE
from trainers.data.synth import SIZE as SYNTH_SIZE

DESCRIPTION = "Loss-function sweeps of the s4GAN semi-supervised segmentation trainer, on Ray and MLflow."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s4sweep", description=DESCRIPTION)
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
