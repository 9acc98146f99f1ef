"""Sweep file (YAML) -> validated SweepSpec -> list[TrialConfig]. No Ray here: this powers `sweep --dry-run`.

A sweep file (DESIGN.md "Sweep file (YAML), sketch") names a partial TrialConfig (`base`), a `grid` whose
cross product gives the trials (the `loss` axis expands list-valued options inside each loss only), the
evaluation sets, per-trial resources, a search (grid or Optuna) and a scheduler (none or ASHA). Everything is
checked once, at load: every grid point is built as a TrialConfig, and every error names the file, the key path
in it, the broken rule and the value (`x.yaml: grid.loss[1].lambda[0]: ... must be >= 1 ..., but got 0.5`).

    files.py     where sweep files are; reading one (YAML without duplicate keys)
    parse.py     load_spec / parse_spec: `${VAR}` substitution, every section checked
    axes.py      the `grid:` section -> GridAxis (loss options expand inside their loss)
    model.py     SweepSpec and its parts (Resources, GridAxis, searches, schedulers)
    points.py    grid points -> TrialConfigs; errors moved to the file's key path
    names.py     readable trial names (`focal-g2-l1-s0`)
    describe.py  the --dry-run text: warnings, evaluation sets, compute estimate per device kind
    rules.py     SpecError and the shared checks
"""

from orchestrator.spec.describe import SECONDS_PER_ITER, describe, weight_warnings
from orchestrator.spec.files import resolve_spec_path, shipped_spaces
from orchestrator.spec.model import (
    ASHAScheduler,
    GridAxis,
    GridSearch,
    NoScheduler,
    OptunaSearch,
    Resources,
    SweepSpec,
)
from orchestrator.spec.parse import DEFAULT_MAX_TRIALS, load_spec, parse_spec
from orchestrator.spec.rules import SpecError

__all__ = [
    "DEFAULT_MAX_TRIALS",
    "SECONDS_PER_ITER",
    "ASHAScheduler",
    "GridAxis",
    "GridSearch",
    "NoScheduler",
    "OptunaSearch",
    "Resources",
    "SpecError",
    "SweepSpec",
    "describe",
    "load_spec",
    "parse_spec",
    "resolve_spec_path",
    "shipped_spaces",
    "weight_warnings",
]
