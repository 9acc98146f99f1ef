"""Sweep files, hostile or broken, through `s4sweep sweep FILE --dry-run`: each is refused with exit 2, no traceback,
one line naming the file and the key or value. tests/orchestrator/test_spec.py holds the field-by-field refusals of
load_spec; these are the inputs that got past it (or never reached it): what YAML itself can do, what a path can be,
numbers that are not numbers, and grids too large to ever finish."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MICRO = "name: adv\nbase: {preset: micro}\n"

# (case id, file text, what the one-line message must name besides the file)
TEXTS = [
    ("syntax-unclosed-brace", "name: adv\nbase: {preset: micro\n", ["not valid YAML at line 3, column 1",
                                                                     "expected ',' or '}'"]),
    ("syntax-tab-indent", "name: adv\nbase:\n\tpreset: micro\n", ["not valid YAML at line 3, column 1",
                                                                   "found character '\\t'"]),
    ("python-tag", "name: !!python/object/apply:os.system ['touch pwned']\n",
     ["not valid YAML at line 1, column 7", "python/object/apply:os.system"]),
    ("unhashable-key", "name: adv\n? [a, b]\n: 1\n", ["not valid YAML at line 2", "unhashable key"]),
    ("empty-file", "", ["(top level): a sweep file must be a mapping", "None"]),
    ("top-level-list", "- name: adv\n", ["(top level): a sweep file must be a mapping"]),
    ("infinite-learning-rate", MICRO.replace("micro}", "micro, optim: {lr: .inf}}"),
     ["base.optim.lr: expected a finite number, but got inf"]),
    ("seed-beyond-64-bits", MICRO + "grid: {seed: [0, 100000000000000000000000]}\n",
     ["grid.seed[1]", "100000000000000000000000"]),
    ("date-as-seed", MICRO + "grid: {seed: [2024-01-01]}\n", ["grid.seed[0]: expected an integer",
                                                              "datetime.date(2024, 1, 1)"]),
    ("loss-name-not-a-string", MICRO + "grid: {loss: [{name: [ce]}]}\n",
     ["grid.loss[0].name: expected a string, but got ['ce']"]),
    ("conditional-axis-of-another-loss", MICRO + "grid: {loss.gamma: [1, 2]}\n",
     ["grid.loss.gamma[0]", "loss 'ce': unknown option(s) gamma"]),
    ("unset-variable", MICRO.replace("micro}", "micro, dataset: {name: cityscapes, root: '${S4_ADV_UNSET}'}}"),
     ["base.dataset.root: environment variable S4_ADV_UNSET is not set"]),
    ("variable-name-invalid", MICRO.replace("micro}", "micro, dataset: {root: '${1x}'}}"),
     ["base.dataset.root", "`${1x}` is not an environment variable name"]),
]


@pytest.mark.parametrize(("text", "needles"), [t[1:] for t in TEXTS], ids=[t[0] for t in TEXTS])
def test_a_broken_sweep_file_is_one_line_naming_file_and_key(text, needles, tmp_path, refuse):
    path = tmp_path / "adv.yaml"
    path.write_text(text)
    out = refuse(["sweep", path, "--dry-run"], f"{path}: ", *needles)
    assert out.err.count("\n") == 1, out.err  # one line
    assert not (tmp_path / "pwned").exists()


# (case id, file bytes, what the message says)
BYTES = [
    ("binary-png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "not a UTF-8 text file"),
    ("nul-bytes", b"name: adv\x00\x00\nbase: {}\n", "not valid YAML at byte 9: unacceptable character #x0000"),
    ("latin-1", "name: caf\xe9\n".encode("latin-1"), "not a UTF-8 text file (invalid continuation byte at byte 9)"),
]


@pytest.mark.parametrize(("content", "needle"), [b[1:] for b in BYTES], ids=[b[0] for b in BYTES])
def test_a_binary_or_non_utf8_file_is_refused(content, needle, tmp_path, refuse):
    path = tmp_path / "adv.yaml"
    path.write_bytes(content)
    out = refuse(["sweep", path, "--dry-run"], f"{path}: {needle}")
    assert out.err.count("\n") == 1, out.err


@pytest.mark.timeout(60)  # expanding 10^10 strings would never end: the refusal must come before expansion
def test_yaml_aliases_that_expand_to_billions_of_values_are_refused_at_once(tmp_path, refuse):
    lines = ["name: adv", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]  # 10^10 strings
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nbase: {preset: micro, description: *a9}\n")
    refuse(["sweep", path, "--dry-run"], f"{path}: ", "more than 100000 values once YAML aliases are expanded")


def test_yaml_nested_thousands_deep_is_refused_without_a_recursion_error(tmp_path, refuse):
    path = tmp_path / "deep.yaml"
    path.write_text("name: adv\nbase: " + "[" * 5000 + "]" * 5000 + "\n")
    refuse(["sweep", path, "--dry-run"], f"{path}: ", "nested more than")


# --- what the path is ---------------------------------------------------------------------------------------------


def test_a_directory_is_not_a_sweep_file(tmp_path, refuse):
    refuse(["sweep", tmp_path, "--dry-run"], f"{tmp_path}: is a directory, not a sweep file")


def test_a_fifo_is_refused_without_blocking_on_it(tmp_path, refuse):
    fifo = tmp_path / "adv.yaml"
    os.mkfifo(fifo)
    refuse(["sweep", fifo, "--dry-run"], f"{fifo}: not a regular file")


def test_a_symlink_loop_is_named(tmp_path, refuse):
    loop = tmp_path / "adv.yaml"
    loop.symlink_to(loop)
    refuse(["sweep", loop, "--dry-run"], f"{loop}: ", "symlink loop")


def test_a_dangling_symlink_names_its_target(tmp_path, refuse):
    link = tmp_path / "adv.yaml"
    link.symlink_to(tmp_path / "gone.yaml")
    refuse(["sweep", link, "--dry-run"], "gone.yaml: no such sweep file")


def test_an_unreadable_file_is_named(tmp_path, refuse):
    path = tmp_path / "adv.yaml"
    path.write_text(MICRO)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: a file whose read fails instead
        path = Path("/proc/self/mem")
    refuse(["sweep", path, "--dry-run"], "cannot read the sweep file")


# --- grids too large to finish ------------------------------------------------------------------------------------


def big_grid(tmp_path: Path, seeds: int) -> Path:
    path = tmp_path / "big.yaml"
    path.write_text(MICRO + f"grid: {{loss: [{{name: ce}}, {{name: dice}}], seed: {list(range(seeds))}}}\n")
    return path


def test_a_grid_above_the_trial_limit_is_refused_naming_the_count_and_the_flag(tmp_path, refuse, accept):
    path = big_grid(tmp_path, 600)
    refuse(["sweep", path, "--dry-run"], f"{path}: grid: 1200 trials (loss 2 x seed 600)", "--max-trials 1200")
    assert accept(["sweep", path, "--dry-run", "--max-trials", "1200"]).out.startswith("1200 trials")


@pytest.mark.timeout(60)  # a million TrialConfigs would take far longer: the count must come before expansion
def test_loss_options_that_expand_to_millions_are_refused_before_expanding(tmp_path, refuse):
    gammas = [round(0.001 * i, 3) for i in range(1, 1001)]
    path = tmp_path / "options.yaml"
    path.write_text(MICRO + f"grid: {{loss: [{{name: focal, gamma: {gammas}, lambda: {list(range(1, 1001))}}}]}}\n")
    refuse(["sweep", path, "--dry-run"], "grid: 1000000 trials (loss 1000000)", "--max-trials 1000000")


def test_an_optuna_budget_above_the_limit_is_refused(tmp_path, refuse):
    path = tmp_path / "optuna.yaml"
    path.write_text(MICRO.replace("micro}", "micro, loss: {name: focal}}") + (
        "search: {optuna: {num_samples: 5000, metric: val/synth/miou, mode: max, "
        "space: {loss.gamma: {low: 0.5, high: 5}}}}\n"))
    refuse(["sweep", path, "--dry-run"], "search.optuna.num_samples: 5000 trials", "--max-trials 5000")


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_max_trials_itself_must_be_a_positive_integer(value, tmp_path, refuse):
    refuse(["sweep", big_grid(tmp_path, 2), "--dry-run", "--max-trials", value], "--max-trials", value)
