"""Title marks every table shares: random weights, alpha's scale, metric settings that
are not the reference's, the SSIM convention, PIE-Bench edits saved and
scored otherwise than the official scripts, bias-delta arithmetic that is not the official,
DDIM clipping and h-space PCA's edit eta (sampler_marks), the identity network and face
crop (identity_marks)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from attnedit.columns import ALPHA, METHOD, MODEL_RANDOM_WEIGHTS, RANDOM_BACKBONE
from attnedit.methods.bias_delta.params import STOCK
from attnedit.metrics.identity import identity_title
from attnedit.metrics.piebench import SSIM_CONVENTION_TEXT
from attnedit.report.scored_against import reference_marks

RANDOM_BACKBONE_MARK = "[RANDOM-BACKBONE METRICS: test-only, not comparable to published numbers]"
RANDOM_MODEL_MARK = "[RANDOM MODEL WEIGHTS: demonstrates the machinery, not the method]"
NO_EDIT_MARK = "[alpha = 0 rows (no edit) left out of the means over alphas]"
PNG_EDITS_MARK = (
    "[PIE-Bench edits scored as lossless PNG, not as the official scripts save them (JPEG, PIL quality 75): "
    "dataset.edited_format=png]"
)
SOURCE_SIZE_EDITS_MARK = (
    "[PIE-Bench edits resized to the source size before saving, not saved at the pipeline's output size and "
    "resized after decoding as the official scripts and attnedit-evaluate: dataset.saved_size=source]"
)
FUSED_ARITHMETIC_MARK = (
    "[bias-delta arithmetic: fused (float32, rounded once), not the official scripts' bfloat16 expression "
    "op by op (method.arithmetic=official): they differ by bfloat16 rounding]"
)
# A bias-delta study's unedited run (report/dcag/runs.py marks its rows "stock"): the official
# scripts have no unguided path, their (1, 1) row goes through the identity rescale too.
STOCK_UNGUIDED_MARK = (
    "[unguided point dk = dv = 1: the stock processor, not the official scripts' bfloat16 identity rescale "
    "(dcag_row=none_official): they differ by bfloat16 rounding]"
)
# Per-row metric settings (column suffix -> is this value the reference's?): any other
# value is a named deviation that every title shows.
METRIC_SETTINGS = {
    "_templates": lambda v: v.startswith("stylegan_nada("),  # metrics/clip.py: StyleGAN-NADA's templates
    "_border": lambda v: v == "crop",  # metrics/fidelity.py: SSIM over the valid windows (Wang et al.)
}


def title_marks(frame: pd.DataFrame) -> str:
    marks = []
    if RANDOM_BACKBONE in frame and frame[RANDOM_BACKBONE].astype(bool).any():
        marks.append(RANDOM_BACKBONE_MARK)
    if MODEL_RANDOM_WEIGHTS in frame and frame[MODEL_RANDOM_WEIGHTS].astype(bool).any():
        marks.append(RANDOM_MODEL_MARK)
    if ALPHA in frame and (frame[ALPHA] == 0).any() and (frame[ALPHA] != 0).any():
        marks.append(NO_EDIT_MARK)
    for suffix, is_reference in METRIC_SETTINGS.items():
        for column in (c for c in frame.columns if c.endswith(suffix)):
            other = sorted({str(v) for v in frame[column].dropna() if not is_reference(str(v))})
            if other:
                marks.append(f"[{column[: -len(suffix)]}: {suffix[1:]} {', '.join(other)}, not the reference's]")
    if "edited_format" in frame and (frame["edited_format"].dropna() == "png").any():
        marks.append(PNG_EDITS_MARK)
    if "saved_size" in frame and (frame["saved_size"].dropna() == "source").any():
        marks.append(SOURCE_SIZE_EDITS_MARK)
    if "guidance_arithmetic" in frame and (frame["guidance_arithmetic"].dropna() == "fused").any():
        marks.append(FUSED_ARITHMETIC_MARK)
    if "guidance_arithmetic" in frame and (frame["guidance_arithmetic"].dropna() == STOCK).any():
        marks.append(STOCK_UNGUIDED_MARK)
    marks += ssim_marks(frame)
    marks += reference_marks(frame)  # report/scored_against.py: pullback's own-sampler reference
    marks += identity_marks(frame)
    marks += sampler_marks(frame)
    marks += judge_marks(frame)
    return " ".join(marks)


def judge_marks(frame: pd.DataFrame) -> list[str]:
    """Who judged each VLM-judged column set, and whose prompts (attnedit.judge.metric's
    ``<prefix>_judge`` / ``<prefix>_prompts`` columns): prompts other than the benchmark's
    official file are named in capitals."""
    marks = []
    for column in sorted(c for c in frame.columns if c.endswith("_prompts")):
        prefix = column[: -len("_prompts")]
        if f"{prefix}_judge" not in frame:
            continue
        judges = sorted({str(v) for v in frame[f"{prefix}_judge"].dropna()})
        kinds = {str(v) for v in frame[column].dropna()}
        text = f"[{prefix} judged by {', '.join(judges)}"
        if "attnedit-own" in kinds:
            text += "; ATTNEDIT'S OWN PROMPTS, not the benchmark's: not comparable to published numbers"
        if "modified" in kinds:
            text += "; PROMPT FILE DIFFERS from the benchmark's official one"
        if kinds == {"official"}:
            text += "; the benchmark's official prompt file"
        marks.append(text + "]")
    return marks


def forced_clipping(frame: pd.DataFrame) -> list[bool]:
    """The ``clip_sample`` values of rows that sampled otherwise than the checkpoint's config
    (``clip_sample_pipeline``); none for rows made before the columns existed."""
    if not {"clip_sample", "clip_sample_pipeline"} <= set(frame.columns):
        return []
    rows = frame.dropna(subset=["clip_sample", "clip_sample_pipeline"])
    clipped = rows.clip_sample.astype(bool)
    return sorted(set(clipped[clipped != rows.clip_sample_pipeline.astype(bool)]))


def sampler_marks(frame: pd.DataFrame) -> list[str]:
    """DDIM clipping other than DDIMPipeline's for the checkpoint (``clip_sample`` against
    ``clip_sample_pipeline``), and h-space PCA edits at another eta than the reference's 1."""
    marks = []
    if forced := forced_clipping(frame):
        marks.append(f"[DDIM clip_sample={'/'.join(map(str, forced))}, not diffusers' DDIMPipeline's setting for "
                     "this checkpoint: model.clip_sample]")
    if "edit_eta" in frame:
        other = sorted({float(v) for v in frame.edit_eta.dropna() if float(v) != 1.0})
        if other:
            marks.append(f"[h-space PCA edits at eta {'/'.join(f'{v:g}' for v in other)}, not the reference's eta-1 "
                         "samples with stored noise: method.edit_eta=1]")
    return marks


def scale_note(frame: pd.DataFrame) -> str:
    """What alpha means in these rows: "[alpha_scale=token_norm]", per method when they differ."""
    if "alpha_scale" not in frame or frame.alpha_scale.dropna().empty:
        return ""
    scales = frame.dropna(subset=["alpha_scale"])
    if METHOD in scales and scales.alpha_scale.nunique() > 1:
        per_method = scales.groupby(METHOD, sort=False).alpha_scale.unique()
        return "[alpha_scale: " + ", ".join(f"{m}={'/'.join(map(str, v))}" for m, v in per_method.items()) + "]"
    return f"[alpha_scale={scales.alpha_scale.iloc[0]}]"


def ssim_marks(frame: pd.DataFrame) -> list[str]:
    """How PIE-Bench SSIM columns averaged their map: rows record it in ``<metric>_convention``."""
    conventions = {}
    for column in (c for c in frame.columns if c.startswith("ssim") and c.endswith("_convention")):
        for convention in frame[column].dropna().unique():
            conventions.setdefault(str(convention), []).append(column.removesuffix("_convention"))
    return [f"[{', '.join(names)}: {SSIM_CONVENTION_TEXT.get(c, c)}]" for c, names in sorted(conventions.items())]


def identity_marks(frame: pd.DataFrame) -> list[str]:
    """Which network and face crop each identity column used (``<metric>_backbone`` and
    ``<metric>_align``), always: the SAD paper names FaceNet, the pSp/e4e literature crops
    a fixed region for ArcFace, and neither is the other's reference."""
    marks = []
    for column in (c for c in frame.columns if c.endswith("_backbone")):
        metric = column.removesuffix("_backbone")
        if f"{metric}_align" not in frame:
            continue
        pairs = frame[[column, f"{metric}_align"]].dropna().drop_duplicates()
        marks += [f"[{metric}: {identity_title(str(b), str(a))}]" for b, a in sorted(pairs.itertuples(index=False))]
    return marks


def floor_title(floor: dict[str, Any] | None) -> str:
    """One short line for table titles ('' where the run has no floor)."""
    if not floor:
        return ""
    where = f"{len(floor['sample_ids'])} samples, batch {floor['batch_size']}"
    if floor.get("reference") == "own_sampler":  # run/references.py: the method's own sampler's unedited image
        where += ", against the own sampler's unedited image"
    if floor["identical"]:
        return f"[numerical floor (alpha = 0 via the edit path, {where}): identical to the unedited image]"
    psnr = "inf" if floor["psnr_min"] is None else f"{floor['psnr_min']:.1f} dB"
    return f"[numerical floor (alpha = 0 via the edit path, {where}): PSNR >= {psnr}, SSIM >= {floor['ssim_min']:.5f}]"
