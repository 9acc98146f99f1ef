"""Sweep file -> SweepSpec -> TrialConfigs: expansion, names, substitution, and every way a file is refused."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.spec import (
    ASHAScheduler,
    OptunaSearch,
    SpecError,
    describe,
    load_spec,
    parse_spec,
    resolve_spec_path,
    shipped_spaces,
)
from trainers.losses import LOSSES
from trainers.presets import preset_dict

# DESIGN.md's sketch with generated data in place of IDD/Cityscapes, so every grid point validates here
SKETCH: dict[str, Any] = {
    "name": "paper-table2-synth",
    "description": "CE vs focal vs combo, 1/8 labels",
    "base": {"preset": "tiny", "dataset": {"name": "synth", "root": "${DATA_ROOT}", "labeled_ratio": 0.125}},
    "grid": {
        "loss": [{"name": "ce"}, {"name": "focal", "gamma": [0.5, 1, 2, 5], "lambda": [1, 2]},
                 {"name": "combo", "alpha": 0.5}],
        "seed": [0, 1, 2],
    },
    "eval": [{"name": "synth", "eval_size": [64, 128]}, {"name": "cityscapes", "root": "/data/cs", "key": "cs"}],
    "resources": {"gpu": 1, "cpu": 8},
    "search": "grid",
    "scheduler": "none",
    "report": {"baseline": {"loss": "ce"}, "rows": "classes", "columns": "loss"},
}
ENV = {"DATA_ROOT": "/data/synth"}
TINY_ITERATIONS = preset_dict("tiny")["schedule"]["iterations"]
OPTUNA = {"optuna": {"num_samples": 12, "metric": "val/synth/miou", "mode": "max",
                     "space": {"loss.gamma": {"low": 0.5, "high": 5, "log": True}, "loss.lambda": {"choices": [1, 2]}}}}


def write(tmp_path: Path, data: Any, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sketch(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SKETCH)
    data.update(copy.deepcopy(changes))
    return data


# --- expansion and names ----------------------------------------------------------------------------------------


def test_sketch_expands_loss_options_inside_their_loss(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SKETCH), env=ENV)
    trials = spec.trials()
    assert len(trials) == 30  # (1 ce + 4x2 focal + 1 combo) x 3 seeds
    assert [t.loss.name for t in trials].count("focal") == 24
    assert {(t.loss.options["gamma"], t.loss.options["lambda"]) for t in trials if t.loss.name == "focal"} == {
        (g, lam) for g in (0.5, 1.0, 2.0, 5.0) for lam in (1.0, 2.0)}
    assert all(t.dataset.root == "/data/synth" and t.dataset.labeled_ratio == 0.125 for t in trials)
    assert all([e.metric_key for e in t.eval] == ["synth", "cs"] for t in trials)
    names = spec.trial_names()
    assert len(set(names)) == 30
    assert names[:4] == ["ce-s0", "ce-s1", "ce-s2", "focal-g0.5-l1-s0"]
    assert {"focal-g2-l1-s0", "focal-g5-l2-s2", "combo-a0.5-s1"} <= set(names)
    assert spec.varying() == {"loss.name": ["ce", "focal", "combo"], "loss.options.gamma": [0.5, 1.0, 2.0, 5.0],
                              "loss.options.lambda": [1.0, 2.0], "seed": [0, 1, 2]}
    assert spec.sha256 == hashlib.sha256((tmp_path / "sweep.yaml").read_bytes()).hexdigest()
    assert spec.source == str((tmp_path / "sweep.yaml").resolve())


def test_other_axes_multiply_and_name_only_what_varies() -> None:
    grid = {"loss": [{"name": "ce"}], "dataset.labeled_ratio": [0.125, 0.25], "s4gan.gan": [True, False],
            "split_seed": [0, 1], "seed": [7]}
    spec = parse_spec(sketch(grid=grid), source="<dict>", env=ENV)
    assert len(spec.trials()) == 8
    assert spec.trial_names()[:3] == ["ce-r0.125-gan-split0", "ce-r0.125-gan-split1", "ce-r0.125-nogan-split0"]
    assert {t.seed for t in spec.trials()} == {7}
    assert "seed" not in spec.varying() and spec.varying()["s4gan.gan"] == [True, False]


def test_grid_value_wins_over_base() -> None:
    base = {**SKETCH["base"], "seed": 5, "loss": {"name": "dice"}}
    spec = parse_spec(sketch(base=base), source="<dict>", env=ENV)
    assert [t.seed for t in spec.trials()[:3]] == [0, 1, 2]
    assert "dice" not in {t.loss.name for t in spec.trials()}


def test_fractional_gpu_caps_cuda_memory() -> None:
    spec = parse_spec(sketch(resources={"gpu": 0.25, "cpu": 2}), source="<dict>", env=ENV)
    assert {t.device.memory_fraction for t in spec.trials()} == {0.25}
    assert spec.resources.gpu == 0.25


def test_smoke_ships_six_named_trials() -> None:
    path = resolve_spec_path(None)
    assert path.name == "smoke.yaml" and path in shipped_spaces()
    assert resolve_spec_path("smoke") == path
    spec = load_spec(path)
    names = spec.trial_names()
    assert len(spec.trials()) == 6 and len(set(names)) == 6
    assert names == ["ce-s0", "ce-s1", "focal-g2-s0", "focal-g2-s1", "combo-a0.5-s0", "combo-a0.5-s1"]
    assert {t.preset for t in spec.trials()} == {"tiny"} and spec.resources.gpu == 0
    assert spec.report["baseline"] == {"loss": "ce"}


@pytest.mark.parametrize("path", shipped_spaces(), ids=lambda p: p.name)
def test_every_shipped_space_loads(path: Path) -> None:
    assert load_spec(path, env={"CITYSCAPES_ROOT": "/data/cityscapes", "IDD_ROOT": "/data/idd",
                                "RESNET101_IMAGENET": "/weights/resnet101-5d3b4d8f.pth"}).trials()


def test_describe_smoke() -> None:
    spec = load_spec(resolve_spec_path(None))
    text = describe(spec, seconds_per_iter={"tiny": 0.2})
    n = spec.trials()[0].schedule.iterations  # smoke's own, shorter than the preset's
    lines = text.splitlines()
    assert lines[0] == "6 trials"
    rows = {line.split("|")[0].strip(): line.split("|")[1].strip() for line in lines if "|" in line}
    assert rows["loss.name"] == "ce, focal, combo" and rows["seed"] == "0, 1"
    expected = f"x {n} iterations x 0.2 s (tiny) per iteration = {6 * n * 0.2 / 3600:.3g}"
    assert expected + " CPU-hours" in text
    assert "resources per trial: 1 CPU, 0 GPU" in text and "wall time here" in text


# --- environment variables --------------------------------------------------------------------------------------


def test_env_substitution_and_escape(tmp_path: Path) -> None:
    base = {"preset": "tiny", "dataset": {"name": "synth", "root": "${DATA_ROOT}/x-${PART}"}}
    spec = load_spec(write(tmp_path, sketch(base=base, description="costs $${DOLLARS}")),
                     env={"DATA_ROOT": "/d", "PART": "2"})
    assert spec.trials()[0].dataset.root == "/d/x-2"
    assert spec.description == "costs ${DOLLARS}"


def test_unset_variable_names_it_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, SKETCH)
    with pytest.raises(SpecError) as err:
        load_spec(path, env={})
    assert str(err.value).startswith(str(path.resolve()))
    assert "base.dataset.root" in str(err.value) and "DATA_ROOT" in str(err.value)


# --- every way a file is refused --------------------------------------------------------------------------------


def _edit(path: str, value: Any) -> Any:
    """A change to SKETCH: set `path` (keys and list indices, `/`-separated) to `value`."""
    def apply(data: dict[str, Any]) -> None:
        *parents, leaf = path.split("/")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(leaf) if isinstance(node, list) else leaf] = value
    return apply


REFUSALS = [  # (id, change, what the message must contain: key path and value)
    ("unknown top-level key", _edit("nmae", "x"), ["nmae: unknown key", "valid keys are name, description"]),
    ("unknown base key", _edit("base/labeled_ratio", 0.1), ["base.labeled_ratio: unknown key", "dataset"]),
    ("unknown nested key", _edit("base/dataset/nmae", 1), ["base.dataset", "nmae", "valid keys are name"]),
    ("unknown resources key", _edit("resources/gpus", 1), ["resources.gpus: unknown key", "cpu, gpu"]),
    ("unknown report key", _edit("report/colums", "loss"), ["report.colums: unknown key", "columns, rare_share"]),
    ("rare share above 1", _edit("report/rare_share", 1.5), ["report.rare_share", "(0, 1)", "but got 1.5"]),
    ("rare share not a number", _edit("report/rare_share", "1%"), ["report.rare_share", "expected a number",
                                                                   "'1%'"]),
    ("wrong type cpu", _edit("resources/cpu", "two"), ["resources.cpu", "expected a number", "'two'"]),
    ("wrong type split_seed", _edit("base/split_seed", "0"), ["base.split_seed", "expected an integer", "'0'"]),
    ("base loss option", lambda d: (d["grid"].pop("loss"), d["base"].update(loss={"name": "focal", "lambda": 0.5})),
     ["base.loss", "option lambda", "0.5"]),
    ("axis not a list", _edit("grid/seed", 3), ["grid.seed", "non-empty list", "but got 3"]),
    ("grid not a mapping", _edit("grid", [1, 2]), ["grid:", "[1, 2]"]),
    ("labeled_ratio 0 in base", _edit("base/dataset/labeled_ratio", 0), ["base.dataset.labeled_ratio",
                                                                          "(0, 1]", "but got 0"]),
    ("labeled_ratio 0 on an axis", _edit("grid/dataset.labeled_ratio", [0.25, 0]),
     ["grid.dataset.labeled_ratio[1]", "(0, 1]", "but got 0"]),
    ("focal lambda below 1", _edit("grid/loss/1/lambda", [1, 0.5]), ["grid.loss[1].lambda[1]", ">= 1", "0.5"]),
    ("focal gamma out of range", _edit("grid/loss/1/gamma", 12), ["grid.loss[1].gamma", "[0, 10]", "12"]),
    ("option of another loss", _edit("grid/loss/0/gamma", 2), ["grid.loss[0].gamma", "unknown option",
                                                               "class_weights"]),
    ("empty axis", _edit("grid/seed", []), ["grid.seed", "non-empty list", "[]"]),
    ("empty loss option", _edit("grid/loss/1/gamma", []), ["grid.loss[1].gamma", "at least one value", "[]"]),
    ("unknown loss", _edit("grid/loss/2/name", "hinge"), ["grid.loss[2].name", ", ".join(sorted(LOSSES)),
                                                           "'hinge'"]),
    ("repeated loss", _edit("grid/loss/2", {"name": "focal"}), ["grid.loss[2]", "repeats grid.loss[1]"]),
    ("repeated seed", _edit("grid/seed", [0, 1, 0]), ["grid.seed[2]", "repeats grid.seed[0]", "0"]),
    ("unknown axis", _edit("grid/dataset.labeled_ration", [0.5]), ["grid.dataset.labeled_ration",
                                                                   "valid keys of dataset", "labeled_ratio"]),
    ("axis beside loss", _edit("grid/loss.gamma", [1, 2]), ["grid.loss.gamma", "loss entries"]),
    ("unknown dataset", _edit("base/dataset/name", "kitti"),
     ["base.dataset.name", "cityscapes, idd, synth, synth_idd", "'kitti'"]),
    ("unknown dataset on an axis", _edit("grid/dataset.name", ["synth", "kitti"]),
     ["grid.dataset.name[1]", "cityscapes, idd, synth, synth_idd", "'kitti'"]),
    ("unknown eval dataset", _edit("eval/1/name", "kitti"), ["eval[1].name", "cityscapes, idd", "'kitti'"]),
    ("bad eval entry", _edit("eval/1/eval_size", [0, 10]), ["eval[1].eval_size", "positive", "(0, 10)"]),
    ("eval set twice", _edit("eval/1", {"name": "synth"}), ["eval:", "distinct", "['synth', 'synth']"]),
    ("eval in base", _edit("base/eval", [{"name": "synth"}]), ["base.eval", "top-level `eval`"]),
    ("fractional gpu above 1", _edit("resources/gpu", 1.5), ["resources.gpu", "whole number", "1.5"]),
    ("negative gpu", _edit("resources/gpu", -1), ["resources.gpu", "but got -1"]),
    ("cuda without a gpu", lambda d: (d["resources"].update(gpu=0), d["base"].update(device={"device": "cuda"})),
     ["base.device.device", "resources.gpu > 0", "'cuda'"]),
    ("no gpu, device auto", _edit("resources", {"cpu": 1, "gpu": 0}), None),  # accepted
    ("bad name", _edit("name", "my sweep"), ["name:", "'my sweep'"]),
    ("no name", lambda d: d.pop("name"), ["name: required, but missing"]),
    ("bad search", _edit("search", "random"), ["search:", "'random'"]),
    ("grid mixed with optuna", _edit("search", OPTUNA), ["grid.loss", "may only hold `seed`", "'ce'"]),
    ("bad optuna metric", lambda d: (d["grid"].pop("loss"), d["base"].update(loss={"name": "focal"}),
                                     d.update(search={"optuna": {**OPTUNA["optuna"], "metric": "val/idd/miou"}})),
     ["search.optuna.metric", "synth, cs", "'val/idd/miou'"]),
    ("optuna range outside the rule", lambda d: (
        d["grid"].pop("loss"), d["base"].update(loss={"name": "focal"}),
        d.update(search={"optuna": {**OPTUNA["optuna"], "space": {"loss.lambda": {"low": 0.5, "high": 2}}}})),
     ["search.optuna.space.loss.lambda.low", ">= 1", "0.5"]),
    ("optuna low above high", lambda d: (
        d["grid"].pop("loss"),
        d.update(search={"optuna": {**OPTUNA["optuna"], "space": {"optim.lr": {"low": 1, "high": 0.1}}}})),
     ["search.optuna.space.optim.lr", "`low < high`", "'low': 1"]),
    ("optuna without metric", lambda d: (d["grid"].pop("loss"), d.update(search={"optuna": {
        k: v for k, v in OPTUNA["optuna"].items() if k != "metric"}})), ["search.optuna.metric: required"]),
    ("unknown optuna key", lambda d: (d["grid"].pop("loss"), d.update(search={"optuna": {
        **OPTUNA["optuna"], "samples": 3}})), ["search.optuna.samples: unknown key", "num_samples"]),
    ("asha grace too long", _edit("scheduler", {"asha": {"grace_iters": TINY_ITERATIONS}}),
     ["scheduler.asha.grace_iters", f"< schedule.iterations ({TINY_ITERATIONS})", str(TINY_ITERATIONS)]),
    ("asha reduction factor", _edit("scheduler", {"asha": {"grace_iters": 10, "reduction_factor": 1}}),
     ["scheduler.asha.reduction_factor", "> 1", "1"]),
    ("cpu device with a gpu", _edit("base/device", {"device": "cpu"}), ["base.device.device", "idle", "'cpu'"]),
    ("checkpoint before the first evaluation", _edit("base/schedule", {"eval_every": 400, "checkpoint_every": 200}),
     ["schedule.checkpoint_every", ">= schedule.eval_every (400)", "200"]),
]


@pytest.mark.parametrize(("change", "expected"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_file_key_and_value(tmp_path: Path, change: Any, expected: list[str] | None) -> None:
    data = sketch()
    change(data)
    path = write(tmp_path, data)
    if expected is None:
        load_spec(path, env=ENV)
        return
    with pytest.raises(SpecError) as err:
        load_spec(path, env=ENV)
    message = str(err.value)
    assert message.startswith(f"{path.resolve()}: "), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_parse_spec_names_its_source() -> None:
    with pytest.raises(SpecError, match=r"^<sweeps>: resources.gpu: .*1\.5"):
        parse_spec(sketch(resources={"gpu": 1.5}), source="<sweeps>", env=ENV)


def test_yaml_duplicate_keys_and_exponent_numbers(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nname: b\n")
    with pytest.raises(SpecError, match="duplicate key 'name'"):
        load_spec(path)
    path.write_text("name: e\nbase: {preset: micro, optim: {lr_d: 1e-5}}\n")
    assert load_spec(path).trials()[0].optim.lr_d == 1e-5  # plain YAML 1.1 would read the string '1e-5'


def test_resolve_spec_path_refuses_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such sweep file.*smoke"):
        resolve_spec_path(str(tmp_path / "nope.yaml"))
    with pytest.raises(SpecError, match="nosuchsweep"):
        resolve_spec_path("nosuchsweep")
    path = write(tmp_path, SKETCH)
    assert resolve_spec_path(str(path)) == path.resolve()


# --- Optuna and ASHA --------------------------------------------------------------------------------------------


def test_optuna_keeps_seeds_and_describes_a_budget() -> None:
    data = sketch(search=OPTUNA, scheduler={"asha": {"grace_iters": 50}}, max_gpu_hours=2)
    data["grid"] = {"seed": [0, 1]}
    data["base"] = {**data["base"], "loss": {"name": "focal"}}
    spec = parse_spec(data, source="<dict>", env=ENV)
    assert isinstance(spec.search, OptunaSearch) and spec.search.space["loss.lambda"] == {"choices": (1, 2)}
    assert spec.scheduler == ASHAScheduler(grace_iters=50, metric="val/synth/miou", mode="max")
    assert spec.trial_names() == ["focal-s0", "focal-s1"]
    text = describe(spec)
    assert text.splitlines()[0] == "12 trials (Optuna TPE budget)"
    assert "loss.gamma" in text and "log scale" in text and "max_gpu_hours 2" in text
    assert "compute on GPU: no GPU figure measured for preset tiny" in text  # never CPU seconds as GPU-hours
    sampled = spec.trials()[1].with_params({"loss.gamma": 3.5, "loss.lambda": 2})
    assert sampled.loss.options == {"gamma": 3.5, "lambda": 2.0} and sampled.seed == 1


def test_asha_defaults_to_the_first_eval_sets_miou() -> None:
    spec = parse_spec(sketch(scheduler={"asha": {"grace_iters": 100}}), source="<dict>", env=ENV)
    assert spec.scheduler == ASHAScheduler(grace_iters=100, metric="val/synth/miou", mode="max",
                                           reduction_factor=2.0)
