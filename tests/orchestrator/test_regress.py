"""`s4sweep regress` against a baseline emitted by `s4sweep report --emit-baseline`, on synthetic runs logged to a
real `mlflow server`: pass on the baseline's own run, 1 when a class degrades (new, then persisting), 2 on an identity
mismatch or missing trials, always with the verdict written and logged; the webhook gets the verdict as JSON."""

from __future__ import annotations

import http.server
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator import results
from orchestrator.cli import main
from orchestrator.tracking import Tracker


def _sibling(name: str) -> ModuleType:
    """test_results.py owns the helper that logs synthetic sweep runs (test modules cannot import each other)."""
    spec = importlib.util.spec_from_file_location(f"_s4sweep_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


G = _sibling("test_results")
SWEEP = "reg"


def trials(car_ce: int = 40, *, failed: str | None = None) -> list:
    out = [G.trial("ce", 0, [80, car_ce, 10]), G.trial("ce", 1, [80, car_ce, 10]),
           G.trial("focal", 0, [80, 60, 10], gamma=2.0), G.trial("focal", 1, [80, 60, 10], gamma=2.0)]
    for t in out:
        t.status = "FAILED" if t.name == failed else t.status
    return out


@pytest.fixture
def sweep(tmp_path: Path, mlflow_server: str) -> dict:
    """A storage with the baseline's own run (day 1), and its baseline file (IoU tolerance 2 points)."""
    storage = tmp_path / "runs"
    spec = G.spec_file(tmp_path, SWEEP, [{"name": "ce"}, {"name": "focal", "gamma": 2}], [0, 1])
    log = {"uri": mlflow_server, "storage": storage, "spec": spec}
    run("reg-day1", trials(), log)
    baseline = tmp_path / "baseline.json"
    assert main(["report", SWEEP, "--storage", str(storage), "--format", "md", "--out", str(tmp_path / "rep"),
                 "--emit-baseline", str(baseline), "--tolerance", "iou_abs=0.02"]) == 0
    return {**log, "baseline": baseline, "tmp": tmp_path}


def run(run_id: str, trial_list: list, log: dict, **kw) -> None:
    day = int(run_id.rsplit("day", 1)[1])
    G.log_sweep_run(log["uri"], log["storage"], sweep=SWEEP, run_id=run_id, spec=log["spec"], trials=trial_list,
                    created=f"2026-01-{day:02d}T00:00:00+00:00", **kw)


def regress(s: dict, *extra: str) -> tuple[int, dict]:
    out = s["tmp"] / "verdict"
    code = main(["regress", SWEEP, "--baseline", str(s["baseline"]), "--storage", str(s["storage"]),
                 "--out", str(out), *extra])
    assert (out / "verdict.md").is_file() and (out / "verdict.html").is_file()
    return code, json.loads((out / "verdict.json").read_text())


def test_the_baseline_file_pins_cells_identity_and_tolerances(sweep):
    base = json.loads(sweep["baseline"].read_text())
    assert base["sweep"] == SWEEP and base["source_run"] == "reg-day1" and base["axis"] == "variant"
    assert base["identity"]["data"] == {"synth": ["fp-synth-1"]} and base["identity"]["precision"] == ["float32"]
    assert base["identity"]["spec_sha256"] == "sha-of-reg.yaml" and base["identity"]["versions"]["torch"] == "2.14.1"
    assert base["tolerances"] == {"miou_abs": 0.01, "iou_abs": 0.02, "wall_rel": 0.5, "seed_std_k": 2.0}
    focal = next(c for c in base["cells"] if c["column"] == "focal-g2")
    assert focal["seeds"] == [[0, 0], [1, 0]] and focal["trials"] == 2
    assert focal["iou"]["car"] == {"mean": pytest.approx(0.6), "std": 0.0}
    assert focal["miou"]["mean"] == pytest.approx(0.5) and focal["wall_s"]["mean"] == 36.0


def test_regress_passes_on_the_baselines_own_run_and_logs_the_verdict(sweep):
    code, verdict = regress(sweep)
    assert code == 0 and verdict["status"] == "pass" and verdict["regressions"] == []
    assert len(verdict["checks"]) == 2 * (1 + 3 + 1)  # per cell: miou, 3 classes, wall time
    parent = results.find_run(SWEEP, storage=str(sweep["storage"])).parent_run_id
    assert "regress" in Tracker(sweep["uri"]).artifact_names(parent)


def test_a_degraded_class_exits_1_worst_first_new_then_persisting(sweep):
    run("reg-day2", trials(car_ce=28), sweep)  # ce loses 12 points of car IoU
    code, verdict = regress(sweep)
    assert code == 1 and verdict["status"] == "regression"
    worst = verdict["checks"][0]
    assert (worst["cell"], worst["metric"], worst["status"], worst["since"]) == (
        "ce @ synth→synth", "iou/car", "regression", "new")
    assert worst["delta"] == pytest.approx(-0.12) and worst["tolerance"] == pytest.approx(0.02)
    assert [c["metric"] for c in verdict["regressions"]] == ["iou/car", "miou"]  # ce's miou fell 4 points
    md = (sweep["tmp"] / "verdict" / "verdict.md").read_text()
    assert "| ce @ synth→synth | iou/car | 40.0 ± 0.0 | 28.0 | -12.0 | 2.0 | **REGRESSION** | new |" in md

    run("reg-day3", trials(car_ce=28), sweep)
    code, verdict = regress(sweep)
    assert code == 1 and {c["since"] for c in verdict["regressions"]} == {"persisting"}
    assert verdict["previous_run"] == "reg-day2"


def test_an_identity_mismatch_or_missing_trials_exit_2_after_writing_the_verdict(sweep):
    run("reg-day2", trials(), sweep, data="fp-synth-OTHER")
    code, verdict = regress(sweep)
    assert code == 2 and verdict["status"] == "unusable"
    assert verdict["problems"] == ["identity mismatch: data is synth: fp-synth-OTHER, the baseline has synth: "
                                   "fp-synth-1"]
    run("reg-day3", trials(failed="focal-g2-s1"), sweep, status="failed")
    code, verdict = regress(sweep)
    assert code == 2 and verdict["problems"] == ["missing trials: focal-g2 @ synth→synth has no finished trial for "
                                                 "seed(s) seed 1"]


def test_a_file_that_is_not_a_baseline_is_a_one_line_error(sweep, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cells": []}))
    assert main(["regress", SWEEP, "--baseline", str(bad), "--storage", str(sweep["storage"])]) == 2
    assert "`format` must be 's4sweep-baseline/1'" in capsys.readouterr().err


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_the_webhook_receives_the_verdict_as_json(sweep, webhook):
    url, received = webhook
    run("reg-day2", trials(car_ce=28), sweep)
    code, _ = regress(sweep, "--webhook", url)
    assert code == 1 and len(received) == 1
    body = received[0]
    assert body["status"] == "regression" and body["exit_code"] == 1 and body["run"] == "reg-day2"
    assert body["headline"].startswith("REGRESSION (exit 1): 2 check(s)")
    assert body["regressions"][0]["metric"] == "iou/car"


NIGHTLY_BASELINE = Path(__file__).resolve().parents[2] / "search_spaces" / "baselines" / "nightly.json"


@pytest.mark.slow
def test_the_nightly_sweep_passes_regress_against_the_shipped_baseline(tmp_path, mlflow_server):
    """The shipped baseline cannot go stale silently: a change to what a micro trial computes, to the nightly sweep
    file or to the generated data fails here. Regenerate it with the command in README "Reports and regression"."""
    from orchestrator.spec import load_spec, resolve_spec_path
    from orchestrator.sweep import launch

    storage = tmp_path / "runs"
    outcome = launch(load_spec(resolve_spec_path("nightly")), storage=str(storage), tracking_uri=mlflow_server,
                     trigger="nightly")
    assert outcome.exit_code == 0, outcome.table
    out = tmp_path / "verdict"
    code = main(["regress", "nightly", "--baseline", str(NIGHTLY_BASELINE), "--storage", str(storage),
                 "--out", str(out)])
    assert code == 0, (out / "verdict.md").read_text()
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["problems"] == [] and {c["status"] for c in verdict["checks"]} <= {"ok", "improved"}
    assert main(["report", "nightly", "--storage", str(storage), "--small-objects", "--format", "md"]) == 0
    md = (storage / "sweeps" / outcome.run.run_id / "report" / "report.md").read_text()
    assert "| synth | synth | focal-g2 |" in md  # recall by object size, from each trial's final evaluation


def test_a_vanished_class_or_a_renamed_metric_exits_2_against_the_shipped_baseline(tmp_path, mlflow_server):
    """Runs of the nightly sweep with the shipped baseline's identity and its numbers pass; the same run with one
    class's IoU gone from one trial, or with miou logged under another name, is unusable (exit 2), and the verdict
    names the check. A missing number is never "within tolerance", nor hidden by the other seed's value."""
    from orchestrator.spec import resolve_spec_path

    base = json.loads(NIGHTLY_BASELINE.read_text())
    classes = tuple(base["cells"][0]["iou"])
    storage = tmp_path / "runs"

    def nightly(day: int, drop: dict[str, tuple[str, ...]] | None = None, rename: dict[str, str] | None = None
                ) -> tuple[int, dict]:
        trials = []
        for cell in base["cells"]:
            loss, gamma = ("focal", 2.0) if cell["column"] == "focal-g2" else ("ce", None)
            values = {"val/synth/miou": cell["miou"]["mean"]}
            values |= {f"val/synth/iou/{c}": stat["mean"] for c, stat in cell["iou"].items()}
            for old, new in (rename or {}).items():
                values[new] = values.pop(old)
            for seed, _ in cell["seeds"]:
                t = G.trial(loss, seed, [0] * len(classes), gamma=gamma, wall_s=cell["wall_s"]["mean"],
                            classes=classes, extra=values)
                t.drop = (drop or {}).get(t.name, ()) + tuple(rename or ())
                trials.append(t)
        G.log_sweep_run(mlflow_server, storage, sweep="nightly", run_id=f"nightly-day{day}",
                        spec=resolve_spec_path("nightly"), trials=trials, data=base["identity"]["data"]["synth"][0],
                        spec_sha256=base["identity"]["spec_sha256"], created=f"2026-02-{day:02d}T00:00:00+00:00")
        out = tmp_path / f"verdict-{day}"
        code = main(["regress", "nightly", "--baseline", str(NIGHTLY_BASELINE), "--storage", str(storage),
                     "--run", f"nightly-day{day}", "--out", str(out)])
        return code, json.loads((out / "verdict.json").read_text())

    code, verdict = nightly(1)
    assert code == 0 and verdict["problems"] == [], verdict["problems"]  # the identity matches: only numbers count

    code, verdict = nightly(2, drop={"ce-s1": ("val/synth/iou/car",)})
    assert code == 2 and verdict["status"] == "unusable"
    assert verdict["problems"] == ["missing numbers: ce @ synth→synth iou/car (1 of 2 trials lack it)"]
    assert [(c["cell"], c["metric"], c["status"]) for c in verdict["checks"][:1]] == [
        ("ce @ synth→synth", "iou/car", "missing")]

    code, verdict = nightly(3, rename={"val/synth/miou": "val/synth/mIoU"})
    assert code == 2
    assert verdict["problems"] == ["missing numbers: ce @ synth→synth miou (2 of 2 trials lack it); focal-g2 @ "
                                   "synth→synth miou (2 of 2 trials lack it)"]
    md = (tmp_path / "verdict-3" / "verdict.md").read_text()
    assert "UNUSABLE (exit 2): missing numbers: ce @ synth→synth miou" in md and "within tolerance" not in md
