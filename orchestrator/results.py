"""A sweep run's trials as one Arrow table: the notebook API, and what `report` and `regress` read.

    from orchestrator import results
    table = results.load("smoke")                 # latest ended run; or run="smoke-20261125T101500Z"
    df = table.to_pandas()                        # one row per trial x eval set x class x metric

Columns, in order: `run`, `trial`, `variant` (trial name less its `-s<seed>` / `-split<seed>` suffixes), `status`
(the child run's MLflow status), `seed`, `split_seed`, `dataset` (training set), `eval` (evaluation key), `class`
(null for summaries), `metric` (iou | precision | recall | miou | miou_all | fwiou | pixel_acc | ece), `value`,
`wall_s` (the trial's train() time), `cpu`, `gpu` (resources per trial), `precision`, `run_id` (the child run);
then one column per varied parameter (flattened config paths such as `loss.name`, typed where every value parses).

Values are each child run's latest metrics: MLflow keeps, per key, the value at the highest step and, among values
logged at that step, the last one, so a restored trial that replays steps reports its final evaluation once.
Read through MLflow (children of the run's parent); the per-image intersection/union counts of each trial's
`per_class_<eval>.json` come along for the report's bootstrap, and its `labeled_counts.json` and
`small_objects_<eval>.json` for the report's class shares and recall by object size. Imports neither torch nor
trainers.data: class names come from the trials' own artifacts and metric keys.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from orchestrator import runs

# which run (sweep_runs.py) is part of this notebook API: results.find_run, results.SweepRun, ...
from orchestrator.sweep_runs import ENDED as ENDED
from orchestrator.sweep_runs import SweepRun, find_run
from orchestrator.sweep_runs import output_dir as output_dir
from orchestrator.sweep_runs import previous_run as previous_run
from trainers import metric_names as M

log = logging.getLogger(__name__)
FINISHED = "FINISHED"
DOWNLOAD_THREADS = 4
FIXED_COLUMNS = ("run", "trial", "variant", "status", "seed", "split_seed", "dataset", "eval", "class", "metric",
                 "value", "wall_s", "cpu", "gpu", "precision", "run_id")
NOT_VARIED = {"seed", "split_seed"}  # fixed columns already
_SEED_SUFFIX = re.compile(r"(-split\d+)?(-s\d+)?$")

PerImage = tuple[np.ndarray, np.ndarray]  # intersection, union: int64 [images, classes]


@dataclass(frozen=True, kw_only=True)
class SweepResults:
    """The table plus what it cannot hold: per-image counts, the parent's tags, the run's own sweep file."""

    run: SweepRun
    table: pa.Table
    per_image: Mapping[tuple[str, str], PerImage] = field(default_factory=dict)  # (trial, eval key) -> counts
    parent_tags: Mapping[str, str] = field(default_factory=dict)
    manifest: runs.RunManifest | None = None  # what the run was launched with (None: a run from before manifests)
    spec: Any = None  # without a manifest: orchestrator.spec.SweepSpec of the run's own sweep file, when readable
    expected_trials: int | None = None
    trial_info: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # trial -> trial_info.json
    params: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # trial -> its flattened config
    environment: Mapping[str, str] = field(default_factory=dict)  # the parent's environment.json: versions
    fetch: Callable[[str, str], Path | None] | None = None  # (trial, artifact name) -> local copy, or None
    trial_json: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # trial -> name -> REPORT_FILES' JSON
    run_url: Callable[[str], str | None] = lambda run_id: None

    def eval_sets_of(self, params: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """Evaluation key -> that set's config: the manifest's, else (an older run) the trial's `eval` param."""
        return self.manifest.eval_sets() if self.manifest is not None else eval_sets(params)

    def report_section(self) -> Mapping[str, Any]:
        """The sweep file's `report:` section, as the run was launched with it."""
        if self.manifest is not None:
            return self.manifest.report
        return getattr(self.spec, "report", None) or {}


def variant_of(trial_name: str) -> str:
    """`focal-g2-s1` -> `focal-g2`; `ce-split1-s0` -> `ce` (seeds of both kinds are what a column averages over)."""
    return _SEED_SUFFIX.sub("", trial_name) or trial_name


# --- reading it --------------------------------------------------------------------------------------------------


def load(sweep: str, run: str | None = None, tracking_uri: str | None = None, storage: str | None = None) -> pa.Table:
    """The results table of a sweep run (latest ended run by default); see the module docstring for its columns."""
    with tempfile.TemporaryDirectory(prefix="s4sweep-results-") as tmp:
        return collect(find_run(sweep, run, tracking_uri=tracking_uri, storage=storage), cache=Path(tmp)).table


def collect(run: SweepRun, *, cache: Path, artifacts: bool = True) -> SweepResults:
    """Everything report and regress need from MLflow; `artifacts=False` reads metrics and params only (fast)."""
    from orchestrator.tracking import Tracker

    tracker = Tracker(run.tracking_uri)
    parent = tracker.run(run.parent_run_id)
    children = tracker.children(run.experiment_id, run.parent_run_id)
    manifest, spec, environment = _parent_files(tracker, run, cache / "_parent") if artifacts else (None, None, {})
    listed: dict[str, list[str]] = {}
    files: dict[str, dict[str, Path]] = {}
    if artifacts and children:
        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            got = list(pool.map(lambda c: _download_trial(tracker, c, cache / c.name), children))
        listed = {c.name: names for c, (names, _) in zip(children, got, strict=True)}
        files = {c.name: f for c, (_, f) in zip(children, got, strict=True)}
    by_name = {c.name: c for c in children}

    def fetch(trial: str, name: str) -> Path | None:
        if trial not in by_name or name not in listed.get(trial, ()):
            return None
        return tracker.download_artifact(by_name[trial].run_id, name, cache / trial)

    info = {c.name: _read_json(files.get(c.name, {}).get("trial_info.json")) or {} for c in children}
    reports = {(c.name, key): _read_json(path) for c in children
               for name, path in files.get(c.name, {}).items() if (key := _per_class_key(name))}
    if manifest is not None:
        resources, expected = (manifest.cpu, manifest.gpu), manifest.expected_trials
    else:
        resources, expected = _resources(spec), expected_trials(spec)
    table = build_table(run, children, info=info, reports=reports, resources=resources)
    trial_json = {c.name: {n: data for n, path in files.get(c.name, {}).items()
                           if _report_file(n) and (data := _read_json(path)) is not None} for c in children}
    per_image = {k: (np.asarray(r["per_image_intersection"], np.int64).reshape(-1, len(r["class_names"])),
                     np.asarray(r["per_image_union"], np.int64).reshape(-1, len(r["class_names"])))
                 for k, r in reports.items() if r}
    return SweepResults(run=run, table=table, per_image=per_image, parent_tags=parent.tags, manifest=manifest,
                        spec=spec, expected_trials=expected, trial_info=info, fetch=fetch,
                        params={c.name: c.params for c in children}, environment=environment, trial_json=trial_json,
                        run_url=lambda run_id: tracker.run_url(run.experiment_id, run_id))


def build_table(run: SweepRun, children: list[Any], *, info: Mapping[str, Mapping[str, Any]] | None = None,
                reports: Mapping[tuple[str, str], Mapping[str, Any] | None] | None = None,
                resources: tuple[float, float] | None = None,
                class_order: Callable[[Mapping[str, str], str], Sequence[str]] | None = None) -> pa.Table:
    """The long table from child runs (anything with name, run_id, status, params, metrics). A trial without its
    per-class JSON has its classes in `class_order(params, eval key)` (the caller's label tables), else in another
    trial's order of the set."""
    info, reports = info or {}, reports or {}
    varied = varied_params([c.params for c in children])
    cols: dict[str, list[Any]] = {name: [] for name in FIXED_COLUMNS}
    params: dict[str, list[Any]] = {key: [] for key in varied}
    for child in children:
        p, trial_info = child.params, info.get(child.name, {})
        wall = child.metrics.get(M.TRIAL_TIME, trial_info.get("wall_s"))
        cpu, gpu = resources or _resources_of(p, trial_info)
        fixed = {"run": run.run_id, "trial": child.name, "variant": variant_of(child.name), "status": child.status,
                 "seed": _int(p.get("seed")), "split_seed": _int(p.get("split_seed")),
                 "dataset": training_set(p), "wall_s": None if wall is None else float(wall), "cpu": cpu,
                 "gpu": gpu, "precision": trial_info.get("precision") or p.get("precision.precision"),
                 "run_id": child.run_id}
        rows = list(_metric_rows(child, reports, class_order))
        for name, v in fixed.items():
            cols[name] += [v] * len(rows)
        for name, values in zip(("eval", "class", "metric", "value"), zip(*rows, strict=True) if rows else (),
                                strict=False):
            cols[name] += values
        for key in varied:
            params[key] += [p.get(key)] * len(rows)
    arrays = {name: pa.array(values, type=_FIXED_TYPES[name]) for name, values in cols.items()}
    arrays |= {key: _typed(values) for key, values in params.items()}
    meta = {"sweep": run.sweep, "run": run.run_id, "status": run.status, "parent_run_id": run.parent_run_id,
            "experiment_id": run.experiment_id, "tracking_uri": run.tracking_uri}
    return pa.table(arrays).replace_schema_metadata({"s4sweep": json.dumps(meta)})


def labeled_counts(tracker: Any, children: list[Any], cache: Path) -> dict[str, dict[str, Any]]:
    """trial -> {labeled_counts.json: its JSON} for the children that logged it (the end-of-sweep summary's class
    shares, without the rest of `collect`)."""
    def one(child: Any) -> dict[str, Any]:
        if M.LABELED_COUNTS_FILE not in tracker.artifact_names(child.run_id):
            return {}
        path = tracker.download_artifact(child.run_id, M.LABELED_COUNTS_FILE, cache / child.name)
        return {M.LABELED_COUNTS_FILE: _read_json(path)}

    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        return {c.name: files for c, files in zip(children, pool.map(one, children), strict=True) if files}


def varied_params(all_params: list[Mapping[str, str]]) -> list[str]:
    """Flattened config params whose value differs across trials (absent counts as a value), in first-seen order."""
    keys = list(dict.fromkeys(k for p in all_params for k in p))
    return [k for k in keys if k not in NOT_VARIED and len({p.get(k) for p in all_params}) > 1]


def training_set(params: Mapping[str, str]) -> str:
    """`dataset.name`, with `:<label set>` when the trial chose one (`idd:level3`)."""
    label_set = params.get("dataset.label_set")
    return params.get("dataset.name", "") + (f":{label_set}" if label_set not in (None, "None") else "")


def save(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def classes_in_order(table: pa.Table, eval_key: str) -> list[str]:
    """The classes of an evaluation set in dataset order (the table keeps each trial's rows in that order)."""
    rows = table.filter(pc.equal(table["eval"], eval_key))
    return [c for c in rows["class"].unique().to_pylist() if c is not None]


# --- pieces ------------------------------------------------------------------------------------------------------

_FIXED_TYPES = {"run": pa.string(), "trial": pa.string(), "variant": pa.string(), "status": pa.string(),
                "seed": pa.int64(), "split_seed": pa.int64(), "dataset": pa.string(), "eval": pa.string(),
                "class": pa.string(), "metric": pa.string(), "value": pa.float64(), "wall_s": pa.float64(),
                "cpu": pa.float64(), "gpu": pa.float64(), "precision": pa.string(), "run_id": pa.string()}


def _metric_rows(child: Any, reports: Mapping[tuple[str, str], Any],
                 class_order: Callable[[Mapping[str, str], str], Sequence[str]] | None) -> Any:
    """(eval key, class or None, metric, value) for every evaluation set the child logged, classes in dataset order."""
    parsed = [p for p in map(M.parse_val, child.metrics) if p is not None]
    eval_keys = list(dict.fromkeys(eval_key for eval_key, _, _ in parsed))
    for key in eval_keys:
        report = reports.get((child.name, key))
        logged = sorted({cls for e, kind, cls in parsed if (e, kind) == (key, "iou") and cls is not None})
        if report:
            classes = list(report["class_names"])
        else:  # no per-class JSON (a failed trial): the dataset's order, for the classes it logged
            known = (class_order(child.params, key) if class_order else ()) or \
                next((r["class_names"] for (_, k), r in reports.items() if k == key and r), ())
            classes = [c for c in known if c in logged] + [c for c in logged if c not in known]
        for summary in M.SUMMARIES:
            if (value := child.metrics.get(M.val(key, summary))) is not None:
                yield key, None, summary, float(value)
        for kind in M.PER_CLASS:
            for cls in classes:
                if (value := child.metrics.get(M.val_class(key, kind, cls))) is not None:
                    yield key, cls, kind, float(value)


def eval_sets(params: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Evaluation key -> that set's config (name, label_set, remap, eval_size, ...), from a trial's `eval` param (a
    JSON list of evaluation sets)."""
    try:
        sets = json.loads(params.get("eval", "[]"))
    except json.JSONDecodeError:
        return {}
    return {s.get("key") or s.get("name"): s for s in sets if isinstance(s, dict)} if isinstance(sets, list) else {}


def _download_trial(tracker: Any, child: Any, dst: Path) -> tuple[list[str], dict[str, Path]]:
    """The names of all the trial's artifacts, and local copies of the small JSON ones (per-class reports,
    trial_info.json, REPORT_FILES)."""
    listed = tracker.artifact_names(child.run_id)
    wanted = [n for n in listed if n == "trial_info.json" or _per_class_key(n) or _report_file(n)]
    return listed, {n: tracker.download_artifact(child.run_id, n, dst) for n in wanted}


def _per_class_key(name: str) -> str | None:
    m = re.fullmatch(r"per_class_(.+)\.json", name)
    return m.group(1) if m else None


def _report_file(name: str) -> bool:
    """A small JSON the trial logs for the report: labeled_counts.json, small_objects_<eval>.json."""
    return name == M.LABELED_COUNTS_FILE or fnmatch.fnmatchcase(name, M.small_objects_file("*"))


def _read_json(path: Path | None) -> Any:
    return json.loads(Path(path).read_text()) if path is not None and Path(path).is_file() else None


def _parent_files(tracker: Any, run: SweepRun, dst: Path) -> tuple[runs.RunManifest | None, Any, dict[str, str]]:
    """The run's manifest; for a run launched before manifests, the sweep file it was launched with (its copy on the
    parent run), parsed, or None if unreadable; and the parent's environment.json less `pip_freeze`."""
    names = tracker.artifact_names(run.parent_run_id)
    environment = {}
    if "environment.json" in names:
        environment = _read_json(tracker.download_artifact(run.parent_run_id, "environment.json", dst)) or {}
        environment.pop("pip_freeze", None)
    if runs.MANIFEST_FILE in names:
        path = tracker.download_artifact(run.parent_run_id, runs.MANIFEST_FILE, dst)
        where = f"run {run.run_id}: {runs.MANIFEST_FILE}"
        return runs.RunManifest.from_json(Path(path).read_text(), where=where), None, environment
    specs = [n for n in names if n.endswith((".yaml", ".yml"))]
    spec = _load_spec(tracker.download_artifact(run.parent_run_id, specs[0], dst), run) if specs else None
    return None, spec, environment


def _load_spec(path: Path, run: SweepRun) -> Any:
    from orchestrator.spec import SpecError, load_spec

    needs = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text())) - set(os.environ)
    try:  # a dataset root the file takes from the environment does not change the grid
        return load_spec(path, env={**os.environ, **{v: f"<{v}>" for v in needs}})
    except SpecError as e:
        log.warning("sweep file of run %s is not readable by this version (%s); using defaults", run.run_id, e)
        return None


def expected_trials(spec: Any) -> int | None:
    if spec is None:
        return None
    num_samples = getattr(spec.search, "num_samples", None)
    return len(spec.trials()) * num_samples if num_samples else len(spec.trials())


def _resources(spec: Any) -> tuple[float, float] | None:
    return None if spec is None else (float(spec.resources.cpu), float(spec.resources.gpu))


def _resources_of(params: Mapping[str, str], info: Mapping[str, Any]) -> tuple[float, float]:
    """Without the sweep file: CPUs = torch threads; GPUs = the memory fraction, else 1 when it ran on CUDA."""
    cpu = _float(params.get("device.threads")) or 1.0
    on_gpu = str(info.get("device", params.get("device.device", ""))).startswith("cuda")
    return cpu, (_float(params.get("device.memory_fraction")) or 1.0) if on_gpu else 0.0


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "None") else None
    except ValueError:
        return None


def _typed(values: list[str | None]) -> pa.Array:
    """A param column as int64, float64 or bool when every present value parses so, else strings."""
    present = [v for v in values if v is not None and v != "None"]
    for parse, kind in ((int, pa.int64()), (float, pa.float64())):
        try:
            parsed = [parse(v) for v in present]
        except ValueError:
            continue
        lookup = dict(zip(present, parsed, strict=True))
        return pa.array([lookup.get(v) for v in values], type=kind)
    if present and set(present) <= {"True", "False"}:
        return pa.array([None if v in (None, "None") else v == "True" for v in values], type=pa.bool_())
    return pa.array([None if v == "None" else v for v in values], type=pa.string())
