"""How long `s4sweep report` takes at scale, and where the time goes (target: 1,000 trials x 19 classes under 10 s).

Run: `python bench/report.py [--variants 100] [--seeds 10] [--images 100] [--replicates 1000] [--profile]`
(or `make bench`). A synthetic sweep run, no MLflow: `variants` x `seeds` trials on one evaluation set with the 19
Cityscapes classes, per-image intersection/union counts for every trial (the bootstrap's input), metrics that agree
with those counts. Timed stages: the results table (results.build_table, as `collect` builds it after downloading),
the report (per-class tables + paired bootstrap of every column against the baseline), the pictures, and writing
results.parquet, md, csv and html (the steps of report.write, timed one by one). `--profile` adds the 15 most
expensive functions. The last line printed is the stages' seconds as one JSON object.

Before/after: `python bench/report.py --rev REV [--repeats 3]` runs REV's own bench/report.py in a temporary
worktree of REV and this tree's, in turns, and prints each stage's median for both and the ratio after/before
(bench/revisions.py). A REV whose bench/report.py predates the JSON line is read from its printed table (to 0.01 s).

Measured at eb2c007 (2026-12-07; `python bench/report.py --rev eb2c007 --repeats 5`, whose eb2c007 column is that
revision's own file; the machine: 2 cores shared with other sessions, load average 3.4-4.1, so a loaded machine),
median of 5 runs, 1,000 trials: results table 0.61 s, per-class tables + paired bootstrap 2.43 s, results.parquet
0.07 s, pictures 1.51 s, report.md 0.02 s, report.csv 0.04 s, report.html 0.04 s; total 4.45 s (target < 10 s met).
Three single runs at load ~0.9 earlier the same day: totals 2.67, 3.85, 4.50 s (the bootstrap 0.70-2.18 s, pictures
1.44-1.73 s). The same comparison of eb2c007 with itself (this tree then only added the JSON line) gave 0.99x on the
total and 0.79x-1.46x on single stages: on this machine a stage's ratio between about 0.75x and 1.5x is noise.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from revisions import HERE, alternate, last_json, print_table, run_python, worktree

from orchestrator import report, results
from orchestrator.tracking import ChildRun
from trainers import metric_names as M
from trainers.data.labels import CITYSCAPES


def synthetic(variants: int, seeds: int, images: int, *, seed: int = 0) -> tuple[list[ChildRun], dict]:
    """`variants` x `seeds` finished trials (child runs and per-image counts); variant v shifts every class's IoU
    by v/4 points, and every image has its own noise."""
    rng = np.random.default_rng(seed)
    classes = CITYSCAPES.classes
    c = len(classes)
    base_iou = rng.uniform(0.05, 0.9, c)
    union = rng.integers(500, 5000, size=(images, c))
    children, per_image = [], {}
    for v in range(variants):
        name = "ce" if v == 0 else f"focal-g{v}"
        for s in range(seeds):
            trial = f"{name}-s{s}"
            p = np.clip(base_iou + v / 400 + rng.normal(0, 0.1, (images, c)), 0, 1)
            inter = np.round(union * p).astype(np.int64)
            iou = inter.sum(0) / union.sum(0)
            metrics = {M.val_class("synth", kind, cls): float(x) for kind in M.PER_CLASS
                       for cls, x in zip(classes, iou, strict=True)}
            metrics |= {M.val("synth", "miou"): float(iou.mean()), M.val("synth", "miou_all"): float(iou.mean()),
                        M.val("synth", "fwiou"): float(iou.mean()), M.val("synth", "pixel_acc"): 0.8,
                        M.val("synth", "ece"): 0.05, M.TRIAL_TIME: float(rng.uniform(3000, 4000))}
            params = {"seed": str(s), "split_seed": "0", "dataset.name": "synth", "loss.name": name.split("-")[0],
                      "loss.options.gamma": "None" if v == 0 else str(v)}
            children.append(ChildRun(f"run-{trial}", trial, "FINISHED", {}, params, metrics))
            per_image[(trial, "synth")] = (inter, union)
    return children, per_image


STAGES: list[tuple[str, float]] = []


def log_stage(name: str, t0: float) -> None:
    STAGES.append((name, time.perf_counter() - t0))


def run_report(children: list[ChildRun], per_image: dict, out: Path, replicates: int) -> None:
    run = results.SweepRun(sweep="bench", run_id="bench-1", status="finished", tracking_uri="", experiment_id="0",
                           parent_run_id="p")
    t0 = time.perf_counter()
    table = results.build_table(run, children, resources=(8.0, 1.0))
    log_stage("results table (build_table)", t0)
    res = results.SweepResults(run=run, table=table, per_image=per_image, params={c.name: c.params for c in children},
                               expected_trials=len(children))
    t0 = time.perf_counter()
    built = report.build(res, report.Options(replicates=replicates))
    log_stage("report: per-class tables + paired bootstrap", t0)
    t0 = time.perf_counter()
    results.save(res.table, out / "results.parquet")
    log_stage("write results.parquet", t0)
    t0 = time.perf_counter()
    figures = {(ct.train, ct.eval): report.pictures(ct, res, out) for ct in built.tables}
    log_stage(f"pictures ({', '.join(p.name for f in figures.values() for _, p in f)})", t0)
    for name, render in (("report.md", lambda: report.to_markdown(built)), ("report.csv", lambda: report.to_csv(built)),
                         ("report.html", lambda: report.to_html(built, figures))):
        t0 = time.perf_counter()
        (out / name).write_text(render(), encoding="utf-8")
        log_stage(f"write {name}", t0)


ROW = re.compile(r"^  (?P<name>.+?)\s+(?P<seconds>\d+\.\d+) s\s+[\d.]+%$")  # a stage's row in the table


def stages_of(tree: Path, args: list[str]) -> dict[str, float | None]:
    """Run `tree`'s own bench/report.py with `tree` on the import path; its stages' seconds and their total."""
    out = run_python(tree, [str(tree / "bench" / "report.py"), *args]).stdout
    found = last_json(out)
    stages = found["stages"] if found else {m["name"]: float(m["seconds"]) for m in map(ROW.match, out.splitlines())
                                             if m}
    return {**stages, "total": sum(stages.values())}


def compare(rev: str, args: argparse.Namespace) -> None:
    passed = [f"--{name}={getattr(args, name)}" for name in ("variants", "seeds", "images", "replicates")]
    with worktree(rev) as tree:
        found = alternate({rev: tree, "this tree": HERE}, args.repeats, lambda t: stages_of(t, passed))
    print(f"report of {args.variants * args.seeds} trials, {args.replicates} replicates; {args.repeats} runs per tree, "
          f"alternating")
    print_table(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--images", type=int, default=100, help="validation images per trial (bootstrap input)")
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rev", help="also measure this git revision (its own bench/report.py), alternating")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tree with --rev")
    args = parser.parse_args()
    if args.rev:
        compare(args.rev, args)
        return
    t0 = time.perf_counter()
    children, per_image = synthetic(args.variants, args.seeds, args.images)
    generated = time.perf_counter() - t0
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        if profiler:
            profiler.enable()
        run_report(children, per_image, Path(tmp), args.replicates)
        if profiler:
            profiler.disable()
    total = sum(seconds for _, seconds in STAGES)
    trials = args.variants * args.seeds
    print(f"report of {trials} trials x {len(CITYSCAPES.classes)} classes, {args.images} images each, "
          f"{args.replicates} bootstrap replicates, {args.variants - 1} columns tested against the baseline")
    print(f"(synthetic data generated in {generated:.1f} s, not counted)")
    for name, seconds in STAGES:
        print(f"  {name:<52} {seconds:7.2f} s  {100 * seconds / total:5.1f}%")
    print(f"  {'total':<52} {total:7.2f} s  (target < 10 s: {'met' if total < 10 else 'MISSED'})")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(15)
    print(json.dumps({"bench": "report", "trials": trials, "stages": dict(STAGES)}))


if __name__ == "__main__":
    main()
