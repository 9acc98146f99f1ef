"""The only module that imports Ray: one Tune trial per TrialConfig, each training s4GAN and tracked in MLflow.

The ML stays in `trainers.s4gan.train`; this file is the glue: a function trainable that re-attaches to its MLflow
child run on retry or restore (the run id travels inside the Tune checkpoint), a Reporter that forwards to MLflow and
`tune.report`, the Tuner set-up (resources, retries, checkpoints, Optuna search, ASHA), the cluster (attach or start,
the storage probe on every node) and Ray's job API for `s4sweep submit`. What needs no Ray lives beside it:
trial_plan.py (the plan, names, budget state) and sweep_callbacks.py (progress, budget, trial status).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.logger import JsonLoggerCallback

from orchestrator.runs import DATA_FAILURE, TUNE, RunError, trial_dir
from orchestrator.storage import Location, StorageError, open_location, read_probe
from orchestrator.sweep_callbacks import Budget, Progress, TrialStatusLog
from orchestrator.tracking import Tracker
from orchestrator.trial_plan import (
    ITERATION,
    SKIPPED,
    TRACKING_FILE,
    TrialOutcome,
    TrialPlan,
    budget_exhausted,
    optuna_trial_name,
    trial_name,
    trial_workdir,
)
from orchestrator.trial_reporter import TrialReporter
from trainers.config import TrialConfig
from trainers.data.tables import BrokenDuringTrainingError

log = logging.getLogger(__name__)
__all__ = ["Budget", "Progress", "RayJobs", "TrialOutcome", "TrialPlan", "TrialStatusLog", "run", "run_trial"]


# --- inside a trial (Ray worker) -----------------------------------------------------------------------------


def _persist(values: dict[str, float], directory: Path) -> None:
    tune.report(values, checkpoint=Checkpoint.from_directory(str(directory)))  # uploads it to the run's storage


def _restored_checkpoint(workdir: Path) -> tuple[Path | None, dict[str, Any]]:
    """The checkpoint Tune hands a retried or restored trial, copied locally, and its tracking.json (run id, trial,
    iteration)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, {}
    local = workdir / "restored"
    shutil.rmtree(local, ignore_errors=True)
    checkpoint.to_directory(str(local))
    return local, json.loads((local / TRACKING_FILE).read_text())


def placement(plan: TrialPlan, device: str) -> dict[str, str]:
    """Where this attempt runs, as child-run tags: node, GPU ids and fraction Ray gave it, the torch device."""
    context = ray.get_runtime_context()
    return {"s4sweep.node_id": context.get_node_id(), "s4sweep.node_ip": ray.util.get_node_ip_address(),
            "s4sweep.gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()), "s4sweep.gpu": f"{plan.gpu:g}",
            "s4sweep.device": device, "s4sweep.attempt_started": f"{time.time():.3f}"}


def run_trial(config: dict[str, Any], *, plan: TrialPlan) -> None:
    """The function trainable: one s4GAN trial, its MLflow child run, and its Tune checkpoints."""
    from trainers.data.roots import ensure_generated  # late: the driver imports this module too
    from trainers.s4gan.train import resolve_device, train

    index = int(config["trial"])
    cfg = TrialConfig.from_dict(plan.configs[index])
    name = plan.names[index]
    params = config.get("params") or {}
    if params:
        cfg = cfg.with_params(params)
        name = optuna_trial_name(name, params)
    workdir = trial_workdir(plan, name)
    # in the run's storage, not the (maybe node-local) working directory: the driver reads it when the sweep ends
    failure = trial_dir(open_location(plan.run_dir), name) / DATA_FAILURE
    if failure.is_file():  # failed on a broken file (a restore after a crash of the driver): nothing to redo
        return
    resume, restored = _restored_checkpoint(workdir)
    run_id = restored.get("run_id")
    if resume is None and budget_exhausted(plan):
        (trial_dir(open_location(plan.run_dir), name) / SKIPPED).write_text(
            f"max_gpu_hours {plan.max_device_hours} spent before this trial started")
        return
    for es in (cfg.dataset, *cfg.eval):  # generated data the driver made on its own disk: made again on this node
        ensure_generated(es.name, es.root, synth_images=cfg.dataset.synth_images)
    device = resolve_device(cfg.device.device).type
    where = placement(plan, device)
    if plan.gpu > 0 and device != "cuda":
        log.warning("trial %s: Ray scheduled %g GPU for it (GPU id %s on node %s) but no CUDA device is visible "
                    "there: it runs on the CPU", name, plan.gpu, where["s4sweep.gpu_ids"] or "-",
                    where["s4sweep.node_ip"])
    tracker = Tracker(plan.tracking_uri)
    if run_id is None:  # a retry that failed before its first checkpoint keeps its run too
        run_id = next((c.run_id for c in tracker.children(plan.experiment_id, plan.parent_run_id)
                       if c.tags.get("s4sweep.trial") == name), None)
    attempt, logged = 1, {}
    if run_id is None:
        run_id = tracker.start_child(plan.experiment_id, plan.parent_run_id, run_name=name, params=cfg.to_dict(),
                                     tags={"s4sweep.trial": name, "s4sweep.run": plan.sweep_run,
                                           "s4sweep.tune_trial_id": tune.get_context().get_trial_id() or "",
                                           "s4sweep.nodes": where["s4sweep.node_id"], "s4sweep.attempt": "1",
                                           "s4sweep.restored_from": "", **where})
    else:
        tracker.resume(run_id)
        before = tracker.run(run_id).tags
        attempt = int(before.get("s4sweep.attempt", "1")) + 1
        logged = tracker.last_steps(run_id)
        tracker.set_tags(run_id, {**where, "s4sweep.attempt": str(attempt),
                                  "s4sweep.nodes": ",".join(filter(None, [before.get("s4sweep.nodes"),
                                                                          where["s4sweep.node_id"]])),
                                  "s4sweep.restored_from": str(restored.get("iteration", ""))})
    where = {"node_ip": where["s4sweep.node_ip"], "node_id": where["s4sweep.node_id"]}
    reporter = TrialReporter(tracker, run_id, trial=name, plan=plan, attempt=attempt, persist=_persist, logged=logged,
                             where=where)
    try:
        train(cfg, reporter=reporter, workdir=workdir, resume=resume)
    except BrokenDuringTrainingError as e:
        # A file that broke after the scan: Tune's retries would meet it again, each in a fresh worker. The trial
        # ends here instead, FAILED in MLflow with the file and the iteration; `run` counts it an error through the
        # marker (to Tune it is a trial that returned).
        tracker.end(run_id, "FAILED", error=f"DataError: {e}")
        failure.write_text(f"DataError: {e}")
        log.error("trial %s failed: %s", name, e)
        return
    except BaseException as e:
        tracker.end(run_id, "FAILED", error=f"{type(e).__name__}: {e}")
        raise
    tracker.end(run_id, "FINISHED")


# --- the driver -------------------------------------------------------------------------------------------------


class _Observers(tune.Callback):
    """Tune's callback hooks forwarded to the driver's plain observers (orchestrator/sweep_callbacks.py)."""

    def __init__(self, *observers: Any) -> None:
        self.observers = observers

    def _each(self, hook: str, *args: Any, **info: Any) -> None:
        for observer in self.observers:
            if hasattr(observer, hook):
                getattr(observer, hook)(*args, **info)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._each("on_trial_start", iteration, trials, trial, **info)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._each("on_trial_result", iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._each("on_trial_complete", iteration, trials, trial, **info)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._each("on_trial_error", iteration, trials, trial, **info)


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
                callbacks=[_Observers(progress, Budget(plan), TrialStatusLog(run_dir, plan)), JsonLoggerCallback(),
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


def connect(address: str | None, *, num_cpus: int | None = None, temp_dir: str | None = None) -> bool:
    """Attach to --address / RAY_ADDRESS (a cluster, or the one a Ray job runs in), else start a private local one.

    Never `ray.init()` without an address: that attaches to whatever cluster the machine's current-cluster file
    names, possibly somebody else's. Returns whether this call started Ray (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_gcs(address)
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir,
                 configure_logging=False)
    return True


def _check_gcs(address: str, timeout_s: float = 5.0) -> None:
    """A `host:port` address must accept a TCP connection: `ray.init` would wait minutes for a cluster that is not
    there. `auto`, `local` and `ray://` (Ray Client) addresses are left to Ray."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RunError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                       "`ray start --head`, or leave --address and RAY_ADDRESS out for a private local one") from None


def check_shared(root: Location, *, timeout_s: float = 60.0) -> None:
    """On a cluster of several nodes, every other node must read what the driver writes under `root`: a probe file
    written here is read back by a task pinned to each other live node. Catches a local path that is not shared
    storage, and a node that cannot reach or authenticate to the object store; one line names the node and the fix.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    if not others:
        return
    probe, token = root / f".s4sweep-probe-{here[:12]}-{os.getpid()}", f"{here} {time.time()}"
    probe.write_text(token)
    read = ray.remote(num_cpus=0, max_retries=0)(read_probe)
    try:
        refs = {n["NodeManagerAddress"]: read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(probe), token) for n in others}
        answers = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s), strict=True))
    except ray.exceptions.GetTimeoutError:
        raise StorageError(f"storage {root}: the nodes {', '.join(refs)} did not all answer the storage probe within "
                           f"{timeout_s:g} s; check that every node is healthy (ray status)") from None
    finally:
        probe.delete()
    for node, problem in answers.items():
        if problem is None:
            continue
        if root.local is not None:
            raise StorageError(f"storage {root} is not shared: a file the driver wrote there is {problem} on node "
                               f"{node}; on several nodes --storage must be shared storage mounted at the same path "
                               "on every node (NFS, EFS) or an object-store URI such as s3://bucket/prefix")
        raise StorageError(f"storage {root}: node {node} cannot read what the driver wrote there ({problem}); give "
                           "every node the same endpoint and credentials (AWS_* variables, a profile or a role)")




def shutdown(started: bool) -> None:
    if started and ray.is_initialized():
        ray.shutdown()


# --- Ray jobs: `s4sweep submit` (orchestrator/submit.py decides what to send; this class talks to the cluster) ----


class RayJobs:
    """The job API of one cluster (its dashboard URL), through Ray's JobSubmissionClient.

    Token auth is Ray's own: the client sends the token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token
    when RAY_AUTH_MODE=token. Every failure becomes an `error` (submit.py passes its SubmitError) naming the address
    and what to change.
    """

    def __init__(self, address: str, *, error: type[Exception] = RuntimeError) -> None:
        from ray.job_submission import JobSubmissionClient

        self.address, self.error = address, error
        with self._errors("connecting"):
            self.client = JobSubmissionClient(address)

    def submit(self, *, entrypoint: str, submission_id: str, runtime_env: Mapping[str, Any] | None = None,
               metadata: Mapping[str, str] | None = None) -> str:
        with self._errors(f"submitting {submission_id}"):
            return self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                          runtime_env=dict(runtime_env or {}), metadata=dict(metadata or {}))

    def wait(self, submission_id: str, *, timeout_s: float) -> str:
        """Poll until the job ends; returns PENDING/RUNNING if it has not ended within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._errors(f"waiting for {submission_id}"):
            while True:
                status = self.client.get_job_status(submission_id)
                if status.is_terminal() or time.monotonic() > deadline:
                    return str(status)
                time.sleep(0.5)

    def follow(self, submission_id: str, echo: Callable[[str], None]) -> str:
        """Stream the job's logs until it ends; returns its final status (SUCCEEDED, FAILED or STOPPED)."""
        import asyncio

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(submission_id):
                echo(chunk)

        with self._errors(f"following {submission_id}"):
            try:
                asyncio.run(tail())
            except RuntimeError as e:  # the log stream closed early: the status below still tells how it ended
                log.warning("log stream of %s closed: %s", submission_id, e)
        return self.wait(submission_id, timeout_s=float("inf"))

    def message(self, submission_id: str) -> str:
        with self._errors(f"reading {submission_id}"):
            return self.client.get_job_info(submission_id).message or ""

    def logs(self, submission_id: str) -> str:
        with self._errors(f"reading the logs of {submission_id}"):
            return self.client.get_job_logs(submission_id)

    def delete(self, submission_id: str) -> None:
        with self._errors(f"deleting {submission_id}"):
            self.client.delete_job(submission_id)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        from ray.exceptions import AuthenticationError

        try:
            yield
        except AuthenticationError as e:
            mode = os.environ.get("RAY_AUTH_MODE", "")
            hint = ("check that RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token holds this cluster's token"
                    if mode == "token" else "set RAY_AUTH_MODE=token and give the cluster's token through "
                    "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
            first = next((line for line in str(e).splitlines() if line.strip()), "authentication failed")
            raise self.error(f"the Ray cluster at {self.address} refused the request ({first}); {hint}") from None
        except (OSError, ValueError) as e:  # requests' ConnectionError is an OSError
            raise self.error(f"cannot reach the Ray job API at {self.address} while {doing}: {e} (the address is "
                              "the dashboard's URL, http://<head>:8265 by default)") from None
        except RuntimeError as e:  # the SDK's "Request failed with status code ..."
            raise self.error(f"the Ray job API at {self.address} failed while {doing}: {e}") from None
        except (TypeError, KeyError) as e:  # an answer the SDK cannot parse: another Ray version, or not Ray at all
            raise self.error(f"the Ray job API at {self.address} gave an answer this Ray {ray.__version__} client "
                              f"cannot read while {doing} ({type(e).__name__}: {e}); is it a Ray dashboard of the "
                              "same version?") from None
