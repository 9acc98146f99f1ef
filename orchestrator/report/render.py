"""A Report -> report.md, report.csv (long form) and a self-contained report.html; `write` puts every requested
format, the pictures and results.parquet in one folder, `publish` logs that folder on the parent run.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from orchestrator import results as R
from orchestrator.report.plots import pictures
from orchestrator.report.tables import ClassTable, Report
from trainers.fileio import write_text
from trainers.small_objects import FOUND, SIZE_BINS

FORMATS = ("md", "csv", "html", "png")


def write(report: Report, res: R.SweepResults, out: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Every requested format into `out` (created), plus results.parquet; returns the files written."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"--format must name some of {', '.join(FORMATS)}, but got {', '.join(unknown)}")
    out.mkdir(parents=True, exist_ok=True)
    written = [R.save(res.table, out / "results.parquet")]
    figures: dict[tuple[str, str], list[tuple[str, Path]]] = {}
    if "png" in formats or "html" in formats:
        for ct in report.tables:
            figures[(ct.train, ct.eval)] = pictures(ct, res, out)
            written += [path for _, path in figures[(ct.train, ct.eval)]]
    if "md" in formats:
        written.append(write_text(out / "report.md", to_markdown(report)))
    if "csv" in formats:
        written.append(write_text(out / "report.csv", to_csv(report)))
    if "html" in formats:
        written.append(write_text(out / "report.html", to_html(report, figures)))
    return written


def publish(run: R.SweepRun, out: Path, artifact_path: str = "report") -> None:
    """Log a folder (the report, the verdict) on the sweep run's parent run, under `artifact_path`."""
    from orchestrator.tracking import Tracker

    Tracker(run.tracking_uri).log_artifact(run.parent_run_id, out, artifact_path)


def to_markdown(report: Report) -> str:
    lines = [f"# s4sweep report: {_title(report)}", "", _header(report, "`"), ""]
    if report.partial:
        lines += [f"> **{report.partial}**", ""]
    for ct in report.tables:
        lines += _md_section(ct, legend=True)
    if report.cost:
        lines += ["## Cost", ""]
        lines += md_table(["column", "trials", "wall s / trial", "CPU-h", "GPU-h"],
                           [[c, str(n), _num(w, 1), _num(cpu, 3), _num(gpu, 3)] for c, n, w, cpu, gpu in report.cost])
        lines.append("")
    if report.small_objects or report.small_object_notes:
        lines += ["## Small objects: recall (%) by object area at the evaluation size", "",
                  f"An object is found when at least {FOUND:.0%} of its pixels get its class; mean ± std over seeds.",
                  ""]
        head = ["train", "eval", "column", *_bin_names()]
        lines += md_table(head, [[tr, ev, lab, *(f"{_pct(m, s)} ({n})" for m, s, n in zip(mean, std, n_obj,
                                                                                           strict=True))]
                                  for tr, ev, lab, mean, std, n_obj in report.small_objects])
        lines.append("")
        lines += [f"- {note}" for note in report.small_object_notes] + ([""] if report.small_object_notes else [])
    return "\n".join(lines)


def to_summary(report: Report) -> str:
    """The per-class tables alone, as markdown (the end-of-sweep summary): no header, cost or pictures."""
    lines = [f"> **{report.partial}**", ""] if report.partial else []
    for ct in report.tables:
        lines += _md_section(ct, legend=bool(ct.baseline))
    return "\n".join(lines).rstrip("\n") if report.tables else "\n".join([*lines, "(no finished trials)"])


def _md_section(ct: ClassTable, *, legend: bool) -> list[str]:
    lines = [f"## {ct.train} → {ct.eval}: IoU (%), mean ± std over seeds", "",
             f"columns: {ct.axis}; baseline: {ct.baseline or 'none'}; n = finished trials", ""]
    lines += md_table(*_table_cells(ct)) + [""] + ([_LEGEND, ""] if legend else [])
    return lines + [f"- {note}" for note in ct.notes] + ([""] if ct.notes else [])


_LEGEND = ("**bold**: highest mean of the row. Δ: column minus baseline, in points; ↑/↓ only where the difference "
           "holds (95% paired bootstrap over seeds and validation images excludes 0); an unmarked Δ is within noise "
           "or was not tested (fwiou and pixel_acc never are).")


def _table_cells(ct: ClassTable) -> tuple[list[str], list[list[str]]]:
    best = ct.best()
    shares = _share_columns(ct)
    head = ["class"] + [f"labeled px % ({train})" if len(shares) > 1 else "labeled px %" for train, _ in shares]
    for k, (col, n) in enumerate(zip(ct.columns, ct.trials, strict=True)):
        head += [f"{col} (n={n})"] + ([f"Δ {col}"] if ct.compared[k] else [])
    rows = []
    for r, name in enumerate(ct.rows):
        row = [name] + [f"{100 * ct.share[r, k]:.2f}" if r < len(ct.classes) else "" for _, k in shares]
        for k in range(len(ct.columns)):
            cell = _pct(ct.mean[r, k], ct.std[r, k])
            row.append(f"**{cell}**" if best[r, k] else cell)
            if ct.compared[k]:
                row.append(_delta(ct.delta[r, k], ct.low[r, k], ct.holds[r, k]))
        rows.append(row)
    return head, rows


def _share_columns(ct: ClassTable) -> list[tuple[str, int]]:
    """One labeled-share column per training set whose share is known: (training set, a column of it)."""
    if ct.share is None:
        return []
    first: dict[str, int] = {}
    for k, train in enumerate(ct.trains):
        first.setdefault(train, k)
    return [(train, k) for train, k in first.items() if not np.isnan(ct.share[:, k]).all()]


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(head) - 1)
    return ["| " + " | ".join(r) + " |" for r in (head, align, *rows)]


def to_csv(report: Report) -> str:
    """Long form, fractions not %: one line per (table, row, column)."""
    import csv
    import io

    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(["train", "eval", "row", "column", "trials", "mean", "std", "best", "delta", "ci_low", "ci_high",
                "holds", "labeled_px_share"])
    for ct in report.tables:
        best = ct.best()
        for r, name in enumerate(ct.rows):
            for k, col in enumerate(ct.columns):
                share = ct.share[r, k] if ct.share is not None and r < len(ct.classes) else None
                holds = {1: "true", 0: "false"}.get(int(ct.holds[r, k]), "")
                w.writerow([ct.trains[k], ct.eval, name, col, ct.trials[k], _raw(ct.mean[r, k]), _raw(ct.std[r, k]),
                            str(bool(best[r, k])).lower(), _raw(ct.delta[r, k]), _raw(ct.low[r, k]),
                            _raw(ct.high[r, k]), holds, _raw(share)])
    return buffer.getvalue()


def to_html(report: Report, figures: Mapping[tuple[str, str], list[tuple[str, Path]]]) -> str:
    """One self-contained page: the markdown's content as HTML tables, every picture inlined as base64 PNG."""
    header = re.sub(r"`(.+?)`", r"<code>\1</code>", escape(_header(report, "`")))
    parts = [f"<h1>s4sweep report: {escape(_title(report))}</h1>", f"<p>{header}</p>"]
    if report.partial:
        parts.append(f'<p class="partial">{escape(report.partial)}</p>')
    for ct in report.tables:
        parts += [f"<h2>{escape(ct.train)} → {escape(ct.eval)}: IoU (%), mean ± std over seeds</h2>",
                  f"<p>columns: {escape(ct.axis)}; baseline: {escape(ct.baseline or 'none')}; n = finished trials</p>",
                  html_table(*_table_cells(ct)), f"<p class='legend'>{escape(_LEGEND)}</p>"]
        parts += [f"<p class='note'>{escape(n)}</p>" for n in ct.notes]
        for title, path in figures.get((ct.train, ct.eval), []):
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{escape(title)}'>"
                         f"<figcaption>{escape(title)}</figcaption></figure>")
    if report.cost:
        parts += ["<h2>Cost</h2>", html_table(["column", "trials", "wall s / trial", "CPU-h", "GPU-h"],
                                              [[c, str(n), _num(w, 1), _num(cpu, 3), _num(g, 3)]
                                               for c, n, w, cpu, g in report.cost])]
    if report.small_objects or report.small_object_notes:
        parts += ["<h2>Small objects: recall (%) by object area</h2>",
                  html_table(["train", "eval", "column", *_bin_names()],
                             [[tr, ev, lab, *(f"{_pct(m, s)} ({n})" for m, s, n in zip(mean, std, n_obj, strict=True))]
                              for tr, ev, lab, mean, std, n_obj in report.small_objects])]
        parts += [f"<p class='note'>{escape(n)}</p>" for n in report.small_object_notes]
    return page(f"s4sweep report {', '.join(r.run_id for r in report.runs or (report.run,))}", "\n".join(parts))


def _title(report: Report) -> str:
    runs = report.runs or (report.run,)
    if len(runs) == 1:
        return f"{runs[0].sweep}, run {runs[0].run_id}"
    return ", ".join(f"{r.sweep} (run {r.run_id})" for r in runs)


def _header(report: Report, quote: str) -> str:
    runs = report.runs or (report.run,)
    parents = " · ".join(f"parent run {quote}{r.parent_run_id}{quote} · run status {r.status}" for r in runs)
    return f"{parents} · {report.finished} of {report.total} trials finished"


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Markdown-marked cells (**bold**) become <b>; everything else is escaped."""
    def cell(text: str, tag: str) -> str:
        body = escape(text)
        body = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", body)
        return f"<{tag}>{body}</{tag}>"

    lines = ["<table>", "<tr>" + "".join(cell(h, "th") for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(cell(c, "td") for c in r) + "</tr>" for r in rows]
    return "\n".join(lines + ["</table>"])


def page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child,th:first-child"
             "{text-align:left}.partial,.fail{background:#fdd;padding:.5em;font-weight:bold}.pass{background:#dfd;"
             "padding:.5em;font-weight:bold}.legend,.note{color:#555;font-size:90%}img{max-width:100%}")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style>"
            f"</head><body>\n{body}\n</body></html>\n")


def _pct(mean: float, std: float) -> str:
    if mean is None or np.isnan(mean):
        return "–"
    return f"{100 * mean:.1f}" if std is None or np.isnan(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _delta(delta: float, low: float, holds: int) -> str:
    if np.isnan(delta):
        return "–"
    text = f"{100 * delta:+.1f}"
    text = "0.0" if text in ("+0.0", "-0.0") else text
    return text + ((" ↑" if low > 0 else " ↓") if holds == 1 else "")


def _num(value: float, digits: int) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _raw(value: float | None) -> str:
    return "" if value is None or np.isnan(value) else repr(float(value))


def _bin_names() -> list[str]:
    edges = [*SIZE_BINS, None]
    return [f"{lo}–{hi} px" if hi else f"≥{lo} px" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]



def escape(text: str) -> str:
    return html.escape(str(text), quote=True)
