"""`s4sweep report`: a sweep run's results -> per-class IoU tables with honest statistics, pictures and cost.

One table per (training set, evaluation set): rows = the classes in dataset order, then `miou`, `miou_all`, `fwiou`,
`pixel_acc`; columns = an axis of the sweep (the loss variant by default: the trial name less its seed suffix);
cells = mean ± std over seeds, in %; the highest mean of a row in bold; beside each column a Δ against the baseline
column (the sweep file's `report.baseline`, `{loss: ce}` by default). A Δ carries ↑ or ↓ only when it *holds*: when
the 95% interval of a paired bootstrap excludes 0. Each replicate resamples the seeds (pairs of a column's trial and
the baseline's trial with the same seed) and the validation images, and recomputes IoU from the per-image
intersection/union counts of both trials on the same drawn images (paired); so a difference smaller than the
image-to-image and seed-to-seed noise is never marked as a win. Seeded and vectorised (one matrix product per
column).

Also: each class's pixel share in the labeled split and `miou_rare`, the mean IoU of the classes under
`report: {rare_share: 0.01}` of it (with its own paired bootstrap), grouped bar charts, a qualitative grid
composed from the trials' `samples_<eval>.png`, their confusion heatmaps, cost per column, and (`--small-objects`)
recall by object size from each trial's final evaluation (its `small_objects_<eval>.json`). Imports neither torch
nor trainers.data: it reads what the trials logged. Files: report.md, report.csv,
report.html (self-contained), PNGs and results.parquet in one folder, logged on the parent run under `report/`.
Several runs (`s4sweep report A B`) give one report whose tables of a shared evaluation set hold every run's columns,
(training set, column), side by side (combine.py).

    tables.py      results -> ClassTable per (training set, eval set), the baseline, cost; build, options_for
    combine.py     several runs -> one Report, a shared evaluation set's tables merged side by side
    bootstrap.py   the paired bootstrap over seeds and validation images (per class, miou, miou_all, rare classes)
    data_stats.py  what the trials logged for it: labeled pixel share, recall by object size
    render.py      markdown, csv, html; write (the report folder), publish (on the parent run)
    plots.py       bar charts / heatmaps, the qualitative grid, confusion heatmaps
"""

from orchestrator.report.bootstrap import Bootstrap, ImageDraws, paired_bootstrap, seed_bootstrap
from orchestrator.report.combine import combine, merge
from orchestrator.report.data_stats import FOUND, SIZE_BINS, class_share, small_object_table
from orchestrator.report.plots import MAX_BARS, bar_chart, pictures, qualitative_grid
from orchestrator.report.render import (
    FORMATS,
    escape,
    html_table,
    md_table,
    page,
    publish,
    to_csv,
    to_html,
    to_markdown,
    to_summary,
    write,
)
from orchestrator.report.tables import (
    BOOTSTRAP_ROWS,
    MIN_IMAGES,
    RARE_ROW,
    RARE_SHARE,
    SUMMARY_ROWS,
    ClassTable,
    Options,
    Report,
    Trials,
    build,
    class_table,
    cost_rows,
    options_for,
    pick_baseline,
)

__all__ = [
    "BOOTSTRAP_ROWS",
    "FORMATS",
    "FOUND",
    "MAX_BARS",
    "MIN_IMAGES",
    "RARE_ROW",
    "RARE_SHARE",
    "SIZE_BINS",
    "SUMMARY_ROWS",
    "Bootstrap",
    "ClassTable",
    "ImageDraws",
    "Options",
    "Report",
    "Trials",
    "bar_chart",
    "build",
    "class_share",
    "class_table",
    "combine",
    "cost_rows",
    "escape",
    "html_table",
    "md_table",
    "merge",
    "options_for",
    "page",
    "paired_bootstrap",
    "pick_baseline",
    "pictures",
    "publish",
    "qualitative_grid",
    "seed_bootstrap",
    "small_object_table",
    "to_csv",
    "to_html",
    "to_markdown",
    "to_summary",
    "write",
]
