"""Per-category summary of a PIE-Bench per-image CSV: means skipping NaN, in the scales
each metric class declares (the customary ones of papers: structure and LPIPS x10^3, MSE
x10^4, SSIM x10^2; PSNR in dB and CLIP score unscaled), with the unit in every header,
the scored region and the SSIM convention stated, and the images that could not be
scored counted (``failed``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnedit.data.piebench import CATEGORY_NAMES, PIEBench
from attnedit.metrics.base import REGIONS
from attnedit.metrics.piebench import SSIM_CONVENTION_TEXT
from attnedit.metrics.registry import metric_info
from attnedit.report.render import WIDTH, Compact, fitted, footnote


def summarize(csv_path: Path, dataset: PIEBench, methods: list[str], metrics: list[str]) -> pd.DataFrame:
    """Unscaled means per method and category (and "all") over the dataset's ids in the CSV;
    ``failed``: images whose cells are empty (not scored: NaN/inf pixels), left out of the means."""
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    frame = frame[frame["file_id"].isin(set(dataset.sample_ids()))]
    categories = [str(dataset.mapping[i]["editing_type_id"]) for i in frame["file_id"]]
    rows = []
    for method in methods:
        cells = frame[[f"{method}|{m}" for m in metrics]]
        values = cells.apply(pd.to_numeric, errors="coerce")  # "nan" (empty region) and "" become NaN
        values.columns = metrics
        values["category_id"] = categories
        values["failed"] = (cells == "").all(axis=1).to_numpy()
        groups = sorted(values.groupby("category_id"), key=lambda g: int(g[0]))
        for category, part in [*groups, ("all", values)]:
            means = part[metrics].mean(skipna=True)
            name = CATEGORY_NAMES.get(category, "all")
            rows.append(
                {"method": method, "category_id": category, "category": name, "n": len(part),
                 "failed": int(part["failed"].sum()), **means}
            )
    return pd.DataFrame(rows, columns=["method", "category_id", "category", "n", "failed", *metrics])


def write_summary(
    table: pd.DataFrame,
    csv_path: Path,
    methods: list[str],
    metrics: list[str],
    random_weights: list[str],
    ssim_convention: str | None = None,
) -> str:
    """Write ``<stem>_summary.md`` and ``<stem>_summary.csv``; return the markdown.

    One method: its table as is; several: one table, a ``method`` column first. The
    Markdown is compact (render.py): the heading, the table (``failed`` only where an image
    was not scored, within render.WIDTH columns), then numbered notes: the SSIM convention
    (``ssim_convention``, None without an SSIM metric), random backbones, the regions, how
    the means were taken. The CSV keeps every column."""
    scaled = table.copy() if len(methods) > 1 else table.drop(columns="method")
    headers = {}
    for metric in metrics:
        info = metric_info(metric)
        scaled[metric] = scaled[metric] * info.scale
        headers[metric] = f"{metric} [{info.unit}]"
    scaled = scaled.rename(columns=headers)
    notes = []
    if ssim_convention is not None:
        notes.append(SSIM_CONVENTION_TEXT[ssim_convention])
    if random_weights:
        notes.append(f"RANDOM-BACKBONE ({', '.join(random_weights)}): not comparable with published numbers")
    regions = list(dict.fromkeys(metric_info(m).region for m in metrics))
    notes.append("Regions: " + "; ".join(REGIONS[r].text for r in regions))
    notes.append("Per-category means over images, NaN (empty region) skipped; n = images in the category, "
                 "failed = images not scored (NaN/inf pixels in the edited image), left out of the means "
                 "(a column only where one is non-zero; every column in the CSV).")
    shown = scaled if scaled["failed"].any() else scaled.drop(columns="failed")
    values = shown.astype(object).map(lambda v: f"{v:.2f}" if isinstance(v, float) else str(v))
    keys = [c for c in ("method", "category_id", "category", "n") if c in shown]
    numeric = {c for c in shown.columns if c not in ("method", "category")}
    lines = [f"# PIE-Bench evaluation: {', '.join(methods)}", "", fitted(Compact(values, keys, numeric, [])), "",
             *(footnote(k, note, WIDTH) for k, note in enumerate(notes, start=1))]
    text = "\n".join(lines) + "\n"
    csv_path.with_name(f"{csv_path.stem}_summary.md").write_text(text)
    scaled.to_csv(csv_path.with_name(f"{csv_path.stem}_summary.csv"), index=False)
    return text
