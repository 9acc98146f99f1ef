"""The only package that imports Ray: one Tune trial per TrialConfig, each training s4GAN and tracked in MLflow.

The ML stays in `trainers.s4gan.train`; these modules are the glue:
    trial.py      inside a Ray worker: the function trainable, its Reporter (MLflow + tune.report), the TrialPlan
    tuner.py      the Tuner: search, scheduler, resources, retries, checkpoints; one outcome per trial
    callbacks.py  the driver's Tune callbacks: progress line, device-hour budget, trial status log
    cluster.py    attach to a cluster or start a local one; check that every node reads the storage
    jobs.py       Ray's job API, for `s4sweep submit`
"""

from orchestrator.tune_backend.callbacks import Budget, Progress, TrialStatusLog
from orchestrator.tune_backend.cluster import check_shared, connect, shutdown
from orchestrator.tune_backend.jobs import RayJobs
from orchestrator.tune_backend.trial import TrialOutcome, TrialPlan, run_trial
from orchestrator.tune_backend.tuner import run

__all__ = ["Budget", "Progress", "RayJobs", "TrialOutcome", "TrialPlan", "TrialStatusLog", "check_shared", "connect",
           "run", "run_trial", "shutdown"]
