"""The SAD study's recipe (celebahq_sad) on the tiny DDPM: metrics=sad gives every paper
metric (+ LPIPS) on random backbones, the rows carry the marks, and the Directional CLIP
texts follow each edit's sign against its label's."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sad_study import SIGN, TEXTS


def test_rows_hold_every_metric_the_marks_and_texts_ordered_by_sign(sad_study_run):
    frame = pd.read_parquet(sad_study_run / "cases")
    assert len(frame) == 8
    for column in ("ssim", "psnr", "id_sim", "id_face_fallback", "directional_clip", "lpips"):
        assert column in frame and frame[column].notna().all(), column
    assert frame.random_backbone.all()
    assert frame.id_face_fallback.all(), "random-noise samples hold no face: the fallback crop is recorded"
    assert (frame.id_sim_backbone == "facenet").all() and (frame.id_sim_align == "mtcnn(margin=0)").all()
    for row in frame.itertuples():  # the labeled change where sign(alpha) is the label's, its reverse elsewhere
        source, target = TEXTS[row.direction]
        expected = (source, target) if np.sign(row.alpha) == SIGN[row.direction] else (target, source)
        assert (row.source_text, row.target_text) == expected, row
        assert row.label_sign == SIGN[row.direction]
    assert (frame.directional_clip_templates == "custom(1)").all()
    assert (frame.window_bounds == "strict").all() and (frame.sad_matrix == "sum_qkv W^T W").all()
