"""What a trial pays before its first training step: imports in a fresh interpreter, then config -> data -> model.

Run: `python bench/trial_startup.py [--repeats 5]` (or `make bench`); before/after: `--rev REV`.
Every measurement is a fresh interpreter (a Ray worker is one), run with the tree under test first on PYTHONPATH:
- imports: the wall time of `python -c "import ..."` for the modules the trainer needs and for those a Ray worker
  imports to run a trial (`run_trial`'s module and what it imports when it runs: `imports()` names them for each
  tree), beside `python -c pass` (the interpreter's own start); and which heavy libraries each set pulls in;
- a micro trial on generated data (1 thread, no Ray) through `TrialConfig.from_dict` and `trainers.s4gan.train.train`
  with a Reporter that notes when the first training metrics arrive: the config's parse and validation, train()'s
  set-up before its first step (its first metrics call less the steps it reports: `time/step_s` x step), within it
  the dataset's open/scan (`train_data`) and the model build (`build_runtime`) where train.py still calls them, the
  whole train(), and the process from its spawn to the first step;
- the same trial through the CLI, `s4sweep train SPEC --trial 0 --out DIR`, as a whole process.
A phase a tree cannot measure (an interface it lacks) reads "n/a". The first run of each tree is a warm-up (it
compiles the .pyc files and generates the data) and is not counted; the table gives the median and the minimum of
the others (the minimum: the run least disturbed by the machine's other work).

With `--rev REV` a temporary detached worktree of REV is measured too, in turns with this tree (bench/revisions.py),
by this same file (so the phases are timed the same way), and the table gives the ratio after/before.

Measured at eb2c007 (2026-12-07, `python bench/trial_startup.py --rev eb2c007 --repeats 5`: eb2c007 against itself
plus this file; 2 cores shared with other sessions, load average 2.0-3.0 during the run, so not an idle machine),
median / min of 5 runs, eb2c007's column:
  python -c pass 0.03 s; `import trainers.config, trainers.s4gan.train` 5.7 / 4.7 s wall (4.4 / 3.6 s of it inside
  the process: torch, torchvision, numpy, PIL); the worker's imports (orchestrator.tune_backend, orchestrator.spec,
  trainers.data, trainers.s4gan.train) 10.6 / 10.4 s wall (8.4 / 8.1 s inside: the same plus ray, mlflow, pyarrow,
  pandas, scipy, sqlalchemy, yaml);
  the micro trial: import 4.7 / 3.9 s, from_dict 0.004 s, train()'s set-up before the first step 0.061 / 0.042 s
  (train_data 0.046 / 0.030 s, build_runtime 0.012 / 0.009 s, the rest 0.002 s), train() in all 1.54 / 1.32 s for 6
  iterations, fresh process -> first training step 4.8 / 4.0 s; `s4sweep train` as a whole process 7.4 / 6.9 s.
So a trial's start-up is its imports: the set-up inside train() is ~1% of the time to the first step.
The A/A ratios of that run were 0.84x-1.04x on every row above 0.01 s. An earlier run of 3, at load 4-5, gave
0.89x-2.05x with the same code on both sides (and 7.5-11.6 s for the trainer's imports inside the process): on a
loaded machine compare the minima, and rerun before believing a ratio under about 1.3x.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from revisions import HERE, alternate, last_json, print_table, run_python, worktree

TRAINER_IMPORTS = ("trainers.config", "trainers.s4gan.train")


def imports(tree: Path) -> dict[str, tuple[str, ...]]:
    """What the trainer needs; and what a Ray worker imports to run one trial in this tree: run_trial's module and
    the modules it imports when it runs (before issue 20 it also imported orchestrator.spec, and trainers.data held
    what data/roots.py holds now)."""
    if (tree / "trainers" / "data" / "roots.py").is_file():
        worker = ("orchestrator.tune_backend", "trainers.data.roots", "trainers.s4gan.train")
    else:
        worker = ("orchestrator.tune_backend", "orchestrator.spec", "trainers.data", "trainers.s4gan.train")
    return {"trainer": TRAINER_IMPORTS, "worker": worker}
LIBRARIES = ("torch", "torchvision", "numpy", "PIL", "scipy", "pandas", "pyarrow", "matplotlib", "ray", "mlflow",
             "sqlalchemy", "optuna", "boto3", "yaml")
# `python -c` with this: the modules' import time inside the process, and the heavy libraries they loaded
PROBE = ("import json, sys, time; t0 = time.perf_counter(); import {modules}; print(json.dumps({{'seconds': "
         "time.perf_counter() - t0, 'libraries': [lib for lib in {libraries!r} if lib in sys.modules]}}))")
MICRO = {"preset": "micro", "dataset": {"name": "synth"}, "device": {"device": "cpu", "threads": 1, "workers": 0}}
PHASES = {"dataset open/scan (train_data)": "train_data", "model build (build_runtime)": "build_runtime"}


# --- inside the fresh interpreter (--child) ---------------------------------------------------------------------


class FirstStep:
    """A Reporter that keeps the time of the first call carrying training metrics, and that call's step."""

    def __init__(self, step_key: str) -> None:
        self.step_key = step_key
        self.at: float | None = None
        self.step, self.step_s = 0, 0.0

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        if self.at is None and self.step_key in values:
            self.at, self.step, self.step_s = time.perf_counter(), step, float(values[self.step_key])

    def artifact(self, path: Path) -> None:
        pass

    def checkpoint(self, step: int, directory: Path, values: Mapping[str, float]) -> None:
        pass

    def result(self, result: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:  # a call another revision's Reporter protocol adds: ignored, not a crash
        return lambda *args, **kwargs: None


def timed(module: Any, name: str, spent: dict[str, float]) -> None:
    """Wrap `module.name` (when it exists) so the seconds of its first call land in spent[name]."""
    inner = getattr(module, name, None)
    if not callable(inner):
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent.setdefault(name, time.perf_counter() - t0)

    setattr(module, name, wrapper)


def child_trial(spawned: float, workdir: Path) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    t0 = time.perf_counter()
    from trainers import metric_names
    from trainers.config import TrialConfig
    from trainers.s4gan import train as train_module

    found["trial: import trainers (in process)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cfg = TrialConfig.from_dict(MICRO)
    found["trial: config parse + validation (from_dict)"] = time.perf_counter() - t0
    spent: dict[str, float] = {}
    for name in PHASES.values():
        timed(train_module, name, spent)
    reporter = FirstStep(getattr(metric_names, "STEP_TIME", "time/step_s"))
    where = {"workdir": workdir} if "workdir" in inspect.signature(train_module.train).parameters else {}
    started, t0 = time.time(), time.perf_counter()
    train_module.train(cfg, reporter=reporter, **where)
    total = time.perf_counter() - t0
    setup = None if reporter.at is None else reporter.at - t0 - reporter.step * reporter.step_s
    found["trial: train() set-up before the first step"] = setup
    for phase, name in PHASES.items():
        found[f"  {phase}"] = spent.get(name)
    found["  other set-up (seed, dataset info, remaps, ...)"] = (
        None if setup is None or len(spent) < len(PHASES) else setup - sum(spent.values()))
    found[f"trial: train() total ({cfg.schedule.iterations} iterations)"] = total
    found["trial: fresh process -> first training step"] = (
        None if setup is None else started - spawned + setup)
    return found


# --- the driver ---------------------------------------------------------------------------------------------------


def fresh(tree: Path, args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = run_python(tree, args)
    return time.perf_counter() - t0, proc


LIBS: dict[tuple[Path, str], list[str]] = {}  # (tree, import set) -> the heavy libraries it loads (or its error)


def measure(tree: Path, scratch: Path) -> dict[str, float | None]:
    this = str(Path(__file__).resolve())
    found: dict[str, float | None] = {"python -c pass (the interpreter)": fresh(tree, ["-c", "pass"])[0]}
    for which, modules in imports(tree).items():
        try:
            wall, proc = fresh(tree, ["-c", PROBE.format(modules=", ".join(modules), libraries=LIBRARIES)])
            child = last_json(proc.stdout) or {}
        except RuntimeError as e:  # a module this tree lacks
            wall, child = None, {"libraries": [str(e).strip().splitlines()[-1]]}
        found[f"import {which} modules: python -c wall"] = wall
        found[f"import {which} modules: in the process"] = child.get("seconds")
        LIBS.setdefault((tree, which), child.get("libraries", []))
    try:
        child = last_json(run_python(tree, [this, "--child", str(time.time()), "--workdir",
                                            tempfile.mkdtemp(dir=scratch)]).stdout) or {}
    except RuntimeError as e:
        print(f"    the trial failed in {tree}: {str(e)[-400:]}", file=sys.stderr)
        child = {}
    found |= child
    try:
        found["CLI: s4sweep train (micro, whole process)"] = fresh(tree, [
            "-m", "orchestrator.cli", "train", str(scratch / "micro.yaml"), "--trial", "0", "--out",
            tempfile.mkdtemp(dir=scratch)])[0]
    except RuntimeError as e:
        print(f"    the CLI failed in {tree}: {str(e)[-400:]}", file=sys.stderr)
        found["CLI: s4sweep train (micro, whole process)"] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="counted runs per tree (after one warm-up)")
    parser.add_argument("--rev", help="also measure this git revision, alternating with this tree")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_trial(float(args.child), Path(args.workdir))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        os.environ["S4SWEEP_HOME"] = str(scratch / "home")  # the generated data, made once by the warm-up
        (scratch / "micro.yaml").write_text(json.dumps({"name": "bench-startup", "base": MICRO}))  # JSON is YAML
        run = functools.partial(measure, scratch=scratch)
        with contextlib.ExitStack() as stack:
            trees = {args.rev: stack.enter_context(worktree(args.rev))} if args.rev else {}
            trees["this tree"] = HERE
            alternate(trees, 1, run)  # the warm-up
            found = alternate(trees, args.repeats, run)
    print(f"trial start-up, fresh interpreters, {args.repeats} runs per tree after a warm-up"
          + (", alternating" if args.rev else ""))
    print_table(found)
    for (tree, which), libs in LIBS.items():
        label = next(label for label, t in trees.items() if t == tree)
        print(f"{label}: import {which} loads {', '.join(libs) or '-'}")


if __name__ == "__main__":
    main()
