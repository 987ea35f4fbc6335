"""The study's cases grouped by grid point, and the cells and headers of its tables."""

from __future__ import annotations

import pandas as pd

from attnedit.errors import DataError
from attnedit.methods.bias_delta.params import PARAMS as GRID_KEYS
from attnedit.metrics.registry import metric_info
from attnedit.report.cells import group_cell

EXTRA_KEYS = GRID_KEYS[2:]
GUIDANCE_ORDER = ("none", "GRAG", "V only", "DCAG")
FIDELITY = ("lpips", "ssim", "psnr", "mse")


def guidance_label(dk: float, dv: float, bk: float = 1.0, bv: float = 1.0, dq: float = 1.0, bq: float = 1.0) -> str:
    key, value, query = (dk != 1 or bk != 1), (dv != 1 or bv != 1), (dq != 1 or bq != 1)
    name = {(False, False): "none", (True, False): "GRAG", (False, True): "V only", (True, True): "DCAG"}[(key, value)]
    return name + (" +Q" if query else "")


def point_columns(frame: pd.DataFrame) -> list[str]:
    extras = [k for k in EXTRA_KEYS if (frame[k] != 1).any()]
    return ["run", "guidance", "dk", "dv", *extras]


def guided_points(frame: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """({point column: value}, cases) of every grid point but the unedited one, in reading order."""
    columns = point_columns(frame)
    rows = [(dict(zip(columns, key)), group) for key, group in points(frame)]
    return [(row, group) for row, group in rows if row["guidance"] != "none"]


def unguided_for(identity: pd.DataFrame, group: pd.DataFrame) -> pd.DataFrame:
    """The unguided cases (``identity``) a guided point's ``group`` is compared with: those of
    its own arithmetic family when the study holds them (official rows against the official
    scripts' (1, 1) row; fused rows against the stock or fused (1, 1) row, bitwise equal),
    else all of them."""
    if "guidance_arithmetic" not in group or "guidance_arithmetic" not in identity:
        return identity
    official = identity.guidance_arithmetic.eq("official")
    same = identity[official] if group.guidance_arithmetic.eq("official").all() else identity[~official]
    return same if not same.empty else identity


def points(frame: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """(key, cases) per grid point in reading order: guidance, dk, dv, then the rest."""
    columns = point_columns(frame)
    groups = list(frame.groupby(columns, sort=False))

    def order(item):
        key = dict(zip(columns, item[0]))
        base = key["guidance"].replace(" +Q", "")
        return (GUIDANCE_ORDER.index(base), key["dk"], key["dv"], *(key[k] for k in columns[4:]), key["run"])

    return sorted(groups, key=order)


def parse_point(text: str) -> dict[str, float]:
    """"dk=1.1,dv=1.15" -> every grid key's value (unnamed keys: 1, the identity)."""
    point = dict.fromkeys(GRID_KEYS, 1.0)
    for part in filter(None, text.replace(" ", "").split(",")):
        key, _, value = part.partition("=")
        if key not in GRID_KEYS or not value:
            raise DataError(f"grid point '{text}': '{part}' is not <key>=<number> with a key of {', '.join(GRID_KEYS)} "
                            "(e.g. --pair dk=1.1,dv=1.15 dk=1,dv=1)")
        try:
            point[key] = round(float(value), 4)
        except ValueError:
            raise DataError(f"grid point '{text}': '{value}' is not a number") from None
    return point


def point_cases(frame: pd.DataFrame, text: str) -> pd.DataFrame:
    point = parse_point(text)
    chosen = frame[(frame[list(GRID_KEYS)] == pd.Series(point)).all(axis=1)]
    if chosen.empty:
        held = sorted({", ".join(f"{k}={v:g}" for k, v in zip(GRID_KEYS, key) if k in ("dk", "dv") or v != 1)
                       for key in frame[list(GRID_KEYS)].itertuples(index=False)})
        raise DataError(f"grid point '{text}' is not in these runs; they hold: {'; '.join(held)}")
    return chosen


def header(metric: str) -> str:
    """'LPIPS whole [x10^3]': the name, the region, the unit of the scaled values."""
    return metric_info(metric).header


def scale(metric: str) -> float:
    return metric_info(metric).scale


def region(metric: str) -> str:
    return metric_info(metric).region


def cell(group: pd.DataFrame, metric: str):
    """Scaled 'mean ± std' over the finite values, with the count of skipped ones."""
    return group_cell(group, metric, digits=2, scale=scale(metric))


def scaled_mean(group: pd.DataFrame, metric: str):
    """The scaled mean alone (category tables), with its CI and counts beside it."""
    return group_cell(group, metric, digits=2, scale=scale(metric), std=False)


def base_metric(metric: str) -> str:
    """The column without its region: ``lpips_unedit_part`` -> ``lpips``."""
    return metric.removesuffix(f"_{region(metric)}")


def main_region(metrics: list[str]) -> str | None:
    """Whole image when measured (the DCAG paper's numbers), else background, else edit;
    None without PIE-Bench fidelity metrics (then only the grid table is written)."""
    for region in ("whole", "unedit_part", "edit_part"):
        if any(m in metrics for m in (f"{b}_{region}" for b in FIDELITY)):
            return region
    return None
