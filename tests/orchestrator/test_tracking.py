"""orchestrator.tracking against the real thing: a shared `mlflow server` and an embedded SQLite store in tmp_path.

Results are read back with a plain MlflowClient, not through the Tracker, so the wrapper cannot agree with itself.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import tracking
from orchestrator.tracking import Tracker, TrackingError, embedded_uri, flatten_params, init_store

CONFIG = {
    "preset": "tiny",
    "dataset": {"name": "synth", "root": None, "crop_size": [64, 128], "flip": True},
    "loss": {"name": "focal", "options": {"gamma": 2.0}},
    "eval": [{"name": "synth", "split": "val"}],
    "seed": 0,
    "_trial_dir": "/not/a/param",
}


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = embedded_uri(tmp_path_factory.mktemp("embedded") / "runs")
    init_store(uri)
    return uri


@pytest.fixture(params=["server", "sqlite"])
def store(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("mlflow_server" if request.param == "server" else "sqlite_store")


@pytest.fixture
def tracker(store: str) -> Tracker:
    return Tracker(store)


@pytest.fixture
def experiment(tracker: Tracker) -> str:
    return tracker.experiment(f"test-{uuid.uuid4().hex[:10]}")  # both stores serve the whole session


def test_sweep_parent_two_children_params_metrics_artifacts_and_statuses(
    store: str, tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # nothing may land in the working directory (./mlruns, ./mlartifacts)
    name = f"test-{uuid.uuid4().hex[:10]}"
    experiment = tracker.experiment(name)
    assert tracker.experiment(name) == experiment  # found, not created twice

    parent = tracker.start_parent(experiment, run_name="smoke-20261125T000000Z", tags={"git_sha": "abc123"})
    focal = tracker.start_child(experiment, parent, run_name="focal-g2-s0", params=CONFIG, tags={"trial": "0"})
    ce_config = {**CONFIG, "loss": {"name": "ce", "options": {}}}
    ce = tracker.start_child(experiment, parent, run_name="ce-s0", params=ce_config, tags={"trial": "1"})

    for step in (0, 10, 20):
        tracker.log_metrics(focal, step, {"loss": 1.0 / (step + 1), "miou": step / 100})
    wide = {f"iou/class_{i:04d}": i / 1500 for i in range(1500)}  # > 1000 metrics: two batches
    tracker.log_metrics(focal, 20, wide)
    tracker.log_metrics(ce, 0, {"loss": math.nan})  # NaN is stored, not dropped

    table = tmp_path / "per_class.csv"
    table.write_text("class,iou\nroad,0.9\n")
    tracker.log_artifact(focal, table, "report")
    tracker.log_dict(focal, {"road": 0.9, "sky": 0.8}, "iou/per_class.json")
    tracker.log_text(focal, "hello", "notes.txt")
    tracker.set_tags(focal, {"best_step": "20"})

    tracker.end(focal, "FINISHED")
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 2000 + "ValueError: boom"
    tracker.end(ce, "FAILED", error=traceback)
    tracker.end(parent, "KILLED")

    client = MlflowClient(store)
    got = client.get_run(focal)
    assert got.data.params == flatten_params(CONFIG)
    assert got.data.params["loss.options.gamma"] == "2.0" and "_trial_dir" not in got.data.params
    assert got.data.tags["mlflow.parentRunId"] == parent and got.data.tags["trial"] == "0"
    assert got.data.tags["best_step"] == "20"
    assert len(got.data.metrics) == 2 + 1500 and got.data.metrics["iou/class_1499"] == pytest.approx(1499 / 1500)
    history = [(m.step, m.value) for m in client.get_metric_history(focal, "loss")]
    assert history == [(0, 1.0), (10, 1 / 11), (20, 1 / 21)]
    assert math.isnan(client.get_run(ce).data.metrics["loss"])

    out = tmp_path / "download"
    out.mkdir()
    assert Path(client.download_artifacts(focal, "report/per_class.csv", str(out))).read_text() == table.read_text()
    assert json.loads(Path(client.download_artifacts(focal, "iou/per_class.json", str(out))).read_text()) == {
        "road": 0.9, "sky": 0.8}
    assert Path(client.download_artifacts(focal, "notes.txt", str(out))).read_text() == "hello"

    assert {r: client.get_run(r).info.status for r in (focal, ce, parent)} == {
        focal: "FINISHED", ce: "FAILED", parent: "KILLED"}
    error = client.get_run(ce).data.tags[tracking.ERROR_TAG]
    assert len(error) == tracking.ERROR_MAX_CHARS and error.endswith("ValueError: boom")
    assert tracking.ERROR_TAG not in client.get_run(focal).data.tags

    children = {c.name: c for c in tracker.children(experiment, parent)}
    assert set(children) == {"focal-g2-s0", "ce-s0"}
    assert children["ce-s0"].status == "FAILED" and children["ce-s0"].params["loss.name"] == "ce"
    assert children["focal-g2-s0"].metrics["miou"] == pytest.approx(0.2)
    assert list(cwd.iterdir()) == []


def test_resume_reopens_an_ended_run_and_history_keeps_the_last_value_per_step(
    store: str, tracker: Tracker, experiment: str
) -> None:
    parent = tracker.start_parent(experiment, run_name="resume", tags={})
    child = tracker.start_child(experiment, parent, run_name="ce-s0", params={"seed": 0}, tags={})
    tracker.log_metrics(child, 0, {"loss": 3.0})
    tracker.log_metrics(child, 1, {"loss": 2.0})
    tracker.end(child, "FAILED", error="preempted")

    tracker.resume(child)  # the restored trial replays step 1, then goes on
    tracker.log_metrics(child, 1, {"loss": 1.5})
    tracker.log_metrics(child, 2, {"loss": 1.0})

    run = MlflowClient(store).get_run(child)
    assert run.info.status == "RUNNING" and tracking.ERROR_TAG not in run.data.tags
    assert len(MlflowClient(store).get_metric_history(child, "loss")) == 4  # history kept, replay included
    assert tracker.metric_history(child, "loss") == [(0, 3.0), (1, 1.5), (2, 1.0)]
    assert [c.run_id for c in tracker.children(experiment, parent)] == [child]  # continued, not duplicated


def test_last_steps_are_what_a_resumed_trial_must_not_log_again(tracker: Tracker, experiment: str) -> None:
    parent = tracker.start_parent(experiment, run_name="last-steps", tags={})
    child = tracker.start_child(experiment, parent, run_name="ce-s0", params={"seed": 0}, tags={})
    assert tracker.last_steps(child) == {}
    for step in (2, 4, 6, 8):  # the lost attempt logged up to 8; its last checkpoint was at 6
        tracker.log_metrics(child, step, {"train/loss_sup": 1.0 / step})
    tracker.log_metrics(child, 6, {"val/synth/miou": 0.1})
    tracker.log_metrics(child, 3, {"val/synth/miou": 0.05})  # the highest step counts, not the latest call
    assert tracker.last_steps(child) == {"train/loss_sup": 8, "val/synth/miou": 6}


def test_reconcile_kills_running_orphans_and_keeps_live_trials(store: str, tracker: Tracker, experiment: str) -> None:
    parent = tracker.start_parent(experiment, run_name="reconcile", tags={})
    orphan, live, done = (tracker.start_child(experiment, parent, run_name=name, params={}, tags={})
                          for name in ("orphan", "live", "done"))
    tracker.end(done, "FINISHED")

    assert tracker.reconcile(experiment, parent, keep_running=[live]) == [orphan]

    client = MlflowClient(store)
    assert [client.get_run(r).info.status for r in (orphan, live, done)] == ["KILLED", "RUNNING", "FINISHED"]
    assert client.get_run(orphan).data.tags[tracking.ERROR_TAG].startswith("orphaned:")
    assert client.get_run(parent).info.status == "RUNNING"  # the parent is not its own child
    assert tracker.reconcile(experiment, parent, keep_running=[live]) == []


def test_find_parent_matches_the_sweep_run_tag_of_parents_only(tracker: Tracker, experiment: str) -> None:
    first = tracker.start_parent(experiment, run_name="smoke-1", tags={})
    second = tracker.start_parent(experiment, run_name="nightly", tags={"s4sweep.run": "smoke-2"})
    tracker.start_child(experiment, second, run_name="t0", params={}, tags={"s4sweep.run": "smoke-1"})

    assert tracker.find_parent(experiment, "smoke-1") == first
    assert tracker.find_parent(experiment, "smoke-2") == second
    assert tracker.find_parent(experiment, "smoke-3") is None


def test_children_pages_through_the_search(
    tracker: Tracker, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracking, "SEARCH_PAGE_SIZE", 2)  # stands in for MLflow's 1000-run pages
    parent = tracker.start_parent(experiment, run_name="paging", tags={})
    made = [tracker.start_child(experiment, parent, run_name=f"t{i}", params={}, tags={}) for i in range(5)]
    assert sorted(c.run_id for c in tracker.children(experiment, parent)) == sorted(made)


def test_end_refuses_an_unknown_status(tracker: Tracker, experiment: str) -> None:
    run = tracker.start_parent(experiment, run_name="x", tags={})
    with pytest.raises(ValueError, match="FINISHED, FAILED, KILLED.*'DONE'"):
        tracker.end(run, "DONE")  # type: ignore[arg-type]


# --- reachability, retries, the SQLite schema race ---------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_reachable_names_the_uri_of_a_closed_port_within_the_timeout() -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"tracking server {uri} is unreachable"):
        tracking.check_reachable(uri, timeout_s=1.5)
    assert time.monotonic() - started < 3.0


def test_check_reachable_accepts_a_live_server_and_a_creatable_sqlite_folder(
    mlflow_server: str, tmp_path: Path
) -> None:
    tracking.check_reachable(mlflow_server, timeout_s=5)
    tracking.check_reachable(embedded_uri(tmp_path / "new" / "run"))
    assert (tmp_path / "new" / "run").is_dir()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(TrackingError, match="cannot create its folder"):
        tracking.check_reachable(embedded_uri(tmp_path / "a_file" / "run"))


def test_tracker_refuses_a_sqlite_store_that_init_store_has_not_created(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="init_store"):
        Tracker(embedded_uri(tmp_path))
    with pytest.raises(TrackingError, match="not supported"):
        Tracker(f"file://{tmp_path}/mlruns")


class StubServer(BaseHTTPRequestHandler):
    """Answers every POST with the next status of `plan` (and counts them); stands in for a flaky server."""

    plan: list[int] = []
    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).posts += 1
        status = type(self).plan.pop(0) if type(self).plan else 200
        body = b"{}" if status == 200 else (
            b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}' if status == 400 else b"unavailable")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # leave the retrying to the Tracker
    monkeypatch.setattr(tracking, "RETRY_BACKOFF_S", 0.01)
    StubServer.posts = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubServer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("plan", "posts", "fails"), [([503], 2, False), ([503, 502, 500], 3, True), ([400], 1, True)])
def test_log_metrics_retries_transient_errors_then_raises(
    stub_server: str, plan: list[int], posts: int, fails: bool
) -> None:
    StubServer.plan = list(plan)
    tracker = Tracker(stub_server)
    if fails:
        with pytest.raises(TrackingError, match=f"tracking store {stub_server}: log 1 metrics at step 7 to run r1"):
            tracker.log_metrics("r1", 7, {"loss": 0.5})
    else:
        tracker.log_metrics("r1", 7, {"loss": 0.5})
    assert StubServer.posts == posts


def concurrent_writer(uri: str, experiment_id: str, parent_id: str, index: int, barrier: Barrier) -> None:
    """One trial process: all four open the store and create the same new experiment at once."""
    tracker = Tracker(uri)
    barrier.wait(timeout=60)
    race = tracker.experiment("created-by-every-writer")
    run = tracker.start_child(experiment_id, parent_id, run_name=f"t{index}", params={"index": index}, tags={})
    for step in range(10):
        tracker.log_metrics(run, step, {f"m{k}": step + k for k in range(20)})
    tracker.log_dict(run, {"index": index}, "result.json")
    tracker.set_tags(run, {"race_experiment": race})
    tracker.end(run, "FINISHED")


def test_init_store_lets_four_processes_write_one_fresh_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spawned children import `concurrent_writer` from this module, named `tests.orchestrator...` under pytest's
    # importlib mode; they inherit sys.path, so put the repository root on it (`pytest` does not, `python -m` does).
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    uri = embedded_uri(tmp_path / "runs")
    init_store(uri)
    tracker = Tracker(uri)
    experiment = tracker.experiment("concurrent")
    parent = tracker.start_parent(experiment, run_name="concurrent", tags={})

    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(4)
    workers = [spawn.Process(target=concurrent_writer, args=(uri, experiment, parent, i, barrier)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]

    children = tracker.children(experiment, parent)
    assert sorted(c.name for c in children) == ["t0", "t1", "t2", "t3"]
    assert all(c.status == "FINISHED" and len(c.metrics) == 20 for c in children)
    assert len({c.tags["race_experiment"] for c in children}) == 1  # one experiment, not four
    assert all(len(tracker.metric_history(c.run_id, "m0")) == 10 for c in children)


# --- params and environment --------------------------------------------------------------------------------------


class Precision(Enum):
    FP32 = "fp32"


def test_flatten_params_dots_nested_keys_and_writes_lists_as_json() -> None:
    flat = flatten_params({**CONFIG, "precision": {"precision": Precision.FP32}, "note": "x" * 7000})
    assert flat == {
        "preset": "tiny",
        "dataset.name": "synth",
        "dataset.root": "None",
        "dataset.crop_size": "[64, 128]",
        "dataset.flip": "True",
        "loss.name": "focal",
        "loss.options.gamma": "2.0",
        "eval": '[{"name": "synth", "split": "val"}]',
        "seed": "0",
        "precision.precision": "fp32",
        "note": "x" * tracking.MAX_PARAM_VAL_LENGTH,
    }
    assert flatten_params({"gamma": 2}, "loss") == {"loss.gamma": "2"}
    assert flatten_params(flat) == flat  # already flat: unchanged


def test_environment_info_names_versions_hardware_and_pip_freeze() -> None:
    info = tracking.environment_info()
    expected = {"python", "platform", "hostname", "torch", "torchvision", "cuda", "devices", "ray", "mlflow", "optuna",
                "pip_freeze"}
    assert expected <= set(info)
    assert info["mlflow"].startswith("3.") and info["hostname"] == socket.gethostname()
    assert "mlflow==" in info["pip_freeze"].lower()
    assert all(isinstance(v, str) and v for k, v in info.items() if k != "pip_freeze")


def test_serve_ui_serves_the_embedded_store_without_touching_the_working_directory(
    tmp_path: Path, process_groups: list[subprocess.Popen]
) -> None:
    uri = embedded_uri(tmp_path / "runs")  # serve_ui creates it
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    port = closed_port()
    code = f"import sys; from orchestrator.tracking import serve_ui; sys.exit(serve_ui({uri!r}, port={port}))"
    with (tmp_path / "ui.log").open("wb") as log:
        process_groups.append(subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
    ui = f"http://127.0.0.1:{port}"
    tracking.check_reachable(ui, timeout_s=60)

    experiment = Tracker(uri).experiment("seen-by-the-ui")
    with urllib.request.urlopen(f"{ui}/api/2.0/mlflow/experiments/get-by-name?experiment_name=seen-by-the-ui") as r:
        assert json.load(r)["experiment"]["experiment_id"] == experiment
    assert list(cwd.iterdir()) == []  # no ./mlartifacts, no ./mlruns
