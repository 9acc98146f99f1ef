"""The Tuner: grid or Optuna search, ASHA, resources, retries, checkpoints and callbacks for one sweep run; and the
outcome of every trial when it returns."""

from __future__ import annotations

import os
from typing import Any

from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.logger import JsonLoggerCallback

from orchestrator.runs import DATA_FAILURE, TUNE, trial_dir
from orchestrator.storage import open_location
from orchestrator.tune_backend.callbacks import Budget, Progress, TrialStatusLog
from orchestrator.tune_backend.trial import ITERATION, SKIPPED, TrialOutcome, TrialPlan, run_trial, trial_name


def _search_and_scheduler(plan: TrialPlan) -> tuple[dict[str, Any], Any, Any, int]:
    scheduler = None
    if plan.asha:
        iterations = min(int(c["schedule"]["iterations"]) for c in plan.configs)
        scheduler = tune.schedulers.ASHAScheduler(time_attr=ITERATION, max_t=iterations,
                                                  grace_period=int(plan.asha["grace_iters"]),
                                                  reduction_factor=float(plan.asha.get("reduction_factor", 2)))
    if plan.optuna_space is None:
        return {"trial": tune.grid_search(list(range(len(plan.configs))))}, None, scheduler, 1
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    space: dict[str, Any] = {}
    for path, dist in plan.optuna_space.items():
        if "choices" in dist:
            space[path] = tune.choice(list(dist["choices"]))
        elif dist.get("log"):
            space[path] = tune.loguniform(float(dist["low"]), float(dist["high"]))
        else:
            space[path] = tune.uniform(float(dist["low"]), float(dist["high"]))
    seed = int(plan.optuna.get("seed", 0))
    search = OptunaSearch(metric=plan.metric, mode=plan.mode, sampler=TPESampler(seed=seed))
    return {"trial": 0, "params": space}, search, scheduler, int(plan.optuna["num_samples"])


def run(plan: TrialPlan, *, resume: bool, callbacks: list[Any] | None = None) -> list[TrialOutcome]:
    """Run (or continue) the trials of one sweep run; returns one outcome per Tune trial."""
    run_dir = open_location(plan.run_dir)
    tune_dir = run_dir / TUNE  # a local path or a URI: Tune's own storage handling (pyarrow.fs) takes either
    # our own MLflow child runs carry the metrics: no TensorBoard or CSV logger in every trial directory; the JSON
    # one stays (below), since Tune's result grid reads it back
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), {"cpu": plan.cpu, "gpu": plan.gpu})
    if resume and Tuner.can_restore(str(tune_dir)):
        # Unsafe load, justified: Tune's experiment state (tuner.pkl, trial and searcher state) is cloudpickle and Ray
        # restores it no other way. launch() has refused a tune/ directory that another user owns or that group or
        # others may write (runs.check_restorable), so only what this user wrote is unpickled.
        tuner = Tuner.restore(str(tune_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        param_space, search, scheduler, num_samples = _search_and_scheduler(plan)
        total = len(plan.configs) if search is None else num_samples
        progress = Progress(total, plan.metric, plan.mode, plan.max_concurrent or total)
        tuner = Tuner(
            trainable,
            param_space=param_space,
            tune_config=TuneConfig(metric=plan.metric, mode=plan.mode, search_alg=search, scheduler=scheduler,
                                   num_samples=num_samples, max_concurrent_trials=plan.max_concurrent,
                                   # a finished trial's worker process runs the next one: no new Python and no second
                                   # import of torch, torchvision and MLflow per trial (the demo's trials followed
                                   # each other 4 s apart without it, at once with it, on a 2-core machine)
                                   reuse_actors=True,
                                   trial_name_creator=lambda t: trial_name(plan, t.config),
                                   trial_dirname_creator=lambda t: f"{trial_name(plan, t.config)}-{t.trial_id}"),
            run_config=RunConfig(
                name=TUNE, storage_path=str(run_dir), verbose=0,
                failure_config=FailureConfig(max_failures=plan.max_failures),
                # two checkpoints per trial are kept (the best by the sweep metric and the latest); the trainer
                # keeps its own last two locally
                checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=plan.metric,
                                                   checkpoint_score_order=plan.mode),
                callbacks=[progress, Budget(plan), TrialStatusLog(run_dir, plan), JsonLoggerCallback(),
                           *(callbacks or [])]))
    results = tuner.fit()  # returns normally after Ctrl-C too: the caller decides from the outcomes
    errors = {trial_name(plan, r.config or {}): f"{type(r.error).__name__}: {r.error}"
              for r in results if r.error is not None}
    ended = TrialStatusLog.read(run_dir)
    names = list(plan.names) if plan.optuna_space is None else list(ended)
    skipped = {n for n in names if (trial_dir(run_dir, n) / SKIPPED).is_file()}
    for n in names:  # trials that met a broken file returned to Tune, but failed
        failure = trial_dir(run_dir, n) / DATA_FAILURE
        if failure.is_file():
            errors[n] = failure.read_text()
    outcomes = [TrialOutcome(n, "skipped" if n in skipped else ended.get(n, "unfinished"), errors.get(n), {})
                for n in names]
    if plan.optuna_space is not None:  # trials the search never started count as unfinished
        missing = int(plan.optuna["num_samples"]) - len(outcomes)
        outcomes += [TrialOutcome(f"optuna-not-started-{i}", "unfinished", None, {}) for i in range(missing)]
    return outcomes
