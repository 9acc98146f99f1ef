"""`s4sweep report` over several runs: one table per evaluation set the runs share, columns (training set, loss),
rows the classes, as the study's Table 1 puts its two training sets side by side. Synthetic runs on a real
`mlflow server` (exact numbers), then the two Table 1 sweep files' mirrors end to end: generated data in the
Cityscapes and IDD layouts, the micro preset, real local Ray."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.cli import main

DATA = Path(__file__).with_name("data")


def trained_on(runs: ModuleType, dataset: str, label_set: str | None, seed: int, intersection: list[int]):
    t = runs.trial("ce", seed, intersection)
    t.params["dataset"] = {"name": dataset, "root": "/nonexistent", **({"label_set": label_set} if label_set else {})}
    return t


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str, logged_runs: ModuleType) -> Path:
    """sweep t1-cs (CE trained on synth) and sweep t1-idd (CE trained on synth_idd level4), both scored on `synth`
    (IoU of road, car, bicycle); and a second run of t1-cs whose car is 10 points better."""
    tmp = tmp_path_factory.mktemp("runs")
    storage = tmp / "runs"
    for sweep, run_id, dataset, label_set, iou in (("t1-cs", "t1-cs-1", "synth", None, [80, 40, 10]),
                                                   ("t1-idd", "t1-idd-1", "synth_idd", "level4", [70, 60, 20]),
                                                   ("t1-cs", "t1-cs-2", "synth", None, [80, 50, 10])):
        spec = logged_runs.spec_file(tmp, sweep, [{"name": "ce"}], [0, 1])
        trials = [trained_on(logged_runs, dataset, label_set, s, iou) for s in (0, 1)]
        logged_runs.log_sweep_run(mlflow_server, storage, sweep=sweep, run_id=run_id, spec=spec, trials=trials,
                                  created=f"2026-03-0{run_id[-1]}T00:00:00+00:00")
    return storage


TABLE1 = """\
| class | synth · ce (n=2) | synth_idd:level4 · ce (n=2) |
| --- | ---: | ---: |
| road | **80.0 ± 0.0** | 70.0 ± 0.0 |
| car | 50.0 ± 0.0 | **60.0 ± 0.0** |
| bicycle | 10.0 ± 0.0 | **20.0 ± 0.0** |
| miou | 46.7 ± 0.0 | **50.0 ± 0.0** |"""


def test_two_sweeps_give_one_table_with_both_training_sets_as_columns(two_sweeps, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "t1-cs", "t1-idd", "--storage", str(two_sweeps), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "# s4sweep report: t1-cs (run t1-cs-2), t1-idd (run t1-idd-1)" in printed  # latest run of each
    assert "## synth, synth_idd:level4 → synth: IoU (%), mean ± std over seeds" in printed
    assert TABLE1 in printed and printed.count("| class |") == 1
    md = (out / "report.md").read_text()
    assert TABLE1 in md and (out / "report.csv").is_file() and (out / "report.html").is_file()

    assert main(["report", "--run", "t1-cs-2", "--run", "t1-idd-1", "--storage", str(two_sweeps),
                 "--out", str(tmp_path / "by-run"), "--format", "md"]) == 0
    assert TABLE1 in capsys.readouterr().out


def test_two_runs_of_one_sweep_are_told_apart_by_their_run(two_sweeps, tmp_path, capsys):
    assert main(["report", "t1-cs", "--run", "t1-cs-1", "--run", "t1-cs-2", "--storage", str(two_sweeps),
                 "--out", str(tmp_path), "--format", "md"]) == 0
    printed = capsys.readouterr().out
    assert "| class | t1-cs-1 · synth · ce (n=2) | t1-cs-2 · synth · ce (n=2) |" in printed
    assert "| car | 40.0 ± 0.0 | **50.0 ± 0.0** |" in printed


def test_a_baseline_comes_from_one_run_and_unmatched_runs_are_refused(two_sweeps, tmp_path, capsys):
    assert main(["report", "t1-cs", "t1-idd", "--storage", str(two_sweeps), "--out", str(tmp_path),
                 "--emit-baseline", str(tmp_path / "b.json")]) == 2
    assert "--emit-baseline takes one run" in capsys.readouterr().err and not (tmp_path / "b.json").exists()
    assert main(["report", "t1-cs", "t1-idd", "--run", "t1-cs-1", "--storage", str(two_sweeps)]) == 2
    assert "2 sweeps and 1 --run" in capsys.readouterr().err


@pytest.mark.slow
def test_the_two_table1_mirrors_end_to_end_give_one_cross_dataset_table(tmp_path, mlflow_server, capsys):
    """tests/orchestrator/data/table1_*.yaml mirror search_spaces/paper_table1_*.yaml on generated data (micro
    preset, one seed): both runs, then one report with both training sets side by side on the shared sets."""
    from orchestrator.spec import load_spec
    from orchestrator.sweep import launch

    storage = tmp_path / "runs"
    ray_tmp = Path(tempfile.mkdtemp(prefix="s4ray-"))  # short: Ray's socket paths must stay under ~107 characters
    try:
        for name in ("table1_cityscapes", "table1_idd"):
            outcome = launch(load_spec(DATA / f"{name}.yaml"), storage=str(storage), tracking_uri=mlflow_server,
                             ray_temp_dir=str(ray_tmp))
            assert outcome.exit_code == 0, outcome.table
            assert "| miou_rare |" in outcome.table  # the end-of-sweep summary has the rare-classes row
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    capsys.readouterr()
    assert main(["report", str(DATA / "table1_cityscapes.yaml"), str(DATA / "table1_idd.yaml"),
                 "--storage", str(storage), "--out", str(tmp_path / "report"), "--format", "md,csv"]) == 0
    printed = capsys.readouterr().out
    for shared in ("cityscapes", "idd-cs19"):
        section = printed.split(f"## synth, synth_idd:level4 → {shared}: IoU")[1].split("\n## ")[0]
        assert "| class | labeled px % (synth) | labeled px % (synth_idd:level4) | synth · ce (n=1) | " \
               "synth_idd:level4 · ce (n=1) |" in section
        assert "| traffic light |" in section and "| miou_rare |" in section
    assert "## synth_idd:level4 → idd-level4: IoU" in printed  # IDD's own 30 classes: that run alone
