"""`s4sweep sweep`: a sweep file becomes a tracked, resumable sweep run (no Ray import here: see tune_backend).

Order of work, so that nothing is scheduled on a broken footing: resolve the storage (a path or an object store) and
probe it, the run id, prepare and scan every dataset, check the tracking server answers, attach to Ray and have every
other node read a probe from the storage, create (or find again) the run record and the MLflow parent run, then hand
the trials to Ray Tune; afterwards reconcile orphaned child runs, close the parent with the sweep's status and
print the comparison. A launch that fails leaves no run record without its parent run, and no parent run RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator import report, results, runs
from orchestrator.spec import OptunaSearch, SweepSpec
from orchestrator.storage import Location
from trainers import metric_names as M
from trainers.config import TrialConfig
from trainers.data.check import scan_dataset
from trainers.data.roots import resolve_root, s4sweep_home
from trainers.data.tables import DataError, dataset_info

log = logging.getLogger(__name__)
INTERRUPTED = 130
SHOWN_PROBLEMS = 50  # of a broken dataset, in the error that stops the launch


@dataclass(frozen=True)
class SweepOutcome:
    run: runs.RunState
    exit_code: int
    table: str


def tracking_uri_for(root: Location, given: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the embedded SQLite store in the storage root (a local one:
    an object store cannot hold a database that several processes write)."""
    from orchestrator.tracking import embedded_uri

    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if root.local is None:
        raise runs.RunError(f"storage {root}: an object store keeps no embedded MLflow store; pass --tracking-uri "
                            "http://<mlflow server> (or set MLFLOW_TRACKING_URI); the server may keep its artifacts "
                            f"in the same store (mlflow server --artifacts-destination {runs.mlflow_artifacts(root)})")
    return embedded_uri(root.local)


def artifact_root(root: Location) -> Path | str:
    """Where a database tracking store keeps artifacts: beside the runs, on the filesystem or the object store."""
    return runs.mlflow_artifacts(root)


def prepare_data(trials: list[TrialConfig], home: Path) -> tuple[list[TrialConfig], dict[str, str]]:
    """Resolve every dataset root to an absolute path (generating `synth`/`synth_idd` data under `home` where needed),
    check every evaluation set's remap, and scan each tree once per label set; any broken file stops the launch
    here. Returns the trials with their roots filled in."""
    from trainers.data.cityscapes import file_list_hash
    from trainers.data.remap import eval_remaps
    from trainers.data.roots import data_identity, split_pairs

    fingerprints: dict[str, str] = {}
    scanned: set[tuple[Path, str]] = set()

    def root_of(name: str, root: str | None, label_set: str | None, synth_images: int) -> str:
        path = resolve_root(name, root, synth_images=synth_images, home=home)
        info = dataset_info(name, label_set)
        if (path, info.label_set) not in scanned:
            scanned.add((path, info.label_set))
            scan = scan_dataset(path, splits=("train", "val"), table=info.labels, layout=info.layout,
                                label_sets=(info.label_set,))
            problems = scan.problems
            if problems:
                shown = "\n  ".join(problems[:SHOWN_PROBLEMS])
                more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more (s4sweep data check {path} lists them " \
                       "all)" if len(problems) > SHOWN_PROBLEMS else ""
                raise DataError(f"{path}: {len(problems)} problem(s) ({scan.summary()}); nothing was scheduled:"
                                f"\n  {shown}{more}")
            key = f"{name}:{path}" if info.layout == "cityscapes" else f"{name}:{info.label_set}:{path}"
            fingerprints[key] = file_list_hash(split_pairs(info, path, "train"), path)
            if info.layout == "idd":
                fingerprints[key] += f" rasteriser={data_identity(info)['rasteriser']}"
        return str(path)

    resolved = []
    for cfg in trials:
        eval_remaps(cfg)  # a missing or mismatched remap is refused before anything runs
        n = cfg.dataset.synth_images
        data = cfg.to_dict()
        data["dataset"]["root"] = root_of(cfg.dataset.name, cfg.dataset.root, cfg.dataset.label_set, n)
        for es in data["eval"]:
            es["root"] = root_of(es["name"], es["root"], es["label_set"], n)
        resolved.append(TrialConfig.from_dict(data))
    return resolved, fingerprints


def git_sha() -> str:
    """The project's commit: $S4SWEEP_GIT_SHA when set (a submitted job's copy has no .git), else `git rev-parse`."""
    if os.environ.get("S4SWEEP_GIT_SHA"):
        return os.environ["S4SWEEP_GIT_SHA"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def launch(spec: SweepSpec, *, storage: str | None = None, run_name: str | None = None, resume: str | None = None,
           tracking_uri: str | None = None, address: str | None = None, max_concurrent: int | None = None,
           trigger: str = "manual", ray_temp_dir: str | None = None) -> SweepOutcome:
    """Start a new run of `spec` (or continue one: `resume` = a run id, or "" for the latest unfinished)."""
    from orchestrator import storage as store
    from orchestrator import tracking, tune_backend

    root = runs.storage_root(storage)
    trials, names = spec.trials(), spec.trial_names()
    if isinstance(spec.search, OptunaSearch) and len(trials) > 1:
        raise runs.RunError(f"{spec.source}: an Optuna search runs one seed; set `base.seed` instead of a seed axis "
                            "(replicate the best point afterwards with a grid sweep)")
    store.check_writable(root)  # an unreachable endpoint, a missing bucket, refused credentials: stop here
    if resume is not None:
        state = runs.load(root, resume) if resume else runs.latest(root, spec.name, statuses=("running", "interrupted"))
        runs.check_restorable(runs.tune_dir(runs.run_dir(root, state.run_id)))  # before anything unpickles it
        uri = state.tracking_uri
    else:
        uri = tracking_uri_for(root, tracking_uri)
        tracking.check_uri(uri)  # a URI of the wrong kind is refused before any data is generated or scanned
        state = runs.RunState(sweep=spec.name, run_id=runs.new_run_id(spec.name, run_name=run_name),
                              spec_path=spec.source, spec_sha256=spec.sha256, tracking_uri=uri, trigger=trigger)
    trials, fingerprints = prepare_data(trials, root.local or s4sweep_home())
    tracking.check_reachable(uri)
    # Ray before the run record and the parent run: a cluster that cannot be reached leaves neither behind
    started = tune_backend.connect(address, temp_dir=ray_temp_dir)
    try:
        tune_backend.check_shared(root)  # several nodes: each must see what the driver writes there
        tracking.init_store(uri, artifact_root=artifact_root(root))
        tracker = tracking.Tracker(uri, artifact_root=artifact_root(root))
        state = _open_run(spec, state, root, tracker, fingerprints, resume=resume is not None)
        plan = _plan(spec, trials, names, root, state, uri, max_concurrent)
        try:
            if resume is None:
                manifest = run_manifest(spec, plan)
                runs.write_manifest(root, manifest)
                tracker.log_text(state.parent_run_id, manifest.to_json(), runs.MANIFEST_FILE)
            outcomes = tune_backend.run(plan, resume=resume is not None)
        except BaseException as e:  # never leave the parent RUNNING: the run is failed, or resumable if interrupted
            interrupted = isinstance(e, KeyboardInterrupt)
            runs.update(root, state, status="interrupted" if interrupted else "failed")
            tracker.end(state.parent_run_id, "KILLED" if interrupted else "FAILED", error=f"{type(e).__name__}: {e}")
            raise
    finally:
        tune_backend.shutdown(started)
    tracker.reconcile(state.experiment_id, state.parent_run_id)
    return _finish(spec, root, state, tracker, outcomes)


def _open_run(spec: SweepSpec, state: runs.RunState, root: Location, tracker: Any, fingerprints: dict[str, str], *,
              resume: bool) -> runs.RunState:
    """A new run's record and MLflow parent run (a parent that cannot be created takes the record with it), or a
    resumed run's parent put back to RUNNING with its orphaned children marked KILLED."""
    from orchestrator.tracking import environment_info

    experiment = tracker.experiment(spec.name)
    if resume:
        tracker.resume(state.parent_run_id)
        killed = tracker.reconcile(experiment, state.parent_run_id)
        log.info("resuming %s (parent run %s); %d orphaned child run(s) marked KILLED", state.run_id,
                 state.parent_run_id, len(killed))
        return runs.update(root, state, status="running")
    state = runs.create(root, state)
    try:
        parent = tracker.start_parent(experiment, run_name=state.run_id, tags={
            "s4sweep.sweep": spec.name, "s4sweep.run": state.run_id, "s4sweep.spec_sha256": spec.sha256,
            "s4sweep.git_sha": git_sha(), "s4sweep.trigger": state.trigger, "s4sweep.storage": str(root),
            **{f"s4sweep.data.{k}": v for k, v in fingerprints.items()}})
    except BaseException:
        runs.remove(root, state.run_id)
        raise
    try:
        tracker.log_dict(parent, environment_info(), "environment.json")
        tracker.log_artifact(parent, Path(spec.source)) if Path(spec.source).is_file() else None
    except BaseException as e:
        tracker.end(parent, "FAILED", error=f"{type(e).__name__}: {e}")
        runs.remove(root, state.run_id)
        raise
    return runs.update(root, state, experiment_id=experiment, parent_run_id=parent, status="running")


def _plan(spec: SweepSpec, trials: list[TrialConfig], names: list[str], root: Location, state: runs.RunState, uri: str,
          max_concurrent: int | None) -> Any:
    from orchestrator.tune_backend import TrialPlan

    search, scheduler = spec.search, spec.scheduler
    metric = getattr(search, "metric", None) or M.val(trials[0].eval[0].metric_key, "miou")
    mode = getattr(search, "mode", None) or "max"
    fault = os.environ.get("S4SWEEP_INJECT_FAULT")
    # resolved here, once: a trial's CPUs set its torch threads and loader workers, so the worker builds its
    # TrialConfig with one from_dict (DESIGN.md "Ray")
    threads = max(1, int(spec.resources.cpu))
    placed = {"device": {"threads": threads, "workers": threads // 2 if threads >= 4 else 0}}
    return TrialPlan(
        configs=tuple(t.with_overrides(placed).to_dict() for t in trials), names=tuple(names),
        run_dir=str(runs.run_dir(root, state.run_id)),
        tracking_uri=uri, experiment_id=state.experiment_id, parent_run_id=state.parent_run_id,
        sweep_run=state.run_id, metric=metric, mode=mode, cpu=spec.resources.cpu, gpu=spec.resources.gpu,
        optuna_space={k: dict(v) for k, v in search.space.items()} if isinstance(search, OptunaSearch) else None,
        optuna={"num_samples": search.num_samples, "seed": search.seed} if isinstance(search, OptunaSearch) else {},
        asha={"grace_iters": scheduler.grace_iters, "reduction_factor": scheduler.reduction_factor}
        if hasattr(scheduler, "grace_iters") else None,
        max_concurrent=max_concurrent, max_device_hours=spec.max_gpu_hours, fault=json.loads(fault) if fault else None)


def run_manifest(spec: SweepSpec, plan: Any) -> runs.RunManifest:
    """The run's manifest: its plan (the trials' resolved configs, resources, metric) and its sweep file's report
    section and trial count."""
    return runs.RunManifest(
        sweep=spec.name, run_id=plan.sweep_run, names=plan.names, configs=plan.configs, cpu=float(plan.cpu),
        gpu=float(plan.gpu), expected_trials=results.expected_trials(spec),
        eval=tuple({**e, "key": e.get("key") or e["name"]} for e in plan.configs[0]["eval"]),
        metric=plan.metric, mode=plan.mode, report=json.loads(json.dumps(spec.report)))


def _finish(spec: SweepSpec, root: Location, state: runs.RunState, tracker: Any, outcomes: list[Any]) -> SweepOutcome:
    errors = [o for o in outcomes if o.status == "error"]
    unfinished = [o for o in outcomes if o.status == "unfinished"]
    children = tracker.children(state.experiment_id, state.parent_run_id)
    status: runs.Status = "interrupted" if unfinished else "failed" if errors else "finished"
    with tempfile.TemporaryDirectory(prefix="s4sweep-summary-") as cache:
        trial_json = results.labeled_counts(tracker, children, Path(cache))
    table = comparison_table(spec, state, children, status=status, trial_json=trial_json)
    if unfinished:
        log.warning("sweep run %s interrupted: %d trial(s) unfinished. Continue it with:\n  s4sweep sweep %s "
                    "--resume %s", state.run_id, len(unfinished), spec.source, state.run_id)
        return SweepOutcome(runs.update(root, state, status=status), INTERRUPTED, table)
    for o in errors:
        log.error("trial %s failed: %s", o.name, o.error)
    skipped = [o.name for o in outcomes if o.status == "skipped"]
    if skipped:
        log.warning("max_gpu_hours %s spent: %d trial(s) never started: %s", spec.max_gpu_hours, len(skipped),
                    ", ".join(skipped))
        tracker.set_tags(state.parent_run_id, {"s4sweep.budget_skipped": ",".join(skipped)})
    tracker.log_text(state.parent_run_id, table, "comparison.md")
    export_best_model(tracker, state, children, metric=M.val(spec.eval_keys()[0], "miou"), root=root)
    tracker.end(state.parent_run_id, "FAILED" if errors else "FINISHED",
                error=f"{len(errors)} trial(s) failed" if errors else None)
    return SweepOutcome(runs.update(root, state, status=status), 1 if errors else 0, table)


def export_best_model(tracker: Any, state: runs.RunState, children: list[Any], *, metric: str,
                      root: Location) -> None:
    """The best finished trial's final generator (weights + resolved config) as `best_model/` on the parent run.

    Taken from the trial's latest Tune checkpoint in the run's storage (local, shared or an object store), which is
    where a trial that moved between nodes left it. Only the generator: it is what `s4sweep eval` and users need;
    D and the optimiser states stay in the trial's checkpoints (Tune keeps two per trial).
    """
    import tempfile

    import torch

    from trainers.s4gan import checkpoint as ckpt

    scored = [c for c in children if c.status == "FINISHED" and metric in c.metrics]
    if not scored:
        return
    best = max(scored, key=lambda c: c.metrics[metric])
    trial_dirs = [d for d in runs.tune_dir(runs.run_dir(root, state.run_id)).children()
                  if d.name.startswith(f"{best.name}-")]
    found = sorted((c for d in trial_dirs for c in d.children() if c.name.startswith("checkpoint_")),
                   key=lambda c: c.name)
    if not found:
        log.warning("best trial %s has no checkpoint in %s to export", best.name, runs.run_dir(root, state.run_id))
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = found[-1].download(Path(tmp) / "checkpoint")
        out = Path(tmp) / "best_model"
        out.mkdir()
        torch.save(ckpt.load(local)["generator"], out / "generator.pt")
        (out / ckpt.CONFIG_FILE).write_text((local / ckpt.CONFIG_FILE).read_text())
        (out / "selected.json").write_text(json.dumps({"trial": best.name, "run_id": best.run_id, metric:
                                                       best.metrics[metric], "checkpoint": str(found[-1])}))
        tracker.log_artifact(state.parent_run_id, out, artifact_path="best_model")
    log.info("exported the generator of %s (%s %.4f) to the parent run as best_model/", best.name, metric,
             best.metrics[metric])


def _dataset_order(params: Mapping[str, str], eval_key: str) -> tuple[str, ...]:
    """The classes of a trial's evaluation set in dataset order (the report itself does not import the tables)."""
    es = results.eval_sets(params).get(eval_key)
    try:
        return dataset_info(es["name"], es.get("label_set")).labels.classes if es else ()
    except DataError:
        return ()


def comparison_table(spec: SweepSpec, state: runs.RunState, children: list[Any], *, status: runs.Status,
                     trial_json: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The end-of-sweep summary: the report's per-class tables (one per evaluation set; mean ± std over seeds, in %,
    with the rare-classes row where the trials logged their labeled split's pixels, `trial_json`), from the child
    runs' metrics and params; `s4sweep report` adds the baseline Δ with its bootstrap, pictures and cost."""
    run = results.SweepRun(sweep=spec.name, run_id=state.run_id, status=status, tracking_uri=state.tracking_uri,
                           experiment_id=state.experiment_id, parent_run_id=state.parent_run_id)
    table = results.build_table(run, children, resources=(float(spec.resources.cpu), float(spec.resources.gpu)),
                                class_order=_dataset_order)
    res = results.SweepResults(run=run, table=table, spec=spec, expected_trials=results.expected_trials(spec),
                               params={c.name: c.params for c in children}, trial_json=trial_json or {})
    built = report.build(res, replace(report.options_for(res), baseline={}))
    hint = (f"\n\nΔ against the baseline with paired-bootstrap tests, pictures and cost: s4sweep report {spec.name} "
            f"--run {state.run_id}") if built.tables else ""
    return report.to_summary(built) + hint
