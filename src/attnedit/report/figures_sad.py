"""Which figures the SAD reports hold, and their files (render.Figure, saved by
render.write_report with the tables).

One run (``<run dir>/figures/``):
- ``metric_vs_alpha.png``: each metric against alpha, a line and 95% CI band per direction;
- ``metric_vs_alpha_by_direction.png``: the same, a row of panels per direction (small
  multiples, the first GALLERY_DIRECTIONS directions);
- ``fidelity_vs_strength.png``: fidelity against the edit strength the run measured;
- ``gallery_direction_<d>.png``: per direction, samples x alpha (the first GALLERY_SAMPLES
  samples, the first GALLERY_DIRECTIONS directions).
Several runs (the comparison's folder): ``comparison_metric_vs_alpha.png`` (a line per
method, its directions pooled, as comparison_by_alpha), ``comparison_metric_vs_alpha_by_direction.png``
(a row per direction, a line per method), ``comparison_fidelity_vs_strength.png`` and
``comparison_side_by_side.png`` (the methods' edits at the same sample, direction, alpha).
Images come from the runs' ``images/``; runs with ``figures: false`` get none of these.
"""

from __future__ import annotations

import textwrap

import pandas as pd

from attnedit.columns import ALPHA, DIRECTION, METHOD, MODEL_RANDOM_WEIGHTS, RANDOM_BACKBONE
from attnedit.report.marks import RANDOM_BACKBONE_MARK, RANDOM_MODEL_MARK
from attnedit.report.plots import direction_gallery, figure_note, side_by_side
from attnedit.report.plots_alpha import alpha_means, curves, small_multiples
from attnedit.report.plots_strength import fidelity_vs_strength
from attnedit.report.render import Figure
from attnedit.report.runs import Run

GALLERY_SAMPLES = 8
GALLERY_DIRECTIONS = 15
SAVE = {"dpi": 100}


def weight_marks(frame: pd.DataFrame) -> str:
    """The tables' marks for numbers from random weights (metric backbones, the model)."""
    pairs = ((RANDOM_BACKBONE, RANDOM_BACKBONE_MARK), (MODEL_RANDOM_WEIGHTS, RANDOM_MODEL_MARK))
    marks = [mark for column, mark in pairs if column in frame and frame[column].astype(bool).any()]
    return " ".join(marks)


def _title(name: str, what: str, frame: pd.DataFrame) -> str:
    return " ".join(filter(None, [f"{name} — {what};", figure_note(frame), weight_marks(frame)]))


def direction_names(frame: pd.DataFrame) -> pd.Series:
    """"0: smiling", the alpha-sweep grid's row label ("(at -α)" where the label's change is the negative edit)."""
    label = frame["label"].astype(str) if "label" in frame else pd.Series("", index=frame.index)
    flipped = frame["label_sign"].astype(float).lt(0) if "label_sign" in frame else pd.Series(False, index=frame.index)
    text = frame[DIRECTION].astype(str) + ": " + label
    return text.where(~flipped, text + " (at -α)")


def figure_labels(labels: list[str], width: int = 30, lines: int = 2) -> list[str]:
    """Run labels as legends show them: wrapped to ``width`` characters, ``lines`` lines at
    most ("…" where cut: runs told apart by many config keys have labels of hundreds of
    characters); numbered when the cut makes two the same."""
    out = []
    for label in labels:
        wrapped = textwrap.wrap(label, width) or [""]
        out.append("\n".join(wrapped[:lines]) + ("…" if len(wrapped) > lines else ""))
    return out if len(set(out)) == len(out) else [f"{i}: {text}" for i, text in enumerate(out, start=1)]


def _figures(pairs) -> list[Figure]:
    return [Figure(path, fig, SAVE) for path, fig in pairs if fig is not None]


def run_figures(run: Run) -> list[Figure]:
    """The curves, the fidelity-vs-strength plot and the galleries of one run."""
    frame = run.frame
    if not run.config.get("figures", True) or frame.empty or ALPHA not in frame or DIRECTION not in frame:
        return []
    name = str(run.config.get("name", run.run_dir.name))
    frame = frame.assign(series=direction_names(frame))
    means = alpha_means(frame, run.metrics, [DIRECTION, "series"])  # numeric direction order
    pairs = [("figures/metric_vs_alpha.png",
              curves(means, run.metrics, "series", _title(name, "each metric against α, a line per direction", frame),
                     "direction"))]
    pairs.append(("figures/metric_vs_alpha_by_direction.png",
                  small_multiples(means, run.metrics, "series", "series",
                                  _title(name, "each metric against α per direction", frame), "direction",
                                  GALLERY_DIRECTIONS)))
    pairs.append(("figures/fidelity_vs_strength.png",
                  fidelity_vs_strength(frame, run.metrics, "series", _title(name, "fidelity vs edit strength", frame),
                                       "direction")))
    if run.config.get("save_images", True) and "image_path" in frame:
        directions = sorted(frame[DIRECTION].unique())
        capped = (f"galleries for the first {GALLERY_DIRECTIONS} of {len(directions)} directions"
                  if len(directions) > GALLERY_DIRECTIONS else "")
        pairs += [(f"figures/gallery_direction_{d}.png",
                   direction_gallery(frame, run.run_dir, d, GALLERY_SAMPLES, note=capped))
                  for d in directions[:GALLERY_DIRECTIONS]]
    return _figures(pairs)


def comparison_figures(runs: list[Run], labels: list[str], name: str) -> list[Figure]:
    """The curves per method, fidelity vs strength per method, and the methods side by side."""
    runs_labels = [(label, run) for label, run in zip(figure_labels(labels), runs)
                   if run.config.get("figures", True) and ALPHA in run.frame and not run.frame.empty]
    if not runs_labels:
        return []
    frame = pd.concat([run.frame.assign(**{METHOD: label}) for label, run in runs_labels], ignore_index=True)
    # the runs' order (SAD first where it leads), not the labels' alphabetical one
    frame[METHOD] = pd.Categorical(frame[METHOD], categories=[label for label, _ in runs_labels], ordered=True)
    metrics = list(dict.fromkeys(m for _, run in runs_labels for m in run.metrics))
    pooled = alpha_means(frame, metrics, [METHOD])
    pairs = [("comparison_metric_vs_alpha.png",
              curves(pooled, metrics, METHOD,
                     _title(name, "each metric against α, a line per method (its directions pooled)", frame),
                     "method"))]
    if DIRECTION in frame:
        per_direction = alpha_means(frame, metrics, [METHOD, DIRECTION])
        per_direction[DIRECTION] = "direction " + per_direction[DIRECTION].astype(str)  # panel titles
        pairs.append(("comparison_metric_vs_alpha_by_direction.png",
                      small_multiples(per_direction, metrics, DIRECTION, METHOD,
                                      _title(name, "each metric against α; direction k is each method's own k-th",
                                             frame), "method", GALLERY_DIRECTIONS)))
    pairs.append(("comparison_fidelity_vs_strength.png",
                  fidelity_vs_strength(frame, metrics, METHOD, _title(name, "fidelity vs edit strength", frame),
                                       "method")))
    pairs.append(("comparison_side_by_side.png",
                  side_by_side([(label, run.run_dir, run.frame) for label, run in runs_labels])))
    return _figures(pairs)
