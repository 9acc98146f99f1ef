"""`s4sweep report` on a fixed set of synthetic runs logged to a real `mlflow server`: exact tables (values, order,
best marks, deltas and which deltas hold), the files it writes and logs, and the bootstrap on its own."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from orchestrator import report, results
from orchestrator.cli import main
from orchestrator.tracking import Tracker


def _sibling(name: str) -> ModuleType:
    """test_results.py owns the helper that logs synthetic sweep runs (test modules cannot import each other)."""
    spec = importlib.util.spec_from_file_location(f"_s4sweep_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


G = _sibling("test_results")
LOSSES = [{"name": "ce"}, {"name": "focal", "gamma": 2}, {"name": "dice"}]


def golden_trials(tmp: Path) -> list:
    """ce / focal / dice x seeds 0-2, ten images, union 100 per image and class. focal beats ce on car by 20 points
    on every image of every seed; dice loses bicycle entirely; dice's road differs from ce by +0.5 on average, but
    swings by ±20 from image to image (the same images for every seed, as real hard images are): noise."""
    shift = {0: 10, 1: -5, 2: 10}
    out = []
    for seed in (0, 1, 2):
        road = np.array([100, 60] * 5)
        road[0] += shift[seed]
        pictures = samples_and_confusion(tmp, seed) if seed == 0 else {}
        out += [G.trial("ce", seed, [80, 40, 10], artifacts=pictures.get("ce", [])),
                G.trial("focal", seed, [80, 60, 10], gamma=2.0, artifacts=pictures.get("focal", [])),
                G.trial("dice", seed, [road, 40, 0], artifacts=pictures.get("dice", []))]
    return sorted(out, key=lambda t: [x["name"] for x in LOSSES].index(t.params["loss"]["name"]))


def samples_and_confusion(tmp: Path, seed: int) -> dict[str, list[Path]]:
    """Per loss, a samples PNG (2 rows of input | ground truth | prediction, 8x12 each) and a confusion PNG."""
    out = {}
    for k, loss in enumerate(("ce", "focal", "dice")):
        folder = tmp / f"pictures-{loss}-{seed}"
        folder.mkdir(parents=True)
        strip = np.zeros((16, 36, 3), np.uint8)
        strip[:, :12] = 50  # input
        strip[:, 12:24] = 100  # ground truth
        strip[:, 24:] = 150 + 30 * k  # this loss's prediction
        Image.fromarray(strip).save(folder / "samples_synth.png")
        Image.fromarray(np.full((8, 8, 3), 20 * k, np.uint8)).save(folder / "confusion_synth.png")
        out[loss] = [folder / "samples_synth.png", folder / "confusion_synth.png"]
    return out


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> Path:
    tmp = tmp_path_factory.mktemp("golden")
    spec = G.spec_file(tmp, "rep-golden", LOSSES, [0, 1, 2])
    G.log_sweep_run(mlflow_server, tmp / "runs", sweep="rep-golden", run_id="rep-golden-1", spec=spec,
                    trials=golden_trials(tmp))
    return tmp / "runs"


@pytest.fixture(scope="module")
def golden_results(golden: Path, tmp_path_factory: pytest.TempPathFactory) -> results.SweepResults:
    run = results.find_run("rep-golden", storage=str(golden))
    return results.collect(run, cache=tmp_path_factory.mktemp("cache"))


GOLDEN_TABLE = """\
| class | ce (n=3) | focal-g2 (n=3) | Δ focal-g2 | dice (n=3) | Δ dice |
| --- | ---: | ---: | ---: | ---: | ---: |
| road | 80.0 ± 0.0 | 80.0 ± 0.0 | 0.0 | **80.5 ± 0.9** | +0.5 |
| car | 40.0 ± 0.0 | **60.0 ± 0.0** | +20.0 ↑ | 40.0 ± 0.0 | 0.0 |
| bicycle | **10.0 ± 0.0** | **10.0 ± 0.0** | 0.0 | 0.0 ± 0.0 | -10.0 ↓ |
| miou | 43.3 ± 0.0 | **50.0 ± 0.0** | +6.7 ↑ | 40.2 ± 0.3 | -3.2 |
| miou_all | 43.3 ± 0.0 | **50.0 ± 0.0** | +6.7 ↑ | 40.2 ± 0.3 | -3.2 |
| fwiou | 50.0 ± 0.0 | 50.0 ± 0.0 | 0.0 | 50.0 ± 0.0 | 0.0 |
| pixel_acc | 75.0 ± 0.0 | 75.0 ± 0.0 | 0.0 | 75.0 ± 0.0 | 0.0 |"""


def test_the_golden_runs_give_exactly_the_expected_table(golden_results):
    built = report.build(golden_results, report.options_for(golden_results))
    md = report.to_markdown(built)
    assert GOLDEN_TABLE in md
    assert built.partial is None and "9 of 9 trials finished" in md
    ct = built.tables[0]
    # dice's miou is 3.2 points lower, but only bicycle's loss holds: road's noise leaves the interval across 0
    car, miou = ct.rows.index("car"), ct.rows.index("miou")
    assert ct.holds[car].tolist() == [-1, 1, 0] and ct.holds[miou].tolist() == [-1, 1, 0]
    assert ct.low[miou, 2] < 0 < ct.high[miou, 2]
    assert ct.holds[ct.rows.index("fwiou")].tolist() == [-1, -1, -1]  # not testable from per-image counts
    assert "| ce | 3 | 36.0 | 0.030 | 0.000 |" in md  # cost: 3 trials x 36 s x 1 CPU


def test_the_report_writes_csv_html_and_pictures_and_logs_them_on_the_parent(golden, tmp_path, mlflow_server,
                                                                            capsys):
    out = tmp_path / "report"
    assert main(["report", "rep-golden", "--storage", str(golden), "--out", str(out)]) == 0
    assert GOLDEN_TABLE in capsys.readouterr().out  # the markdown goes to the terminal too
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    car = next(r for r in rows if r["row"] == "car" and r["column"] == "focal-g2")
    assert float(car["mean"]) == pytest.approx(0.6) and float(car["delta"]) == pytest.approx(0.2)
    assert car["holds"] == "true" and car["best"] == "true" and car["trials"] == "3"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5  # bar chart, qualitative grid, 3 confusion heatmaps
    assert "src='http" not in page and "<b>60.0 ± 0.0</b>" in page
    grid = np.asarray(Image.open(out / "samples_synth_synth.png").convert("RGB"))
    assert grid.shape[1] > grid.shape[0]  # input | ground truth | ce | focal-g2 | dice, side by side
    for name in ("iou_synth_synth.png", "confusion_synth_synth_dice.png", "results.parquet", "report.md"):
        assert (out / name).is_file(), name
    run = results.find_run("rep-golden", storage=str(golden))
    logged = Tracker(mlflow_server).artifact_names(run.parent_run_id)
    assert "report" in logged


def test_a_partly_failed_run_reports_what_finished_and_says_so(tmp_path, mlflow_server):
    spec = G.spec_file(tmp_path, "rep-partial", LOSSES[:2], [0, 1])
    trials = [G.trial("ce", 0, [80, 40, 10]), G.trial("ce", 1, [80, 40, 10]),
              G.trial("focal", 0, [80, 60, 10], gamma=2.0),
              G.trial("focal", 1, [0, 0, 0], gamma=2.0, status="FAILED")]
    G.log_sweep_run(mlflow_server, tmp_path / "runs", sweep="rep-partial", run_id="rep-partial-1", spec=spec,
                    trials=trials, status="failed")
    res = results.collect(results.find_run("rep-partial", storage=str(tmp_path / "runs")), cache=tmp_path / "c")
    built = report.build(res, report.options_for(res))
    md = report.to_markdown(built)
    assert ("PARTIAL: run rep-partial-1 is failed; 3 of 4 trials finished and are reported; not finished: "
            "focal-g2-s1 (FAILED)") in md
    # one focal seed left: no std; the bootstrap pairs that seed's images only, and every image is 20 points better
    assert "| car | 40.0 ± 0.0 | **60.0** | +20.0 ↑ |" in md


def test_any_varied_axis_can_be_the_columns_and_an_unknown_one_is_refused(golden_results):
    built = report.build(golden_results, report.Options(axis="seed", baseline={"seed": 0}))
    ct = built.tables[0]
    assert ct.columns == ("0", "1", "2") and ct.baseline == "0"
    assert ct.mean[ct.rows.index("car"), 0] == pytest.approx((0.4 + 0.6 + 0.4) / 3)
    built = report.build(golden_results, report.Options(axis="loss.options.gamma"))
    assert built.tables[0].columns == ("none", "2")
    assert "baseline {'loss': 'ce'} matches no column" in built.tables[0].notes[0]
    with pytest.raises(ValueError, match=r"--columns must be one of variant, loss.name, .*but got 'gamma'"):
        report.build(golden_results, report.Options(axis="gamma"))


def _counts(rng: np.random.Generator, iou: float, images: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-image counts for 2 classes: union 100; intersection iou*100 plus per-image noise (class 1 fixed at 50)."""
    inter = np.stack([np.clip(np.round(iou * 100 + rng.normal(0, noise, images)), 0, 100),
                      np.full(images, 50)], axis=1).astype(np.int64)
    return inter, np.full_like(inter, 100)


def test_the_bootstrap_marks_a_big_consistent_difference_as_holding():
    rng = np.random.default_rng(1)
    units = [(_counts(rng, 0.60, 50, 5), _counts(rng, 0.50, 50, 5)) for _ in range(3)]
    boot = report.paired_bootstrap(units, replicates=1000, rng=np.random.default_rng(0))
    assert boot.holds[0] and boot.low[0] > 0.05 and boot.delta[0] == pytest.approx(0.1, abs=0.02)
    assert not boot.holds[1]  # class 1 is identical in both: its interval is [0, 0]
    assert boot.holds[2] and boot.low[2] > 0  # miou follows class 0


def test_the_bootstrap_does_not_mark_a_noise_level_difference():
    rng = np.random.default_rng(2)
    units = [(_counts(rng, 0.51, 50, 15), _counts(rng, 0.50, 50, 15)) for _ in range(3)]
    boot = report.paired_bootstrap(units, replicates=1000, rng=np.random.default_rng(0))
    assert not boot.holds[0] and boot.low[0] < 0 < boot.high[0]


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    units = [(_counts(rng, 0.55, 20, 10), _counts(rng, 0.50, 20, 10)) for _ in range(2)]
    first = report.paired_bootstrap(units, rng=np.random.default_rng(7))
    again = report.paired_bootstrap(units, rng=np.random.default_rng(7))
    assert np.array_equal(first.low, again.low) and np.array_equal(first.high, again.high)


def test_the_report_takes_class_shares_and_recall_by_object_size_from_the_trials_artifacts(tmp_path, mlflow_server,
                                                                                          capsys):
    """Trials log labeled_counts.json and small_objects_synth.json (a trial of an older run has neither): the
    report's labeled-share column and `--small-objects` table come from them, averaged over the seeds that have
    them, with no data or checkpoint here; the trial without them is named, not counted as 0."""
    def artifacts(seed: int, found: list[int]) -> list[Path]:
        folder = tmp_path / f"a{seed}"
        folder.mkdir()
        pixels = {"road": 700, "car": 250, "bicycle": 50}
        counts = {"classes": list(pixels), "pixels": [*pixels.values(), 0], "images": 2, "eval": {"synth": pixels}}
        small = {"size_bins": list(report.SIZE_BINS), "found_fraction": report.FOUND, "images": 2,
                 "objects": [4, 2, 0, 1], "found": found, "recall": None}
        (folder / "labeled_counts.json").write_text(json.dumps(counts))
        (folder / "small_objects_synth.json").write_text(json.dumps(small))
        return [folder / "labeled_counts.json", folder / "small_objects_synth.json"]

    trials = [G.trial("ce", 0, [80, 40, 10], artifacts=artifacts(0, [1, 2, 0, 1])),
              G.trial("ce", 1, [80, 40, 10], artifacts=artifacts(1, [3, 1, 0, 1])),
              G.trial("ce", 2, [80, 40, 10])]
    spec = G.spec_file(tmp_path, "rep-logged", LOSSES[:1], [0, 1, 2])
    G.log_sweep_run(mlflow_server, tmp_path / "runs", sweep="rep-logged", run_id="rep-logged-1", spec=spec,
                    trials=trials)
    assert main(["report", "rep-logged", "--storage", str(tmp_path / "runs"), "--format", "md",
                 "--small-objects"]) == 0
    md = capsys.readouterr().out
    assert "| road | 70.00 | 80.0 ± 0.0 |" in md and "| bicycle | 5.00 | 10.0 ± 0.0 |" in md  # of 1000 px
    # recall per bin over the two seeds that logged it: [0, 64) 1/4 and 3/4; the empty bin is unknown, not 0
    assert "| synth | synth | ce | 50.0 ± 35.4 (8) | 75.0 ± 35.4 (4) | – (0) | 100.0 ± 0.0 (2) |" in md
    assert "- trial ce-s2, synth: no small_objects_synth.json" in md and "recall not known" in md


def test_emit_baseline_refuses_a_partial_run(tmp_path, mlflow_server):
    spec = G.spec_file(tmp_path, "rep-nobase", LOSSES[:1], [0, 1])
    G.log_sweep_run(mlflow_server, tmp_path / "runs", sweep="rep-nobase", run_id="rep-nobase-1", spec=spec,
                    trials=[G.trial("ce", 0, [80, 40, 10])], status="failed")
    target = tmp_path / "baseline.json"
    assert main(["report", "rep-nobase", "--storage", str(tmp_path / "runs"), "--format", "md",
                 "--emit-baseline", str(target)]) == 2
    assert not target.exists()
    assert json.loads((tmp_path / "runs" / "sweeps" / "rep-nobase-1" / "run.json").read_text())["status"] == "failed"


def test_the_end_of_sweep_summary_is_the_report_table_from_child_metrics_alone():
    from orchestrator.runs import RunState
    from orchestrator.spec import parse_spec
    from orchestrator.sweep import comparison_table
    from orchestrator.tracking import ChildRun, flatten_params

    spec = parse_spec({"name": "summary", "base": {"preset": "micro", "dataset": {"name": "synth"}},
                       "grid": {"loss": [{"name": "ce"}, {"name": "focal", "gamma": 2}], "seed": [0, 1]}},
                      source="<dict>")
    state = RunState(sweep="summary", run_id="summary-1", spec_path="<dict>", spec_sha256="", tracking_uri="")
    iou = {"ce": (0.8, 0.1, 0.4), "focal": (0.8, 0.3, 0.6)}  # road, traffic light, car
    kids = []
    for name, cfg in zip(spec.trial_names(), spec.trials(), strict=True):
        values = dict(zip(("car", "traffic light", "road"), reversed(iou[cfg.loss.name]), strict=True))
        metrics = {f"val/synth/iou/{c}": v for c, v in values.items()}
        metrics |= {f"val/synth/{m}": 0.5 for m in ("miou", "miou_all", "fwiou", "pixel_acc")}
        status = "FAILED" if name == "focal-g2-s1" else "FINISHED"
        kids.append(ChildRun(f"id-{name}", name, status, {}, flatten_params(cfg.to_dict()), metrics))

    text = comparison_table(spec, state, kids, status="failed")
    assert "PARTIAL: run summary-1 is failed; 3 of 4 trials finished" in text and "focal-g2-s1 (FAILED)" in text
    assert "| class | ce (n=2) | focal-g2 (n=1) |\n" in text  # no Δ columns: no bootstrap without per-image counts
    assert "| road | 80.0 ± 0.0 | 80.0 |\n| traffic light | 10.0 ± 0.0 | **30.0** |\n| car | 40.0 ± 0.0 | **60.0** |" \
        in text  # the dataset's class order
    assert text.endswith("s4sweep report summary --run summary-1")
    assert comparison_table(spec, state, [], status="finished").endswith("0 of 4 trials finished and are reported**"
                                                                          "\n\n(no finished trials)")


def test_the_rare_classes_row_averages_the_classes_under_the_share_threshold_with_its_own_bootstrap(golden_results):
    """car (8% of the labeled pixels) and bicycle (2%) are rare under 10%: focal's +20 on car gives +10 on their mean
    (holds on every image), dice's -10 on bicycle -5 (holds too); road's noise stays out of the row."""
    t = report.Trials.of(golden_results.table, "variant")
    share = {"road": 0.90, "car": 0.08, "bicycle": 0.02}
    ct = report.class_table(golden_results, t, "synth", "synth", report.Options(rare_share=0.1), share)
    assert ct.rows == ("road", "car", "bicycle", "miou", "miou_all", "miou_rare", "fwiou", "pixel_acc")
    assert ct.classes == ("road", "car", "bicycle") and ct.rare == ("car", "bicycle")
    rare = ct.rows.index("miou_rare")
    assert ct.mean[rare] == pytest.approx([0.25, 0.35, 0.20])
    assert ct.delta[rare, 1:] == pytest.approx([0.10, -0.05]) and ct.holds[rare].tolist() == [-1, 1, 1]
    assert ("miou_rare: mean IoU of the 2 classes under 10% of the labeled split's pixels: car, bicycle (a class "
            "with an empty union counts as 0, as in miou_all)") in ct.notes
    built = dataclasses.replace(report.build(golden_results, report.options_for(golden_results)), tables=(ct,))
    md = report.to_markdown(built)
    assert "| miou_rare |  | 25.0 ± 0.0 | **35.0 ± 0.0** | +10.0 ↑ | 20.0 ± 0.0 | -5.0 ↓ |" in md
    assert "| car | 8.00 | 40.0 ± 0.0 |" in md  # the share column, by class name
    assert "| miou_rare |  | 25.0 ± 0.0 |" in report.to_summary(built)
    rows = [r for r in csv.DictReader(io.StringIO(report.to_csv(built))) if r["row"] == "miou_rare"]
    assert [(r["column"], r["holds"]) for r in rows] == [("ce", ""), ("focal-g2", "true"), ("dice", "true")]
    assert "<td>miou_rare</td>" in report.to_html(built, {})

    none_rare = report.class_table(golden_results, t, "synth", "synth", report.Options(rare_share=0.01), share)
    assert np.isnan(none_rare.mean[none_rare.rows.index("miou_rare")]).all()
    assert none_rare.holds[none_rare.rows.index("miou_rare")].tolist() == [-1, -1, -1]  # nothing to test
    assert "miou_rare: no class is under 1% of the labeled split's pixels" in none_rare.notes


def test_the_rare_share_comes_from_the_sweep_files_report_section(golden_results):
    assert report.options_for(golden_results).rare_share == 0.01  # the default
    spec = dataclasses.replace(golden_results.spec, report={**golden_results.spec.report, "rare_share": 0.05})
    assert report.options_for(dataclasses.replace(golden_results, spec=spec)).rare_share == 0.05


def test_a_class_missing_from_some_trials_is_counted_and_named():
    """The mean is over the trials that have the number; the table says which column lacks it in how many trials."""
    from orchestrator.runs import RunState
    from orchestrator.spec import parse_spec
    from orchestrator.sweep import comparison_table
    from orchestrator.tracking import ChildRun, flatten_params

    spec = parse_spec({"name": "gaps", "base": {"preset": "micro", "dataset": {"name": "synth"}},
                       "grid": {"seed": [0, 1]}}, source="<dict>")
    kids = []
    for name, cfg in zip(spec.trial_names(), spec.trials(), strict=True):
        metrics = {"val/synth/iou/road": 0.8, "val/synth/miou": 0.5}
        if name == "ce-s1":
            metrics["val/synth/iou/car"] = 0.4
        kids.append(ChildRun(f"id-{name}", name, "FINISHED", {}, flatten_params(cfg.to_dict()), metrics))
    state = RunState(sweep="gaps", run_id="gaps-1", spec_path="<dict>", spec_sha256="", tracking_uri="")
    text = comparison_table(spec, state, kids, status="finished")
    assert "- ce: no value for car in 1 of 2 trials (its mean is over the others)" in text


def test_bold_is_judged_at_the_printed_precision():
    """A row whose means print alike (0.0 beside 0.0) has no bold cell; a real lead is bold, ties share it."""
    from orchestrator.report.tables import ClassTable

    mean = np.array([[0.0, 0.0004, 0.0], [0.20, 0.25, 0.25], [0.5, 0.5, 0.5]])
    nan = np.full_like(mean, np.nan)
    table = ClassTable(train="synth", eval="synth", axis="loss", columns=("ce", "focal", "combo"), trials=(2, 2, 2),
                       baseline="ce", rows=("wall", "road", "car"), mean=mean, std=nan, delta=nan, low=nan, high=nan,
                       holds=np.full(mean.shape, -1, np.int8), share=None, counts=np.full(mean.shape, 2),
                       compared=(False, True, True), trains=("synth",) * 3)
    assert table.best().tolist() == [[False, False, False], [False, True, True], [False, False, False]]
