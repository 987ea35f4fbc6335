"""Figures: the alpha-sweep grid of one sample (rows directions, columns alpha, the
unedited sample in the middle column), as in the SAD paper's Figure 1. Titles name the
model, the edited layer(s) and alpha's scale (figure_note); constrained layout keeps the
suptitle clear of the column titles (tests check the rendered text boxes)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt
import pandas as pd
from PIL import Image


def sweep_columns(alphas) -> list[float | None]:
    """Column order of a sweep: negative alphas ascending, the unedited sample (None), positive ascending."""
    alphas = sorted(float(a) for a in set(alphas) if a != 0)
    return [*[a for a in alphas if a < 0], None, *[a for a in alphas if a > 0]]


def _row_label(direction, label, sign) -> str:
    """"3: smiling (at -α)" when the label's change is the edit at negative alpha."""
    text = f"{direction}: {label}"
    return text + " (at -α)" if sign is not None and not pd.isna(sign) and float(sign) < 0 else text


def _draw_row(axes, columns, run_dir: Path, rows: pd.DataFrame, reference: Path, first_row: bool, ylabel: str):
    """One direction's images across alpha columns (None = the unedited reference)."""
    for ax, alpha in zip(axes, columns):
        ax.set_xticks([])
        ax.set_yticks([])
        if alpha is None:
            path = reference
        else:
            match = rows[rows.alpha == alpha]
            path = run_dir / str(match.image_path.iloc[0]) if len(match) else None
        if path is not None and path.exists():
            ax.imshow(Image.open(path))
        if first_row:
            ax.set_title("unedited" if alpha is None else f"α={alpha:+g}", fontsize=8)
    axes[0].set_ylabel(ylabel, fontsize=8)


def figure_note(frame: pd.DataFrame) -> str:
    """"model ddpm_celebahq, layer mid_block.attentions.0, alpha_scale token_norm" from rows."""
    parts = []
    for column, word in (("model", "model"), ("layers", "layer"), ("alpha_scale", "alpha_scale")):
        if column in frame and frame[column].notna().any():
            parts.append(f"{word} {'/'.join(sorted({_text(v) for v in frame[column].dropna()}))}")
    return ", ".join(parts)


def _text(value) -> str:
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return ",".join(map(str, list(value)))
    return str(value)


def _title(fig, text: str, width: float) -> None:
    """The suptitle wrapped to the figure's width (about 16 characters per inch at 8 pt)."""
    fig.suptitle("\n".join(textwrap.wrap(text, max(30, int(width * 16)))), fontsize=8)


def _grid(rows: int, columns: int, cell: float):
    """Square cells of ``cell`` inches, plus 0.6 in for the title."""
    return plt.subplots(rows, columns, figsize=(cell * columns, cell * rows + 0.6), squeeze=False, layout="constrained")


def alpha_sweep_grid(frame: pd.DataFrame, run_dir: Path, cell: float = 1.4):
    """The figure of one sample's rows (not saved): rows = directions, columns = sweep_columns."""
    sample_id = str(frame.sample_id.iloc[0])
    reference = run_dir / str(frame.reference_path.iloc[0])
    columns = sweep_columns(frame.alpha.unique())
    keys = [c for c in ("direction", "label", "label_sign") if c in frame]
    directions = list(frame[keys].drop_duplicates("direction").sort_values("direction").itertuples(index=False))
    fig, axes = _grid(len(directions), len(columns), cell)
    for r, (direction, label, *sign) in enumerate(directions):
        _draw_row(axes[r], columns, run_dir, frame[frame.direction == direction], reference,
                  first_row=r == 0, ylabel=_row_label(direction, label, sign[0] if sign else None))
    _title(fig, f"{sample_id}: alpha sweep; {figure_note(frame)}", fig.get_figwidth())
    return fig


def alpha_sweep_figure(frame: pd.DataFrame, run_dir: Path, out_dir: Path, cell: float = 1.4) -> Path | None:
    """One PNG per sample from its rows; returns its path (None if the rows hold no images)."""
    if frame.empty or "image_path" not in frame:
        return None
    fig = alpha_sweep_grid(frame, run_dir, cell)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = alpha_sweep_path(out_dir, frame.sample_id.iloc[0])
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def alpha_sweep_path(out_dir: Path, sample_id) -> Path:
    return Path(out_dir) / f"alpha_sweep_{str(sample_id).replace('/', '_')}.png"


def cross_dataset_grid(run_dirs: list[Path], directions: int = 3, cell: float = 1.2):
    """The figure (not saved): rows = (model, direction) for the top ``directions`` of
    each run, columns = sweep_columns; the first sample of each run."""
    from attnedit.store.run_store import RunStore

    rows = []
    for run_dir in map(Path, run_dirs):
        frame = RunStore(run_dir).read()
        if frame.empty or "direction" not in frame:
            continue
        model = RunStore(run_dir).read_json("manifest.json")["model"]["name"]
        first = frame[frame.sample_id == sorted(frame.sample_id.unique())[0]]
        for direction in sorted(first.direction.unique())[:directions]:
            rows.append((run_dir, model, direction, first[first.direction == direction]))
    if not rows:
        raise ValueError(f"none of {list(map(str, run_dirs))} holds direction edits")
    columns = sweep_columns({a for *_, f in rows for a in f.alpha.unique()})
    fig, axes = _grid(len(rows), len(columns), cell)
    for r, (run_dir, model, direction, frame) in enumerate(rows):
        _draw_row(axes[r], columns, run_dir, frame, run_dir / str(frame.reference_path.iloc[0]),
                  first_row=r == 0, ylabel=f"{model}\ndir {direction}")
    notes = "; ".join(dict.fromkeys(figure_note(f) for *_, f in rows))
    _title(fig, f"SAD directions across models: {notes}", fig.get_figwidth())
    return fig


def cross_dataset_figure(run_dirs: list[Path], out_path: Path, directions: int = 3, cell: float = 1.2) -> Path:
    """cross_dataset_grid saved as a PNG."""
    fig = cross_dataset_grid(run_dirs, directions, cell)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
