"""The shipped paper_table*.yaml sweep files run the study as it ran: ImageNet weights required, Table 2 scored on
the 19 Cityscapes classes, the study's focal λ, both Table 1 halves on the same evaluation sets; and `--dry-run`
says so: a loud warning for a paper-preset sweep from random weights, every evaluation set with its classes, and a
compute estimate per device kind that never calls CPU seconds GPU-hours."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.spec import SpecError, describe, load_spec, parse_spec, resolve_spec_path

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
PAPER_FILES = sorted(SPACES.glob("paper_table*.yaml"))
WEIGHTS = "/weights/resnet101-5d3b4d8f.pth"
ENV = {"CITYSCAPES_ROOT": "/data/cityscapes", "IDD_ROOT": "/data/idd", "RESNET101_IMAGENET": WEIGHTS}


def paper_sweep(**model: object) -> dict:
    """A paper-preset sweep on generated data (every config validates here), with `model` settings."""
    return {"name": "paper-synth", "base": {"preset": "paper", "dataset": {"name": "synth"}, "model": model},
            "grid": {"seed": [0, 1]}, "resources": {"cpu": 8, "gpu": 1}}


def test_there_are_four_paper_table_files():
    assert [p.stem for p in PAPER_FILES] == ["paper_table1_cityscapes", "paper_table1_idd", "paper_table2_idd",
                                             "paper_table3_cityscapes"]


@pytest.mark.parametrize("path", PAPER_FILES, ids=lambda p: p.stem)
def test_every_paper_table_requires_the_imagenet_weights_file(path):
    with pytest.raises(SpecError, match=r"base\.model\.pretrained: environment variable RESNET101_IMAGENET is not "
                                        r"set"):
        load_spec(path, env={k: v for k, v in ENV.items() if k != "RESNET101_IMAGENET"})
    trials = load_spec(path, env=ENV).trials()
    assert {(t.preset, t.model.backbone, t.model.pretrained) for t in trials} == {("paper", "resnet101", WEIGHTS)}


def test_dry_run_warns_loudly_for_a_paper_sweep_from_random_weights(tmp_path):
    text = describe(parse_spec(paper_sweep(), source="<dict>"))
    assert text.splitlines()[0] == "2 trials"
    warning = next(line for line in text.splitlines() if line.startswith("WARNING"))
    assert "2 of 2 trials" in warning and "model.pretrained: none" in warning and "ImageNet" in warning

    missing = describe(parse_spec(paper_sweep(pretrained=str(tmp_path / "resnet101-5d3b4d8f.pth")), source="<d>"))
    assert f"WARNING: model.pretrained {tmp_path / 'resnet101-5d3b4d8f.pth'}: no such file on this machine" in missing

    weights = tmp_path / "resnet101-5d3b4d8f.pth"
    weights.write_bytes(b"")
    assert "WARNING" not in describe(parse_spec(paper_sweep(pretrained=str(weights)), source="<dict>"))
    tiny = {"name": "tiny", "base": {"preset": "tiny", "dataset": {"name": "synth"}}, "grid": {"seed": [0]}}
    assert "WARNING" not in describe(parse_spec(tiny, source="<dict>"))  # only the paper preset claims the paper


def test_the_cli_dry_run_prints_the_warning(tmp_path, capsys):
    import yaml

    path = tmp_path / "paper-synth.yaml"
    path.write_text(yaml.safe_dump(paper_sweep()))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "WARNING: 2 of 2 trials use the paper preset" in capsys.readouterr().out


def test_table2_is_scored_on_the_19_cityscapes_classes_and_the_dry_run_shows_it(monkeypatch, capsys):
    spec = load_spec(resolve_spec_path("paper_table2_idd"), env=ENV)
    first = spec.trials()[0]
    assert (first.dataset.name, first.dataset.label_set) == ("idd", "level4")
    assert [(e.metric_key, e.label_set, e.remap) for e in first.eval] == [
        ("idd-cs19", "cs19", "level4->cs19"), ("idd-level4", "level4", None)]
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["sweep", "paper_table2_idd", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "val/idd-cs19/...: idd, label set cs19 (19 classes), scored through the remap level4->cs19" in out
    assert "val/idd-level4/...: idd, label set level4 (30 classes)" in out


def test_the_table1_halves_share_their_19_class_evaluation_sets():
    def sets(stem: str) -> dict[str, tuple]:
        cfg = load_spec(SPACES / f"{stem}.yaml", env=ENV).trials()[0]
        return {e.metric_key: (e.name, e.label_set or "cs19", e.size) for e in cfg.eval}

    cityscapes, idd = sets("paper_table1_cityscapes"), sets("paper_table1_idd")
    shared = set(cityscapes) & set(idd)
    assert shared == {"cityscapes", "idd-cs19"} and all(cityscapes[k] == idd[k] for k in shared)
    assert idd["idd-level4"][1] == "level4"


@pytest.mark.parametrize("stem", ["paper_table2_idd", "paper_table3_cityscapes"])
def test_focal_in_the_table_files_runs_the_studys_lambda_2_beside_lambda_1(stem):
    path = SPACES / f"{stem}.yaml"
    assert "λ is manually adjusted at 2" in path.read_text()  # the study's words, quoted where the value is set
    spec = load_spec(path, env=ENV)
    focal = {(t.loss.options["gamma"], t.loss.options["lambda"]) for t in spec.trials() if t.loss.name == "focal"}
    assert focal == {(2.0, 2.0), (2.0, 1.0)}
    assert [n for n in spec.trial_names() if n.endswith("-s0")] == ["ce-s0", "focal-g2-l2-s0", "focal-g2-l1-s0",
                                                                    "combo-a0.5-s0"]


def test_the_estimate_of_a_gpu_sweep_never_calls_cpu_seconds_gpu_hours():
    spec = load_spec(SPACES / "paper_table3_cityscapes.yaml", env=ENV)
    text = describe(spec)
    assert "compute on GPU: no GPU figure measured for preset paper" in text
    assert not re.search(r"[\d.]+(e\+\d+)? GPU-hours", text), text  # no number is labelled GPU-hours
    cpu = next(line for line in text.splitlines() if line.startswith("for scale, on CPU"))
    assert cpu.endswith("CPU-hours at one thread per trial (CPU seconds, not GPU time)")

    measured = describe(spec, seconds_per_iter={"paper": 0.5})  # as if a GPU figure had been measured
    assert f"= {12 * 40000 * 0.5 / 3600:.3g} GPU-hours" in measured


def test_max_gpu_hours_is_not_judged_on_cpu_figures():
    data = {**paper_sweep(pretrained=WEIGHTS), "max_gpu_hours": 10}
    text = describe(parse_spec(data, source="<dict>"))
    assert "budget: max_gpu_hours 10 (no GPU estimate to compare it with)" in text and "EXCEEDS" not in text
    text = describe(parse_spec(data, source="<dict>"), seconds_per_iter={"paper": 1.0})  # 2 x 40000 s = 22.2 h
    assert "budget: max_gpu_hours 10 (the estimate EXCEEDS it)" in text
    cpu = {**data, "base": {"preset": "micro", "dataset": {"name": "synth"}}, "resources": {"cpu": 1, "gpu": 0}}
    assert "budget: max_gpu_hours 10 (CPU-only trials: the cap counts CPU-hours at run time; within it)" in describe(
        parse_spec(cpu, source="<dict>"))
