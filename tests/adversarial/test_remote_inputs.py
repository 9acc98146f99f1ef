"""What `regress`, the tracking commands and `submit` read from elsewhere: baseline files (broken, foreign, NaN),
tracking URIs (unreachable, wrong scheme, not MLflow) and Ray clusters (none, refusing the token, other versions).

The clusters here are a small HTTP server speaking the four calls of Ray's job API that `submit` makes before it
uploads anything (version, submit, status, logs): a real head takes ~13 s and 2 GB to start, and the real head's
token refusals are tested in tests/orchestrator/test_submit.py."""

from __future__ import annotations

import copy
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.submit import PROBE_MARK, local_versions
from search_spaces import shipped_files

NIGHTLY = next(p for p in shipped_files() if p.stem == "nightly").parent / "baselines" / "nightly.json"
SUBMIT_SPEC = Path(__file__).parents[1] / "orchestrator" / "data" / "submit-micro.yaml"


# --- baselines ----------------------------------------------------------------------------------------------------


def edited(change: Any) -> Any:
    data = json.loads(NIGHTLY.read_text())
    change(data)
    return json.dumps(data, allow_nan=True)


def _cell(**values: Any) -> Any:
    return lambda d: d["cells"][0].update(values)


# (case id, file text, what the message names)
BASELINES = [
    ("not-json", "this is not JSON", ["cannot be read", "Expecting value"]),
    ("truncated", NIGHTLY.read_text()[:500], ["cannot be read"]),
    ("another-format", edited(lambda d: d.update(format="s4sweep-baseline/2")), ["`format` must be",
                                                                                 "'s4sweep-baseline/2'"]),
    ("a-list", "[1, 2, 3]", ["`format` must be", "[1, 2, 3]"]),
    ("another-sweep", edited(lambda d: d.update(sweep="smoke")), ["pins sweep 'smoke', not 'nightly'"]),
    ("nan-miou", edited(_cell(miou={"mean": float("nan"), "std": 0.01})),
     ["cells[0].miou.mean: must be a finite number or null, but got nan"]),
    ("infinite-iou", edited(lambda d: d["cells"][1]["iou"]["road"].update(std=float("inf"))),
     ["cells[1].iou.road.std: must be a finite number or null, but got inf"]),
    ("negative-std", edited(_cell(wall_s={"mean": 3.0, "std": -1})), ["cells[0].wall_s.std: must be >= 0", "-1"]),
    ("no-cells", edited(lambda d: d.update(cells=[])), ["cells: must be a non-empty list", "[]"]),
    ("cell-without-miou", edited(lambda d: d["cells"][0].pop("miou")), ["cells[0].miou: must be {mean, std}",
                                                                        "None"]),
    ("iou-not-a-mapping", edited(_cell(iou=[0.5])), ["cells[0].iou: must map class names", "[0.5]"]),
    ("column-not-a-string", edited(_cell(column=3)), ["cells[0].column: must be a string", "3"]),
    ("unknown-tolerance", edited(lambda d: d["tolerances"].update(miou_rel=0.1)),
     ["tolerances.miou_rel: unknown tolerance", "miou_abs"]),
    ("tolerance-a-string", edited(lambda d: d["tolerances"].update(iou_abs="3%")),
     ["tolerances.iou_abs: must be a finite number >= 0", "'3%'"]),
]


@pytest.mark.parametrize(("text", "needles"), [b[1:] for b in BASELINES], ids=[b[0] for b in BASELINES])
def test_a_baseline_that_cannot_be_trusted_is_refused_before_any_run_is_read(text, needles, tmp_path, refuse):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(text)
    out = refuse(["regress", "nightly", "--baseline", baseline, "--storage", tmp_path / "runs", "--out",
                  tmp_path / "verdict"], f"baseline {baseline}", *needles)
    assert out.err.count("\n") == 1, out.err
    assert not (tmp_path / "verdict").exists() and not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_baseline_path_that_is_no_file_is_named(kind, tmp_path, refuse):
    baseline = tmp_path / "baseline.json"
    if kind == "directory":
        baseline.mkdir()
    refuse(["regress", "nightly", "--baseline", baseline, "--storage", tmp_path / "runs"], f"baseline {baseline}",
           "cannot be read")


# --- tracking URIs ------------------------------------------------------------------------------------------------


class NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[str]:
    """An HTTP server that is not an MLflow server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


URIS = [  # (case id, command, URI, what the message names)
    ("file-store", "report", "file:///tmp/mlruns", ["'file:///tmp/mlruns' is not supported", "http(s)://"]),
    ("ftp", "sweep", "ftp://host/mlflow", ["'ftp://host/mlflow' is not supported"]),
    ("no-scheme", "regress", "mlflow.example.org:5000", ["'mlflow.example.org:5000' is not supported"]),
    ("sqlite-without-file", "report", "sqlite://", ["'sqlite://' names no SQLite file"]),
    ("sqlite-file-absent", "report", "sqlite:////nonexistent/s4sweep/mlflow.db",
     ["no such database file /nonexistent/s4sweep/mlflow.db"]),
    ("closed-port", "report", "http://127.0.0.1:9", ["tracking server http://127.0.0.1:9 is unreachable",
                                                      "Connection refused"]),
    ("server-as-ui", "ui", "http://127.0.0.1:9", ["http://127.0.0.1:9 is already a tracking server"]),
]


@pytest.mark.parametrize(("command", "uri", "needles"), [u[1:] for u in URIS], ids=[u[0] for u in URIS])
def test_a_tracking_uri_that_cannot_work_is_named(command, uri, needles, tmp_path, refuse, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = {"report": ["report", "nightly"], "regress": ["regress", "nightly", "--baseline", NIGHTLY],
            "sweep": ["sweep", "nightly"], "ui": ["ui"]}[command]
    refuse([*argv, "--tracking-uri", uri, "--storage", tmp_path / "runs"], *needles)
    assert not (tmp_path / "runs" / "sweeps").exists()


def test_a_web_server_that_is_not_mlflow_is_named(web_server, tmp_path, refuse, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", web_server)  # from the environment this time
    refuse(["report", "nightly", "--storage", tmp_path / "runs"], f"tracking server {web_server} is unreachable",
           "answered 404")


# --- submit: a cluster that answers the job API ---------------------------------------------------------------------


class JobApi(http.server.BaseHTTPRequestHandler):
    """Ray's job API as far as `submit` goes before uploading: the probe job's logs say what `cluster` holds."""

    cluster: dict[str, Any] = {}

    def _reply(self, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _denied(self) -> bool:
        status = self.cluster.get("auth")
        if status:
            self._reply({"error": "Unauthorized"}, status)
        return bool(status)

    def do_GET(self) -> None:  # noqa: N802
        if self._denied():
            return
        if self.path == "/api/version":
            self._reply({"version": "4", "ray_version": self.cluster["ray"] or "2.60.0", "ray_commit": "0"})
        elif self.path.endswith("/logs"):
            versions = {k: self.cluster[k] for k in ("ray", "s4sweep", "python", "executable", "s4sweep_home")}
            self._reply({"logs": f"{PROBE_MARK} {json.dumps(versions)}\n"})
        else:
            job = self.path.rstrip("/").rsplit("/", 1)[1]
            self._reply({"type": "SUBMISSION", "submission_id": job, "entrypoint": "python -c ...",
                         "status": self.cluster["status"], "message": ""})

    def do_POST(self) -> None:  # noqa: N802
        if self._denied():
            return
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self._reply({"job_id": None, "submission_id": body.get("submission_id") or "raysubmit_1"})

    def do_DELETE(self) -> None:  # noqa: N802
        self._reply({"deleted": True})

    def log_message(self, *args: Any) -> None:
        pass


HERE = {**local_versions(), "executable": "/opt/venv/bin/python", "s4sweep_home": "/shared/s4sweep",
        "status": "SUCCEEDED", "auth": None}
CLUSTERS = [  # (case id, how the cluster differs from this machine, what the message names)
    ("ray-version", {"ray": "2.59.0"}, ["does not match this machine", f"ray 2.59.0 on the cluster, "
                                                                        f"{HERE['ray']} here"]),
    ("no-s4sweep", {"s4sweep": None}, ["s4sweep is not installed in the cluster's Python (/opt/venv/bin/python)"]),
    ("probe-fails", {"status": "FAILED"}, ["the version probe job", "is FAILED, not SUCCEEDED"]),
    ("no-token", {"auth": 401}, ["refused the request (Authentication required", "RAY_AUTH_MODE=token"]),
    ("wrong-token", {"auth": 403}, ["refused the request (Authentication failed"]),
    ("no-storage", {"s4sweep_home": None}, ["sets no S4SWEEP_HOME", "--storage"]),
]


@pytest.fixture
def job_api() -> Iterator[tuple[str, dict[str, Any]]]:
    cluster = copy.deepcopy(HERE)
    handler = type("ThisJobApi", (JobApi,), {"cluster": cluster})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", cluster
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("change", "needles"), [c[1:] for c in CLUSTERS], ids=[c[0] for c in CLUSTERS])
def test_a_cluster_that_cannot_run_the_sweep_is_refused_before_upload(change, needles, job_api, refuse, monkeypatch):
    address, cluster = job_api
    cluster.update(change)
    monkeypatch.setenv("S4SWEEP_TEST_SYNTH_ROOT", "/data/synth")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    storage = [] if change.get("s4sweep_home", "") is None else ["--storage", "/shared"]
    refuse(["submit", SUBMIT_SPEC, "--address", address, "--tracking-uri", "http://127.0.0.1:5000", *storage],
           f"at {address}", *needles)


@pytest.mark.parametrize(("address", "needle"), [
    ("ray://127.0.0.1:10001", "--address ray://127.0.0.1:10001: not the job API"),
    ("nowhere", "cannot reach the Ray job API at nowhere"),
], ids=["ray-client-address", "not-a-url"])
def test_an_address_that_is_no_job_api_is_refused_at_once(address, needle, refuse, monkeypatch):
    monkeypatch.setenv("S4SWEEP_TEST_SYNTH_ROOT", "/data/synth")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", address)  # from the environment
    refuse(["submit", SUBMIT_SPEC, "--tracking-uri", "http://127.0.0.1:5000", "--storage", "/shared"], needle)


def test_a_sweep_file_outside_the_project_cannot_travel(tmp_path, refuse):
    spec = tmp_path / "elsewhere.yaml"
    spec.write_text("name: elsewhere\nbase: {preset: micro}\n")
    refuse(["submit", spec, "--address", "http://127.0.0.1:9", "--tracking-uri", "http://127.0.0.1:5000"],
           f"{spec}: the sweep file must lie inside the project")
