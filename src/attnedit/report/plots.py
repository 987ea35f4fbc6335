"""Image-grid figures: the alpha-sweep grid of one sample (rows directions, columns alpha,
the unedited sample in the middle column), as in the SAD paper's Figure 1; the gallery of
one direction (rows samples, the same columns); methods side by side at the same (sample,
direction, alpha); the same directions across models. Titles name the model, the edited
layer(s) and alpha's scale (figure_note); constrained layout keeps the suptitle clear of
the column titles (tests check the rendered text boxes)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from attnedit.columns import failed_mask

#: The white gap between the images of a mosaic, in image heights.
GAP = 0.06


def sweep_columns(alphas) -> list[float | None]:
    """Column order of a sweep: negative alphas ascending, the unedited sample (None), positive ascending."""
    alphas = sorted(float(a) for a in set(alphas) if a != 0)
    return [*[a for a in alphas if a < 0], None, *[a for a in alphas if a > 0]]


def _row_label(direction, label, sign) -> str:
    """"3: smiling (at -α)" when the label's change is the edit at negative alpha."""
    text = f"{direction}: {label}"
    return text + " (at -α)" if sign is not None and not pd.isna(sign) and float(sign) < 0 else text


def _draw_row(axes, columns, run_dir: Path, rows: pd.DataFrame, reference: Path, first_row: bool, ylabel: str,
              cell: float = 1.4):
    """One row of images across alpha columns (None = the unedited reference)."""
    for ax, alpha in zip(axes, columns):
        if alpha is None:
            path = reference
        else:
            match = rows[rows.alpha == alpha]
            path = run_dir / str(match.image_path.iloc[0]) if len(match) else None
        _image(ax, path)
        if first_row:
            ax.set_title("unedited" if alpha is None else f"α={alpha:+g}", fontsize=8)
    axes[0].set_ylabel(_fit(ylabel, cell), fontsize=8)


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


def wrapped_title(fig, text: str, width: float | None = None) -> None:
    """The suptitle wrapped to the figure's width (about 16 characters per inch at 8 pt)."""
    width = fig.get_figwidth() if width is None else width
    fig.suptitle("\n".join(textwrap.wrap(text, max(30, int(width * 16)))), fontsize=8)


def _fit(text: str, inches: float) -> str:
    """A row label wrapped to the cell's height (8 pt: 13 characters per inch leaves room for
    wide ones), its own line breaks kept, two lines at most."""
    lines = [line for part in text.splitlines() for line in textwrap.wrap(part, max(8, int(inches * 13)))]
    return "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")


def _grid(rows: int, columns: int, cell: float):
    """Square cells of ``cell`` inches, plus 0.6 in for the title."""
    return plt.subplots(rows, columns, figsize=(cell * columns, cell * rows + 0.6), squeeze=False, layout="constrained")


def _image(ax, path: Path | None) -> None:
    """The PNG at ``path`` in a bare cell; "no image" where there is none (a failed case)."""
    ax.set_xticks([])
    ax.set_yticks([])
    if path is not None and path.exists():
        with Image.open(path) as image:
            ax.imshow(image.convert("RGB"))
    else:
        ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=6, transform=ax.transAxes)
        ax.set_box_aspect(1)


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
    wrapped_title(fig, f"{sample_id}: alpha sweep; {figure_note(frame)}", fig.get_figwidth())
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
    wrapped_title(fig, f"SAD directions across models: {notes}", fig.get_figwidth())
    return fig


def cross_dataset_figure(run_dirs: list[Path], out_path: Path, directions: int = 3, cell: float = 1.2) -> Path:
    """cross_dataset_grid saved as a PNG."""
    fig = cross_dataset_grid(run_dirs, directions, cell)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def _read(path: Path | None, size: tuple[int, int] | None) -> np.ndarray | None:
    """The PNG as float RGB in [0, 1], resized to ``size`` (width, height) if it differs; None if absent."""
    if path is None or not path.exists():
        return None
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None and image.size != size:
            image = image.resize(size)
        return np.asarray(image, dtype=np.float32) / 255.0


def mosaic(paths: list[list[Path | None]], gap: float = GAP) -> tuple[np.ndarray, int, int, int] | None:
    """(one RGB array of the images in rows x columns with white gaps of ``gap`` x the image
    height, cell height, cell width, gap in pixels); missing images stay light grey; None
    when no image exists."""
    first = next((image for row in paths for p in row if (image := _read(p, None)) is not None), None)
    if first is None:
        return None
    h, w = first.shape[:2]
    pad = max(1, round(gap * h))
    out = np.ones((len(paths) * (h + pad) - pad, len(paths[0]) * (w + pad) - pad, 3), dtype=np.float32)
    for r, row in enumerate(paths):
        for c, path in enumerate(row):
            image = _read(path, (w, h))
            out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = 0.9 if image is None else image
    return out, h, w, pad


def direction_gallery(frame: pd.DataFrame, run_dir: Path, direction, max_samples: int = 8, cell: float = 1.0,
                      note: str = ""):
    """The figure (not saved) or None (no image) of one direction: rows = the first
    ``max_samples`` samples, columns = sweep_columns; ``note`` ends the title (e.g. how many
    directions have one).
    One mosaic image in one Axes (an Axes per cell costs ~10x the time), rows and columns
    named by its tick labels."""
    rows = frame[(frame.direction == direction) & ~failed_mask(frame)]
    if rows.empty:
        return None
    samples = sorted(rows.sample_id.astype(str).unique())[:max_samples]
    columns = sweep_columns(rows.alpha.unique())
    paths = []
    for sample in samples:
        mine = rows[rows.sample_id.astype(str) == sample]
        row = []
        for alpha in columns:
            match = mine if alpha is None else mine[np.isclose(mine.alpha.astype(float), alpha, rtol=0, atol=1e-9)]
            column = "reference_path" if alpha is None else "image_path"
            row.append(run_dir / str(match[column].iloc[0]) if len(match) else None)
        paths.append(row)
    drawn = mosaic(paths)
    if drawn is None:  # images not saved, or moved
        return None
    image, h, w, pad = drawn
    fig, ax = plt.subplots(figsize=(cell * len(columns) + 0.9, cell * len(samples) + 0.9), layout="constrained")
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([c * (w + pad) + w / 2 for c in range(len(columns))],
                  ["unedited" if a is None else f"α={a:+g}" for a in columns], fontsize=7)
    ax.set_yticks([r * (h + pad) + h / 2 for r in range(len(samples))], samples, fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    first = rows.iloc[0]
    name = _row_label(direction, first.get("label", ""), first.get("label_sign"))
    total = rows.sample_id.nunique()
    count = f"the first {len(samples)} of {total} samples" if total > len(samples) else f"{len(samples)} samples"
    wrapped_title(fig, "; ".join(filter(None, [f"direction {name}: samples x alpha ({count})", note,
                                               figure_note(rows)])))
    return fig


def common_cases(runs: list[tuple[Path, pd.DataFrame]], count: int = 6) -> list[tuple[str, int, float]]:
    """``count`` (sample, direction, alpha) keys every run (run dir, rows) holds an edited
    image file for, at the strongest |alpha| they share, evenly spread over the keys in
    sorted order (the same runs give the same picks)."""
    common = None
    for run_dir, frame in runs:
        if not {"sample_id", "direction", "alpha", "image_path"} <= set(frame.columns):
            return []
        edits = frame[~failed_mask(frame) & (frame.alpha != 0) & frame.image_path.notna()]
        edits = edits[[(run_dir / str(p)).is_file() for p in edits.image_path]]  # save_images=false: rows, no files
        keys = set(zip(edits.sample_id.astype(str), edits.direction.astype(int), edits.alpha.astype(float).round(9)))
        common = keys if common is None else common & keys
    if not common:
        return []
    strongest = max(abs(a) for *_, a in common)
    keys = sorted(k for k in common if abs(k[2]) == strongest)
    index = np.unique(np.linspace(0, len(keys) - 1, min(count, len(keys))).round().astype(int))
    return [keys[i] for i in index]


def side_by_side(runs: list[tuple[str, Path, pd.DataFrame]], count: int = 6, cell: float = 1.3):
    """The figure (not saved) or None: rows = the unedited sample (the first run's) then one
    per run (label, run dir, rows), columns = common_cases; under each edit, the label of
    that method's direction."""
    picks = common_cases([(run_dir, frame) for _, run_dir, frame in runs], count)
    if not picks:
        return None
    fig, axes = _grid(len(runs) + 1, len(picks), cell)
    for c, (sample, direction, alpha) in enumerate(picks):
        axes[0][c].set_title(f"{sample}\ndir {direction}, α={alpha:+g}", fontsize=7)
        for r, (label, run_dir, frame) in enumerate(runs, start=1):
            match = frame[(frame.sample_id.astype(str) == sample) & (frame.direction == direction)
                          & np.isclose(frame.alpha.astype(float), alpha, rtol=0, atol=1e-9) & ~failed_mask(frame)]
            if r == 1:
                _image(axes[0][c], run_dir / str(match.reference_path.iloc[0]))
            _image(axes[r][c], run_dir / str(match.image_path.iloc[0]))
            if "label" in match and pd.notna(match.label.iloc[0]):
                axes[r][c].set_xlabel(textwrap.shorten(str(match.label.iloc[0]), int(cell * 18), placeholder="…"),
                                      fontsize=6)
    axes[0][0].set_ylabel("unedited", fontsize=8)
    for r, (label, *_) in enumerate(runs, start=1):
        axes[r][0].set_ylabel(_fit(label, cell), fontsize=8)
    note = figure_note(pd.concat([frame for *_, frame in runs], ignore_index=True))
    wrapped_title(fig, f"Methods side by side at the same (sample, direction, α), the strongest |α| all runs share; "
                       f"direction k is each method's own k-th direction (its label under the image); unedited: "
                       f"the first run's; {note}")
    return fig
