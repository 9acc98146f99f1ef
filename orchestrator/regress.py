"""`s4sweep regress`: a sweep run against a pinned baseline -> verdict table and exit status.

The baseline (`s4sweep report SWEEP --emit-baseline FILE`, kept in the repository, updated by an explicit change)
holds, per cell (column x training set x evaluation set), the mean and std over seeds of `miou`, of each class's
IoU and of the trial wall time; the identity of what produced it; and the tolerances. The verdict
(reference/orchestrators.md §7, §9.15) is `baseline | current | Δ | tolerance | status` per check, worst first,
each regression marked "new" or "persisting" against the previous run of the sweep, with an identity header.

Exit status, always after verdict.md / verdict.html / verdict.json are written and logged on the parent run (and
the optional webhook got the JSON): 0 pass, 1 regression, 2 unusable inputs (a baseline cell without its trials,
a number the baseline holds that the run lacks in any of the cell's trials, e.g. a vanished class row or a renamed
metric, or an identity mismatch: another sweep file, other data, another precision). git sha and library versions
are shown, not enforced: a new commit or library is what a nightly run is there to judge.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from orchestrator import report as RP
from orchestrator import results as R
from orchestrator.baseline import DEFAULT_TOLERANCES, FORMAT, BaselineError, read_baseline
from trainers.fileio import write_text

log = logging.getLogger(__name__)
PASS, REGRESSION, UNUSABLE = 0, 1, 2
HARD_IDENTITY = ("sweep", "spec_sha256", "data", "precision")  # must match; git sha and versions are shown only
VERSION_KEYS = ("python", "torch", "torchvision", "ray", "mlflow", "optuna", "cuda", "devices")
Status = Literal["ok", "improved", "regression", "missing"]


# --- the baseline file -------------------------------------------------------------------------------------------


def identity(res: R.SweepResults) -> dict[str, Any]:
    """What must match for numbers to be comparable (sweep, sweep file, data, precision), and what is only shown."""
    data: dict[str, list[str]] = {}
    for key, value in sorted(res.parent_tags.items()):
        if key.startswith("s4sweep.data."):  # `s4sweep.data.<dataset>[:<label set>]:<absolute root>`
            data.setdefault(re.sub(r":/.*$", "", key.removeprefix("s4sweep.data.")), []).append(value)  # root: local
    precision = sorted({p for p in res.table["precision"].to_pylist() if p})
    return {"sweep": res.run.sweep, "spec_sha256": res.parent_tags.get("s4sweep.spec_sha256", ""),
            "data": {k: sorted(set(v)) for k, v in data.items()}, "precision": precision,
            "git_sha": res.parent_tags.get("s4sweep.git_sha", "unknown"),
            "versions": {k: res.environment[k] for k in VERSION_KEYS if k in res.environment}}


def emit_baseline(res: R.SweepResults, report: RP.Report, path: Path, *,
                  tolerances: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Write the baseline JSON of a finished, complete run; refuses a partial one. Tolerances: the defaults, then
    those of the file being replaced (regenerating keeps them), then `tolerances`."""
    if report.partial:
        raise BaselineError(f"{path}: a baseline needs a complete run, but {report.partial}")
    trials = RP.Trials.of(res.table, report.tables[0].axis if report.tables else "variant")
    cells = []
    for ct in report.tables:
        classes = ct.classes  # the rare-classes row is not pinned: each class's IoU is, at iou_abs
        for k, col in enumerate(ct.columns):
            member = (trials.label == col) & (trials.status == R.FINISHED)
            wall = trials.wall_s[member]
            cells.append({"column": col, "train": ct.train, "eval": ct.eval, "trials": ct.trials[k],
                          "seeds": sorted(_seed_key(trials, i) for i in np.flatnonzero(member)),
                          "miou": _stat(ct.mean[ct.rows.index("miou"), k], ct.std[ct.rows.index("miou"), k]),
                          "iou": {c: _stat(ct.mean[r, k], ct.std[r, k]) for r, c in enumerate(classes)},
                          "wall_s": _stat(float(np.nanmean(wall)) if wall.size else math.nan,
                                          float(np.nanstd(wall, ddof=1)) if wall.size > 1 else math.nan)})
    unknown = sorted(set(tolerances or {}) - set(DEFAULT_TOLERANCES))
    if unknown:
        raise BaselineError(f"--tolerance keys must be some of {', '.join(DEFAULT_TOLERANCES)}, but got "
                            f"{', '.join(unknown)}")
    kept = read_baseline(path).get("tolerances", {}) if path.is_file() else {}
    baseline = {"format": FORMAT, "sweep": res.run.sweep, "source_run": res.run.run_id,
                "axis": report.tables[0].axis if report.tables else "variant", "identity": identity(res),
                "tolerances": {**DEFAULT_TOLERANCES, **kept, **(tolerances or {})}, "cells": cells}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(_clean(baseline), indent=1, allow_nan=False) + "\n")
    return baseline


# --- the verdict -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Check:
    cell: str  # `column @ train→eval`
    metric: str  # miou, iou/<class>, wall_s
    baseline: float
    baseline_std: float | None
    current: float | None
    delta: float | None
    tolerance: float  # absolute (IoU), or relative (wall_s)
    status: Status
    since: str = ""  # "new" or "persisting" for a regression

    @property
    def severity(self) -> float:
        """Sort key, lowest first: missing, then how far below the baseline in units of the tolerance."""
        if self.current is None or self.delta is None:
            return -math.inf
        if self.metric == "wall_s":
            return -(self.current / max(self.baseline, 1e-9) - 1) / max(self.tolerance, 1e-9)
        return self.delta / max(self.tolerance, 1e-9)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    sweep: str
    run: str
    baseline_file: str
    baseline_run: str
    exit_code: int
    status: Literal["pass", "regression", "unusable"]
    problems: tuple[str, ...]
    identity: tuple[tuple[str, str, str, str], ...]  # field, baseline, current, ok | MISMATCH | changed
    checks: tuple[Check, ...]
    previous_run: str | None = None
    links: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["regressions"] = [c for c in data["checks"] if c["status"] == "regression"]
        return _clean(data)


def compare(res: R.SweepResults, baseline: Mapping[str, Any], *, baseline_file: str = "",
            previous: R.SweepResults | None = None) -> Verdict:
    problems, ident = _identity_rows(baseline.get("identity", {}), identity(res))
    checks, missing = _checks(res, baseline)
    problems += missing
    before: set[tuple[str, str]] = set()
    if previous is not None:
        before = {(c.cell, c.metric) for c in _checks(previous, baseline)[0] if c.status == "regression"}
    checks = [replace(c, since="persisting" if (c.cell, c.metric) in before else "new")
              if c.status == "regression" else c for c in checks]
    checks.sort(key=lambda c: (c.status != "missing", c.status != "regression", c.severity, c.cell, c.metric))
    regressed = any(c.status == "regression" for c in checks)
    code = UNUSABLE if problems else REGRESSION if regressed else PASS
    links = {"parent run": url} if (url := res.run_url(res.run.parent_run_id)) else {}
    return Verdict(sweep=res.run.sweep, run=res.run.run_id, baseline_file=baseline_file,
                   baseline_run=str(baseline.get("source_run", "")), exit_code=code,
                   status=("pass", "regression", "unusable")[code], problems=tuple(problems), identity=tuple(ident),
                   checks=tuple(checks), previous_run=previous.run.run_id if previous else None, links=links)


def _identity_rows(base: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, ...]]]:
    problems, rows = [], []
    for key in HARD_IDENTITY:
        ok = base.get(key) == now.get(key)
        rows.append((key, _show(base.get(key)), _show(now.get(key)), "ok" if ok else "MISMATCH"))
        if not ok:
            problems.append(f"identity mismatch: {key} is {_show(now.get(key))}, the baseline has "
                            f"{_show(base.get(key))}")
    rows.append(("git_sha", _show(base.get("git_sha")), _show(now.get("git_sha")),
                 "ok" if base.get("git_sha") == now.get("git_sha") else "changed"))
    versions_b, versions_n = base.get("versions", {}), now.get("versions", {})
    for key in sorted(set(versions_b) | set(versions_n)):
        same = versions_b.get(key) == versions_n.get(key)
        rows.append((key, _show(versions_b.get(key)), _show(versions_n.get(key)), "ok" if same else "changed"))
    return problems, rows


def _checks(res: R.SweepResults, baseline: Mapping[str, Any]) -> tuple[list[Check], list[str]]:
    tol = {**DEFAULT_TOLERANCES, **baseline.get("tolerances", {})}
    report = RP.build(res, RP.Options(axis=baseline.get("axis", "variant"), baseline={}))
    trials = RP.Trials.of(res.table, baseline.get("axis", "variant"))
    tables = {(ct.train, ct.eval): ct for ct in report.tables}
    checks: list[Check] = []
    problems: list[str] = []
    gaps: list[str] = []  # `cell metric (n of m trials lack it)`: a number the run does not have
    for cell in baseline.get("cells", []):
        name = f"{cell['column']} @ {cell['train']}→{cell['eval']}"
        ct = tables.get((cell["train"], cell["eval"]))
        k = ct.columns.index(cell["column"]) if ct is not None and cell["column"] in ct.columns else None
        member = (trials.label == cell["column"]) & (trials.status == R.FINISHED)
        seeds = sorted(_seed_key(trials, i) for i in np.flatnonzero(member))
        lacking = [s for s in map(list, cell.get("seeds", [])) if s not in seeds]
        if k is None or lacking:
            problems.append(f"missing trials: {name} has no finished trial for seed(s) "
                            f"{', '.join(_seed_text(s) for s in lacking) or 'any'}")
        rows = {"miou": ("miou", cell["miou"], tol["miou_abs"])}
        rows |= {f"iou/{c}": (c, stat, tol["iou_abs"]) for c, stat in cell["iou"].items()}
        for metric, (row, stat, absolute) in rows.items():
            if stat.get("mean") is None:
                continue  # no baseline value (no finished trial had it): nothing to hold the run to
            have = 0 if k is None or row not in ct.rows else int(ct.counts[ct.rows.index(row), k])
            # every trial must have it: the mean of the others would pass off one seed as the cell
            current = float(ct.mean[ct.rows.index(row), k]) if k is not None and have == ct.trials[k] else None
            if k is not None and current is None:
                gaps.append(f"{name} {metric} ({ct.trials[k] - have} of {ct.trials[k]} trials lack it)")
            width = max(absolute, tol["seed_std_k"] * (stat.get("std") or 0.0))
            checks.append(_check(name, metric, stat, current, width, higher_is_better=True))
        wall = trials.wall_s[member]
        current_wall = float(wall.mean()) if wall.size and not np.isnan(wall).any() else None
        if cell.get("wall_s", {}).get("mean") is not None:
            if k is not None and current_wall is None:
                gaps.append(f"{name} wall_s ({int(np.isnan(wall).sum())} of {wall.size} trials lack it)")
            checks.append(_check(name, "wall_s", cell["wall_s"], current_wall, tol["wall_rel"],
                                 higher_is_better=False))
    if gaps:
        problems.append(f"missing numbers: {'; '.join(gaps)}")
    return checks, problems


def _check(cell: str, metric: str, stat: Mapping[str, Any], current: float | None, tolerance: float, *,
           higher_is_better: bool) -> Check:
    base = float(stat["mean"])
    if current is None or math.isnan(current):
        return Check(cell=cell, metric=metric, baseline=base, baseline_std=stat.get("std"), current=None, delta=None,
                     tolerance=tolerance, status="missing")
    delta = current - base
    if higher_is_better:
        status: Status = "regression" if delta < -tolerance else "improved" if delta > tolerance else "ok"
    else:  # wall time: relative
        ratio = current / max(base, 1e-9)
        status = "regression" if ratio > 1 + tolerance else "improved" if ratio < 1 / (1 + tolerance) else "ok"
    return Check(cell=cell, metric=metric, baseline=base, baseline_std=stat.get("std"), current=current, delta=delta,
                 tolerance=tolerance, status=status)


# --- output ------------------------------------------------------------------------------------------------------


def write(verdict: Verdict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"verdict.json": json.dumps(verdict.to_json(), indent=1) + "\n", "verdict.md": to_markdown(verdict),
             "verdict.html": to_html(verdict)}
    for name, text in files.items():
        write_text(out / name, text)
    return [out / name for name in files]


def headline(v: Verdict) -> str:
    regressions = [c for c in v.checks if c.status == "regression"]
    new = sum(c.since == "new" for c in regressions)
    if v.status == "unusable":
        return f"UNUSABLE (exit 2): {'; '.join(v.problems)}"
    if v.status == "regression":
        return f"REGRESSION (exit 1): {len(regressions)} check(s) beyond tolerance, {new} new since the previous run"
    return f"PASS (exit 0): {len(v.checks)} checks within tolerance"


def _table(v: Verdict) -> tuple[list[str], list[list[str]]]:
    head = ["cell", "metric", "baseline", "current", "Δ", "tolerance", "status", "since previous run"]
    rows = []
    for c in v.checks:
        wall = c.metric == "wall_s"
        show = (lambda x: f"{x:.2f} s") if wall else (lambda x: f"{100 * x:.1f}")
        base = show(c.baseline) + ("" if c.baseline_std is None or wall else f" ± {100 * c.baseline_std:.1f}")
        tol = f"+{100 * c.tolerance:.0f}%" if wall else f"{100 * c.tolerance:.1f}"
        delta = "–" if c.delta is None else (f"{c.delta:+.2f} s" if wall else f"{100 * c.delta:+.1f}")
        status = f"**{c.status.upper()}**" if c.status in ("regression", "missing") else c.status
        rows.append([c.cell, c.metric, base, "–" if c.current is None else show(c.current), delta, tol, status,
                     c.since])
    return head, rows


def to_markdown(v: Verdict) -> str:
    lines = [f"# s4sweep regress: {v.sweep}, run {v.run}", "",
             f"baseline `{v.baseline_file}` (from run {v.baseline_run}); previous run: {v.previous_run or 'none'}",
             "", f"**{headline(v)}**", ""]
    lines += [f"- {p}" for p in v.problems] + ([""] if v.problems else [])
    lines += [f"- {name}: {url}" for name, url in v.links.items()] + ([""] if v.links else [])
    lines += ["## Identity", ""] + RP.md_table(["field", "baseline", "current", ""],
                                                [list(r) for r in v.identity]) + [""]
    lines += ["## Checks, worst first", "",
              "IoU in points (Δ = current - baseline); wall time relative. tolerance = max(absolute, k x baseline "
              "seed std).", ""]
    lines += RP.md_table(*_table(v)) + [""]
    return "\n".join(lines)


def to_html(v: Verdict) -> str:
    css = "pass" if v.status == "pass" else "fail"
    e = RP.escape
    body = [f"<h1>s4sweep regress: {e(v.sweep)}, run {e(v.run)}</h1>",
            f"<p>baseline <code>{e(v.baseline_file)}</code> (from run {e(v.baseline_run)}); previous run: "
            f"{e(v.previous_run or 'none')}</p>", f"<p class='{css}'>{e(headline(v))}</p>"]
    body += [f"<p class='note'>{RP.escape(p)}</p>" for p in v.problems]
    body += [f"<p><a href='{RP.escape(url)}'>{RP.escape(name)}</a></p>" for name, url in v.links.items()]
    body += ["<h2>Identity</h2>", RP.html_table(["field", "baseline", "current", ""], [list(r) for r in v.identity]),
             "<h2>Checks, worst first</h2>", RP.html_table(*_table(v))]
    return RP.page(f"s4sweep regress {v.run}", "\n".join(body))


def notify(url: str, verdict: Verdict, *, timeout_s: float = 10.0) -> bool:
    """POST the verdict as JSON; a failing webhook is logged, never changes the exit status."""
    body = json.dumps({"headline": headline(verdict), **verdict.to_json()}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError) as e:
        log.error("webhook %s failed: %s", url, e)
        return False
    if not ok:
        log.error("webhook %s answered %d", url, response.status)
    return ok


# --- helpers -----------------------------------------------------------------------------------------------------


def _stat(mean: float, std: float) -> dict[str, float | None]:
    return {"mean": None if math.isnan(mean) else float(mean), "std": None if math.isnan(std) else float(std)}


def _seed_key(trials: RP.Trials, i: int) -> list[Any]:
    return [trials.seed[i], trials.split_seed[i]]


def _seed_text(seed: Sequence[Any]) -> str:
    return f"seed {seed[0]}" + (f" split {seed[1]}" if len(seed) > 1 and seed[1] else "")


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) or "–"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "–"
    return "–" if value in (None, "") else str(value)


def _clean(value: Any) -> Any:
    """Strict JSON: NaN -> null, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value
