"""Per-category summary of a PIE-Bench per-image CSV: means skipping NaN, in the scales
customary in papers (structure and LPIPS x10^3, MSE x10^4, SSIM x10^2; PSNR in dB and
CLIP score unscaled), with the unit in every header, the scored region and the SSIM
convention stated, and the images that could not be scored counted (``failed``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnedit.data.piebench import CATEGORY_NAMES, PIEBench
from attnedit.metrics.piebench import SSIM_CONVENTION_TEXT

# metric-name prefix -> (factor, unit shown in the header)
SCALES = {
    "psnr": (1.0, "dB"),
    "ssim": (1e2, "x10^2"),
    "mse": (1e4, "x10^4"),
    "lpips": (1e3, "x10^3"),
    "clip_similarity": (1.0, "CLIP score 0-100"),
    "structure_distance": (1e3, "x10^3"),
}
REGION_TEXT = {
    "unedit_part": "unedit_part = background: both images multiplied by (1 - mask), scored on the full frame",
    "edit_part": "edit_part = edit region: both images multiplied by the mask, scored on the full frame",
    "whole": "whole = the whole image",
}


def region_of(metric: str) -> str:
    return next((r for r in ("unedit_part", "edit_part") if metric.endswith(r)), "whole")


def scale_of(metric: str) -> tuple[float, str]:
    for prefix, scale in SCALES.items():
        if metric.startswith(prefix):
            return scale
    return 1.0, "raw"


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

    One method: its table as is; several: one table, a ``method`` column first. The title
    names the SSIM convention (``ssim_convention``, None without an SSIM metric)."""
    scaled = table.copy() if len(methods) > 1 else table.drop(columns="method")
    headers = {}
    for metric in metrics:
        factor, unit = scale_of(metric)
        scaled[metric] = scaled[metric] * factor
        headers[metric] = f"{metric} [{unit}]"
    scaled = scaled.rename(columns=headers)
    title = f"# PIE-Bench evaluation: {', '.join(methods)}"
    if ssim_convention is not None:
        title += f" -- {SSIM_CONVENTION_TEXT[ssim_convention]}"
    if random_weights:
        title += f" -- RANDOM-BACKBONE ({', '.join(random_weights)}): not comparable with published numbers"
    regions = list(dict.fromkeys(region_of(m) for m in metrics))
    lines = [
        title,
        "",
        "Regions: " + "; ".join(REGION_TEXT[r] for r in regions),
        "Per-category means over images, NaN (empty region) skipped; n = images in the category, "
        "failed = images not scored (NaN/inf pixels in the edited image), left out of the means.",
        "",
        scaled.to_markdown(index=False, floatfmt=".2f"),
        "",
    ]
    text = "\n".join(lines)
    csv_path.with_name(f"{csv_path.stem}_summary.md").write_text(text)
    scaled.to_csv(csv_path.with_name(f"{csv_path.stem}_summary.csv"), index=False)
    return text
