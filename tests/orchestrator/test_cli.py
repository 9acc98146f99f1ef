"""The `s4sweep` command as a user meets it: exit codes, one-line errors, files it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from orchestrator.cli import main
from trainers.data.labels import CITYSCAPES_LABELS
from trainers.data.synth import SIZE as SYNTH_SIZE

S4SWEEP = Path(sys.executable).with_name("s4sweep")


def test_dry_run_of_the_embedded_default_prints_the_trial_count_first(capsys):
    assert main(["sweep", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "6 trials" and any("loss.name" in line for line in out)


def test_a_user_error_is_one_line_and_exit_2_and_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "base": {"preset": "micro", "dataset": {"labeled_ratio": 2}}}))
    proc = subprocess.run([str(S4SWEEP), "sweep", str(bad), "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "labeled_ratio" in proc.stderr and str(bad) in proc.stderr
    debug = subprocess.run([str(S4SWEEP), "--debug", "sweep", str(bad), "--dry-run"], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_spaces_lists_the_shipped_sweep_files(capsys):
    assert main(["spaces"]) == 0
    assert "smoke" in capsys.readouterr().out


def test_data_synth_then_check_passes_and_a_broken_file_is_named(tmp_path, capsys):
    root = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(root), "--n", "4", "--height", "64", "--width", "128"]) == 0
    assert main(["data", "check", str(root)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    victim = sorted((root / "leftImg8bit" / "val").rglob("*.png"))[0]
    victim.write_bytes(b"not a png")
    assert main(["data", "check", str(root)]) == 1
    assert f"{victim}: unreadable image" in capsys.readouterr().out


@pytest.mark.slow
def test_train_writes_metrics_and_eval_writes_benchmark_format_predictions(tmp_path, capsys):
    spec = tmp_path / "micro.yaml"
    spec.write_text(yaml.safe_dump({"name": "micro", "base": {"preset": "micro"},
                                    "grid": {"loss": [{"name": "ce"}, {"name": "dice"}]}}))
    out = tmp_path / "trial"
    assert main(["train", str(spec), "--trial", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "traffic light" in printed and "miou_all" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["loss"]["name"] == "dice"

    checkpoint = out / "checkpoints" / "checkpoint_000006"
    preds = tmp_path / "preds"
    assert main(["eval", str(checkpoint), "--dataset", "synth", "--out", str(tmp_path / "eval"),
                 "--save-predictions", str(preds)]) == 0
    report = json.loads((tmp_path / "eval" / "eval_synth_val.json").read_text())
    assert report["images"] >= 2 and len(report["metrics"]["confusion"]) == 19
    written = sorted(preds.glob("*_pred_labelIds.png"))
    assert len(written) == report["images"]
    raw_ids = {label.id for label in CITYSCAPES_LABELS if 0 <= label.train_id < 255}
    pixels = np.asarray(Image.open(written[0]))
    assert pixels.shape == SYNTH_SIZE and set(np.unique(pixels)) <= raw_ids  # raw Cityscapes ids, full size

    assert main(["train", str(spec), "--trial", "5"]) == 2  # out of range: a user error


def test_report_and_regress_accept_what_sweep_accepts(tmp_path):
    from orchestrator.cli import _sweep_name

    spec = tmp_path / "mine.yaml"
    spec.write_text("name: my-sweep\n")
    assert _sweep_name("adaptive_vs_static") == "adaptive-vs-static"  # a shipped file's stem -> its sweep name
    assert _sweep_name(str(spec)) == "my-sweep"
    assert _sweep_name("adaptive-vs-static") == "adaptive-vs-static"  # a sweep name stays itself
