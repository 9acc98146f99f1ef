"""A Ray cluster of several nodes on this machine: a head on 127.0.0.1 (no CPU, no GPU: the drivers only) and worker
nodes on 127.0.0.2 and 127.0.0.3 (one CPU and one declared GPU each, their own temp dirs), token auth on, run state
and checkpoints on a real S3-compatible server (moto), trials logging to a real `mlflow server` whose artifacts are
in the same bucket. Started once for the module; every node is its own session, ended by PID in teardown.

The trials hold at iteration HOLD_AT (orchestrator/faults.py, the head's S4SWEEP_INJECT_FAULT) until the test
releases them, so that placement, the node kill and the rejoin happen at known points, not at the mercy of timing.
Node 127.0.0.3 runs in a mount namespace of its own in which one folder is a private tmpfs: a local path that is not
shared, as on a real cluster without NFS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import cli, runs
from orchestrator.storage import open_location
from orchestrator.submit import PROJECT_ROOT
from orchestrator.tracking import Tracker

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"
LOSS_SPEC, WHOLE_SPEC = DATA / "multinode-micro.yaml", DATA / "multinode-whole-gpu.yaml"
BIN = Path(sys.executable).parent
RAY, S4SWEEP = BIN / "ray", BIN / "s4sweep"
HOLD_AT = 8  # after the checkpoint of iteration 6 (one every 3): a lost trial redoes iterations 7 and 8
WAIT_S = 240.0
WORKERS = ("127.0.0.2", "127.0.0.3")
PRIVATE_IP = "127.0.0.3"


@dataclass
class Node:
    ip: str
    proc: subprocess.Popen
    log: Path


@dataclass
class Cluster:
    gcs: str  # the head's GCS address, for `--address` of a driver
    dashboard: str  # the job API
    home: Path  # HOME with .ray/auth_token
    holds: Path
    private: Path  # a folder that node PRIVATE_IP does not share with the others
    can_unshare: bool  # a private mount namespace can be made here (root, or CAP_SYS_ADMIN)
    base_env: dict[str, str]
    helpers: ModuleType
    tmp: Path
    nodes: dict[str, Node] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.base_env, "HOME": str(self.home), "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1", **extra}

    def start_worker(self, ip: str, *, wait: bool = True) -> Node:
        h = self.helpers
        temp_dir = Path(tempfile.mkdtemp(prefix=f"s4ray-{ip.rsplit('.', 1)[1]}-"))
        command = [str(RAY), "start", "--address", self.gcs, "--node-ip-address", ip, "--num-cpus", "1",
                   "--num-gpus", "1", "--temp-dir", str(temp_dir), "--block"]
        for option in ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
                       "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port"):
            command += [option, str(h.free_port())]
        if ip == PRIVATE_IP and self.can_unshare:  # this node sees its own empty tmpfs at self.private
            command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                       f'mount -t tmpfs s4sweep-private {self.private} && exec "$@"', "sh", *command]
        log = self.tmp / f"node-{ip}-{len(self.nodes)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env(), cwd=self.home,
                                    start_new_session=True)
        node = self.nodes[ip] = Node(ip, proc, log)
        return self.wait_started(node) if wait else node

    def wait_started(self, node: Node) -> Node:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in node.log.read_text(errors="replace"):
            if node.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker node {node.ip} did not start: {node.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        return node

    def kill(self, ip: str) -> float:
        """SIGKILL the node's raylet and every process of its session at once (its trials with it): a lost node."""
        proc = self.nodes.pop(ip).proc
        when = time.time()
        for pid in self.helpers.own_processes(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
        return when

    def held(self, run: str, trials: list[str] | None = None, *, attempt: int, count: int) -> dict[str, dict]:
        """Wait until `count` trials (of `trials`, if given) hold at HOLD_AT on their `attempt`; trial -> marker."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = {}
            for path in self.holds.glob(f"held-{run}-*-{attempt}.json"):
                info = json.loads(path.read_text())
                if trials is None or info["trial"] in trials:
                    found[info["trial"]] = info
            if len(found) >= count:
                return found
            time.sleep(0.3)
        pytest.fail(f"{run}: fewer than {count} trials held at attempt {attempt} within {WAIT_S:g} s; held so far: "
                    f"{sorted(p.name for p in self.holds.iterdir())}")

    def release(self, run: str, *trials: str) -> None:
        for trial in trials:
            (self.holds / f"release-{run}-{trial}").touch()


def can_unshare(folder: Path) -> bool:
    """Whether a process here may mount a tmpfs over `folder` in a mount namespace of its own (seen by it alone)."""
    try:
        done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f"mount -t tmpfs s4sweep-probe {folder}"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="module")
def cluster(submit_helpers, s3_server, tmp_path_factory, request) -> Iterator[Cluster]:
    h = submit_helpers
    tmp = tmp_path_factory.mktemp("multinode")
    home, holds, private = tmp / "home", tmp / "holds", tmp / "node-local"
    for folder in (home / ".ray", holds, private):
        folder.mkdir(parents=True)
    token = os.urandom(32).hex()
    (home / ".ray" / "auth_token").write_text(token)
    base = {k: v for k, v in s3_server.env().items() if k not in h.FOREIGN}
    base.update(PATH=f"{BIN}{os.pathsep}{base.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0",
                RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")  # "0" marks the head single-node: workers refused
    c = Cluster(gcs="", dashboard="", home=home, holds=holds, private=private, can_unshare=can_unshare(private),
                base_env=base, helpers=h, tmp=tmp)
    temp_dir = Path(tempfile.mkdtemp(prefix="s4ray-h-"))  # short: Ray's socket paths stay under ~107 characters
    gcs, dashboard = h.free_port(), h.free_port()
    ports = {"--port": gcs, "--dashboard-port": dashboard, "--ray-client-server-port": h.free_port(),
             "--dashboard-agent-listen-port": h.free_port(), "--dashboard-agent-grpc-port": h.free_port(),
             "--runtime-env-agent-port": h.free_port(), "--metrics-export-port": h.free_port(),
             "--node-manager-port": h.free_port(), "--object-manager-port": h.free_port()}
    assert ports["--ray-client-server-port"] >= 20000
    command = [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
               "--num-cpus", "0", "--num-gpus", "0", "--temp-dir", str(temp_dir), "--block"]
    command += [str(x) for item in ports.items() for x in item]
    fault = json.dumps({"kind": "hold", "at_iteration": HOLD_AT, "dir": str(holds)})
    log = tmp / "head.log"
    with log.open("wb") as out:  # the job drivers read the hold fault from the head's environment
        head = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=home, start_new_session=True,
                                env=c.env(S4SWEEP_INJECT_FAULT=fault))
    temp_dirs = [temp_dir]
    try:
        c.gcs, c.dashboard = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}"
        request.getfixturevalue("s3_mlflow_server")  # started while the head boots
        h.wait_for_job_api(c.dashboard, token, head, log)
        for node in [c.start_worker(ip, wait=False) for ip in WORKERS]:  # both at once: start-up is mostly waiting
            c.wait_started(node)
        yield c
    finally:
        for ip in list(c.nodes):
            c.kill(ip)
        c.nodes["head"] = Node("127.0.0.1", head, log)
        c.kill("head")
        for folder in [*temp_dirs, *Path(tempfile.gettempdir()).glob("s4ray-[23]-*")]:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> str:
    from trainers.data.roots import resolve_root

    return str(resolve_root("synth", None, synth_images=8, home=tmp_path_factory.mktemp("datasets")))


def storage(s3_server) -> str:
    return f"s3://{s3_server.bucket}/multinode"


def children(uri: str, root: str, run: str) -> dict[str, object]:
    """The run's trials by name, found through its record on the object store."""
    state = runs.load(root, run)
    return {c.name: c for c in Tracker(uri).children(state.experiment_id, state.parent_run_id)}


def finished(uri: str, root: str, run: str, trial: str) -> None:
    """Wait until the trial's child run is FINISHED (its resources are free again)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        kid = children(uri, root, run).get(trial)
        if kid is not None and kid.status == "FINISHED":
            return
        time.sleep(0.5)
    pytest.fail(f"{run}: trial {trial} did not finish within {WAIT_S:g} s")


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    """Every step of a metric's raw history, repeats included."""
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_a_local_path_that_one_node_does_not_share_is_refused_before_any_trial(cluster, s3_mlflow_server, synth):
    if not cluster.can_unshare:
        pytest.skip("this machine cannot make a private mount namespace (unshare -m needs root or CAP_SYS_ADMIN), so "
                    f"every node shares {cluster.private}")
    proc = subprocess.run([str(S4SWEEP), "sweep", str(LOSS_SPEC), "--address", cluster.gcs, "--storage",
                           str(cluster.private), "--tracking-uri", s3_mlflow_server],
                          env=cluster.env(S4SWEEP_TEST_SYNTH_ROOT=synth), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert line.startswith(f"s4sweep sweep: error: storage {cluster.private} is not shared: a file the driver wrote "
                           f"there is missing on node {PRIVATE_IP}; on several nodes --storage must be shared"), line
    left = {p.name for p in cluster.private.iterdir()}
    assert "sweeps" not in left and not any(name.startswith(".s4sweep-probe") for name in left), left  # no record


def test_a_submitted_sweep_survives_the_loss_of_a_node(cluster, s3_env, s3_mlflow_server, synth, tmp_path):
    s3_server = s3_env
    run = "loss-1"
    out = tmp_path / "submit.log"
    with out.open("w") as log:
        proc = subprocess.Popen([str(S4SWEEP), "submit", str(LOSS_SPEC.relative_to(PROJECT_ROOT)), "--address",
                                 cluster.dashboard, "--wait", "--tracking-uri", s3_mlflow_server, "--storage",
                                 storage(s3_server), "--run-name", run], cwd=PROJECT_ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env=cluster.env(S4SWEEP_TEST_SYNTH_ROOT=synth),
                                start_new_session=True)
    names = [f"ce-s{i}" for i in range(4)]
    try:
        first = cluster.held(run, attempt=1, count=4)
        per_node = Counter(info["node_ip"] for info in first.values())
        assert per_node == {"127.0.0.2": 2, "127.0.0.3": 2}, first  # two half-GPU trials share each node's GPU
        lost = sorted(t for t, info in first.items() if info["node_ip"] == "127.0.0.2")
        kept = sorted(t for t, info in first.items() if info["node_ip"] == "127.0.0.3")
        cluster.release(run, kept[0])  # its end frees half of node 3's GPU: one lost trial can come back there
        finished(s3_mlflow_server, storage(s3_server), run, kept[0])
        killed_at = cluster.kill("127.0.0.2")
        (back, again), = cluster.held(run, lost, attempt=2, count=1).items()
        assert again["node_ip"] == "127.0.0.3"  # a surviving node
        (waiting,) = set(lost) - {back}  # node 3 is full (kept[1] and `back` hold there): it stays pending
        cluster.start_worker("127.0.0.2")  # the node comes back (a new node id): the pending trial goes there
        rejoined = cluster.held(run, [waiting], attempt=2, count=1)[waiting]
        assert rejoined["node_ip"] == "127.0.0.2" and rejoined["node_id"] != first[waiting]["node_id"]
        cluster.release(run, *names)
        assert proc.wait(timeout=WAIT_S) == 0, out.read_text()[-5000:]
    finally:
        cluster.release(run, *names)
        if proc.poll() is None:
            cluster.helpers.kill_tree(proc)
    text = out.read_text()
    assert f"job {run}: SUCCEEDED" in text
    warned = re.findall(r"trial (ce-s\d): Ray scheduled 0.5 GPU for it \(GPU id 0 on node (\S+)\) but no CUDA device "
                        r"is visible there: it runs on the CPU", text)
    assert sorted(warned) == sorted([(t, info["node_ip"]) for t, info in first.items()] + [
        (back, "127.0.0.3"), (waiting, "127.0.0.2")]), warned  # one warning line per attempt, none else
    assert s3_server.secret_key not in text and s3_server.access_key not in text  # the job's log names no credential

    kids = children(s3_mlflow_server, storage(s3_server), run)
    assert sorted(kids) == names and {k.status for k in kids.values()} == {"FINISHED"}
    first_nodes = Counter(k.tags["s4sweep.nodes"].split(",")[0] for k in kids.values())
    assert sorted(first_nodes.values()) == [2, 2]  # the tags show the packing: two trials per node's one GPU
    assert not any(s3_server.secret_key in v or s3_server.access_key in v for k in kids.values()
                   for v in [*k.params.values(), *k.tags.values()])
    trial_dirs = (open_location(storage(s3_server)) / "sweeps" / run / "tune").children()
    assert sorted(d.name.rsplit("-", 1)[0] for d in trial_dirs if d.name.startswith("ce-")) == names
    assert all(any(c.name.startswith("checkpoint_") for c in d.children()) for d in trial_dirs
               if d.name.startswith("ce-"))  # Tune's checkpoints are in the bucket
    client = MlflowClient(s3_mlflow_server)
    for name, kid in kids.items():
        tags = kid.tags
        assert tags["s4sweep.device"] == "cpu" and tags["s4sweep.gpu"] == "0.5" and tags["s4sweep.gpu_ids"] == "0"
        assert steps(client, kid.run_id, "train/loss_sup") == [2, 4, 6, 8, 10, 12], name  # once each, no gap
        assert steps(client, kid.run_id, "val/synth/miou") == [3, 6, 9, 12], name
        if name in lost:
            assert tags["s4sweep.attempt"] == "2" and tags["s4sweep.restored_from"] == "6", tags
            assert tags["s4sweep.nodes"].split(",")[0] == first[name]["node_id"]
        else:
            assert tags["s4sweep.attempt"] == "1" and tags["s4sweep.nodes"] == first[name]["node_id"]
    restart_s = float(kids[back].tags["s4sweep.attempt_started"]) - killed_at
    redone = HOLD_AT - int(kids[back].tags["s4sweep.restored_from"])
    noticed = re.search(rf"Trial {back} errored after \d+ iterations at (\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d)", text)
    noticed_s = time.mktime(time.strptime(noticed[1], "%Y-%m-%d %H:%M:%S")) - killed_at if noticed else float("nan")
    print(f"\nnode-loss timeline: trials per node {dict(per_node)}; node 127.0.0.2 killed; Tune saw {back} fail "
          f"{noticed_s:.0f} s later (1 s resolution); it ran again on 127.0.0.3 {restart_s:.1f} s after the kill "
          f"(restored from iteration 6, {redone} iterations redone); {waiting} reached iteration {HOLD_AT} on the "
          f"rejoined 127.0.0.2 {rejoined['time'] - killed_at:.1f} s after the kill")
    assert redone <= 3  # at most the checkpoint interval


def test_whole_gpus_give_one_trial_per_node_and_an_interrupted_run_resumes_from_the_object_store(
        cluster, s3_env, s3_mlflow_server, synth):
    run, root = "whole-1", storage(s3_env)
    command = [str(S4SWEEP), "sweep", str(WHOLE_SPEC), "--address", cluster.gcs, "--storage", root,
               "--tracking-uri", s3_mlflow_server]
    fault = json.dumps({"kind": "hold", "at_iteration": HOLD_AT, "dir": str(cluster.holds)})
    env = cluster.env(S4SWEEP_TEST_SYNTH_ROOT=synth, S4SWEEP_INJECT_FAULT=fault)
    proc = subprocess.Popen([*command, "--run-name", run], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        first = cluster.held(run, attempt=1, count=2)  # both at once: one GPU each, so on different nodes
        assert sorted(info["node_ip"] for info in first.values()) == list(WORKERS), first
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Tune saves its state to the object store and returns
        out, _ = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            cluster.helpers.kill_tree(proc)
    assert proc.returncode == 130, out[-5000:]
    assert runs.load(root, run).status == "interrupted"
    cluster.release(run, *first)
    resumed = subprocess.run([*command, "--resume", run], env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    assert runs.load(root, run).status == "finished"
    kids = children(s3_mlflow_server, root, run)
    assert sorted(kids) == ["ce-s0", "ce-s1"] and {k.status for k in kids.values()} == {"FINISHED"}
    client = MlflowClient(s3_mlflow_server)
    for kid in kids.values():
        assert kid.tags["s4sweep.gpu"] == "1" and kid.tags["s4sweep.restored_from"] == "6", kid.tags
        assert steps(client, kid.run_id, "train/loss_sup") == [2, 4, 6, 8, 10, 12]


def test_report_and_regress_read_a_run_kept_on_the_object_store(cluster, s3_env, s3_mlflow_server, tmp_path, capsys):
    common = ["--storage", storage(s3_env), "--tracking-uri", s3_mlflow_server]
    baseline = tmp_path / "baseline.json"
    assert cli.main(["report", "multinode-micro", *common, "--format", "md,csv", "--out", str(tmp_path / "report"),
                     "--emit-baseline", str(baseline)]) == 0, capsys.readouterr().err
    assert "report of run loss-1" in capsys.readouterr().out and (tmp_path / "report" / "report.md").is_file()
    assert cli.main(["regress", "multinode-micro", "--baseline", str(baseline), *common,
                     "--out", str(tmp_path / "regress")]) == 0, capsys.readouterr().err
    assert "verdict of run loss-1" in capsys.readouterr().out
