"""The report's pictures: per-class IoU bars by column (a heatmap beyond MAX_BARS columns), a qualitative grid
composed from the trials' `samples_<eval>.png`, and their confusion heatmaps."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import results as R
from orchestrator.report.tables import ClassTable

log = logging.getLogger(__name__)
MAX_BARS = 12  # columns a grouped bar chart can show; more get a heatmap


def pictures(ct: ClassTable, res: R.SweepResults, out: Path) -> list[tuple[str, Path]]:
    """Bar chart of per-class IoU by column, the qualitative grid, and each column's confusion heatmap."""
    stem = _safe(f"{ct.train}_{ct.eval}")
    made = [(f"per-class IoU by {ct.axis} ({ct.train} → {ct.eval})", bar_chart(ct, out / f"iou_{stem}.png"))]
    if res.fetch is None:
        return made
    samples = [res.fetch(trial, f"samples_{ct.eval}.png") for trial in ct.examples]
    if all(s is not None for s in samples) and samples:
        grid = qualitative_grid([Path(s) for s in samples if s], ct.columns, out / f"samples_{stem}.png")
        if grid is not None:
            made.append((f"fixed validation images: input, ground truth, each column's prediction "
                         f"(trials {', '.join(ct.examples)})", grid))
    for col, trial in zip(ct.columns, ct.examples, strict=True):
        found = res.fetch(trial, f"confusion_{ct.eval}.png")
        if found is not None:
            path = out / f"confusion_{stem}_{_safe(col)}.png"
            path.write_bytes(Path(found).read_bytes())
            made.append((f"confusion matrix, {col} (trial {trial}; rows: ground truth, row-normalised)", path))
    return made


def bar_chart(ct: ClassTable, path: Path) -> Path:
    """Grouped bars (mean, std as error bar) per class and column; beyond MAX_BARS columns bars are unreadable and a
    heatmap of the means (classes x columns) is drawn instead."""
    plt = _pyplot()
    rows = [i for i, r in enumerate(ct.rows) if r not in ("fwiou", "pixel_acc")]
    k = len(ct.columns)
    title = f"{ct.train} → {ct.eval}: per-class IoU (%), mean over seeds"
    if k > MAX_BARS:
        fig, ax = plt.subplots(figsize=(min(40.0, 2 + 0.18 * k), 2 + 0.25 * len(rows)))
        image = ax.imshow(100 * ct.mean[rows], aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(rows)), [ct.rows[i] for i in rows], fontsize=7)
        ax.set_xticks(range(k), ct.columns, rotation=90, fontsize=5)
        fig.colorbar(image, ax=ax, label="IoU (%)")
    else:
        fig, ax = plt.subplots(figsize=(max(8.0, 0.35 * len(rows) * max(k, 2) ** 0.5 + 2), 4.5))
        width, x = 0.8 / k, np.arange(len(rows))
        for j, col in enumerate(ct.columns):
            ax.bar(x + (j - (k - 1) / 2) * width, 100 * np.nan_to_num(ct.mean[rows, j]), width,
                   yerr=100 * np.nan_to_num(ct.std[rows, j]), label=col, capsize=1.5)
        ax.set_xticks(x, [ct.rows[i] for i in rows], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("IoU (%)")
        ax.legend(fontsize=8, ncols=min(k, 4))
        title += " ± std"
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def qualitative_grid(samples: Sequence[Path], columns: Sequence[str], path: Path) -> Path | None:
    """Each samples PNG is rows of [input | ground truth | prediction] for the same fixed images; keep the first's
    input and ground truth and put every column's prediction beside them."""
    from PIL import Image

    strips = [np.asarray(Image.open(p).convert("RGB")) for p in samples]
    if len({s.shape for s in strips}) != 1 or strips[0].shape[1] % 3:
        log.warning("samples PNGs differ in size; no qualitative grid")
        return None
    w = strips[0].shape[1] // 3
    grid = np.concatenate([strips[0][:, : 2 * w], *(s[:, 2 * w:] for s in strips)], axis=1)
    plt = _pyplot()
    h = grid.shape[0]
    fig, ax = plt.subplots(figsize=(max(4.0, grid.shape[1] / 60), max(2.0, h / 60) + 0.6))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([w * (i + 0.5) for i in range(2 + len(columns))], ["input", "ground truth", *columns],
                  rotation=30, ha="right", fontsize=8)
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"

