"""What persisting checkpoints to an object store costs a trial, against local storage, in the same run.

Run: `python bench/storage.py [--trials 3] [--preset tiny] [--iterations 100] [--checkpoint-every 20]`.
Two real sweeps of the same trials (private local Ray, generated data, one MLflow database beside them): one with
`--storage` a local folder, one with `--storage s3://...` on an S3-compatible server started here (`moto_server` on
127.0.0.1: a Python process on the same 2 cores, so read the ratio as a floor on the protocol's cost, not as a
figure for AWS). Per trial: the time spent inside `tune.report(..., checkpoint=...)`, which persists the checkpoint
to the storage before it returns (`time/checkpoint_s`), the MiB persisted (`checkpoint/mib`) and the trial's wall
time (`time/trial_s`); then the object store's cost as a share of the trial and as a ratio to the local one.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.spec import parse_spec
from orchestrator.sweep import launch, prepare_data
from orchestrator.tracking import Tracker
from trainers import metric_names as M

BUCKET = "s4sweep-bench"


def start_s3(log: Path) -> tuple[str, subprocess.Popen]:
    import boto3
    from botocore.exceptions import EndpointConnectionError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=endpoint,
                      AWS_REGION="us-east-1")
    for _ in range(100):
        try:
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            return endpoint, proc
        except EndpointConnectionError:  # not up yet
            time.sleep(0.1)
    raise SystemExit(f"moto_server did not start: {log.read_text()[-2000:]}")


def sweep(spec, storage: str, tracking_uri: str) -> list:
    outcome = launch(spec, storage=storage, tracking_uri=tracking_uri, max_concurrent=1)
    if outcome.exit_code != 0:
        raise SystemExit(f"the sweep on {storage} ended with exit code {outcome.exit_code}")
    return Tracker(tracking_uri).children(outcome.run.experiment_id, outcome.run.parent_run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "micro"])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--checkpoint-every", type=int, default=20)
    args = parser.parse_args()
    schedule = {"iterations": args.iterations, "checkpoint_every": args.checkpoint_every,
                "eval_every": args.checkpoint_every}
    spec = parse_spec({"name": "bench-storage", "base": {"preset": args.preset, "dataset": {"name": "synth"},
                                                         "schedule": schedule},
                       "grid": {"seed": list(range(args.trials))}, "resources": {"cpu": 2, "gpu": 0}},
                      source="bench/storage.py")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["S4SWEEP_HOME"] = tmp  # generated data, once, outside both measurements
        prepare_data(spec.trials()[:1], Path(tmp))
        endpoint, proc = start_s3(Path(tmp) / "moto.log")
        try:
            uri = f"sqlite:///{tmp}/mlflow.db"
            found = {"local": sweep(spec, f"{tmp}/local", uri), "s3": sweep(spec, f"s3://{BUCKET}/runs", uri)}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"{args.trials} {args.preset} trials x {args.iterations} iterations, a checkpoint every "
          f"{args.checkpoint_every} ({args.iterations // args.checkpoint_every} per trial), one at a time, 2 threads; "
          f"object store: moto_server at {endpoint}")
    print(f"{'storage':<8} {'trial':<6} {'wall s':>8} {'ckpt s':>8} {'MiB':>8} {'MiB/s':>8} {'ckpt/wall':>10} "
          f"{'mlflow s':>9}")
    share: dict[str, list[float]] = {}
    per_mib: dict[str, list[float]] = {}
    for kind, kids in found.items():
        for k in sorted(kids, key=lambda k: k.name):
            wall, ckpt, mib = (k.metrics[M.TRIAL_TIME], k.metrics[M.CHECKPOINT_TIME], k.metrics[M.CHECKPOINT_MIB])
            share.setdefault(kind, []).append(ckpt / wall)
            per_mib.setdefault(kind, []).append(ckpt / mib)
            print(f"{kind:<8} {k.name:<6} {wall:8.1f} {ckpt:8.2f} {mib:8.1f} {mib / ckpt:8.1f} "
                  f"{100 * ckpt / wall:9.2f}% {k.metrics[M.TRACKING_TIME]:9.1f}")
    local, s3 = statistics.median(per_mib["local"]), statistics.median(per_mib["s3"])
    print(f"checkpoint share of the trial's wall time (median): local {100 * statistics.median(share['local']):.2f}%, "
          f"s3 {100 * statistics.median(share['s3']):.2f}%")
    print(f"object store / local, seconds per MiB persisted (median): {s3 / local:.1f}x")


if __name__ == "__main__":
    main()
