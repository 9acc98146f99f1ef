"""The shipped loss-study sweep files stay valid against the loss registry (what `s4sweep sweep --dry-run` checks)."""

from pathlib import Path

from orchestrator.spec import load_spec

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


def test_focal_gamma_lambda_is_eight_focal_trials_on_generated_data():
    spec = load_spec(SPACES / "focal_gamma_lambda.yaml", env={})
    trials = spec.trials()
    assert len(trials) == 8 and {t.preset for t in trials} == {"tiny"} and {t.seed for t in trials} == {0}
    assert {t.dataset.name for t in trials} == {"synth"}
    grid = {(t.loss.name, t.loss.options["gamma"], t.loss.options["lambda"]) for t in trials}
    assert grid == {("focal", g, lam) for g in (0.5, 1.0, 2.0, 5.0) for lam in (1.0, 2.0)}


def test_paper_table3_is_ce_focal_combo_on_cityscapes_with_three_seeds(tmp_path):
    spec = load_spec(SPACES / "paper_table3_cityscapes.yaml",
                     env={"CITYSCAPES_ROOT": str(tmp_path), "RESNET101_IMAGENET": "/w/resnet101-5d3b4d8f.pth"})
    trials = spec.trials()
    assert spec.trial_names() == [f"{loss}-s{s}" for loss in ("ce", "focal-g2-l2", "focal-g2-l1", "combo-a0.5")
                                  for s in (0, 1, 2)]
    assert {(t.preset, t.dataset.name, t.dataset.root, t.dataset.labeled_ratio) for t in trials} == {
        ("paper", "cityscapes", str(tmp_path), 0.125)}
    assert {e.name for t in trials for e in t.eval} == {"cityscapes"}


def test_adaptive_vs_static_is_six_losses_times_three_seeds_on_generated_data():
    spec = load_spec(SPACES / "adaptive_vs_static.yaml", env={})
    trials = spec.trials()
    assert len(trials) == 18 and {t.preset for t in trials} == {"tiny"}
    assert {t.dataset.name for t in trials} == {"synth"}
    assert {t.loss.name for t in trials} == {"ce", "focal", "combo", "adaptive_weight_ce", "adaptive_focal", "auto"}
    assert {t.seed for t in trials} == {0, 1, 2}
