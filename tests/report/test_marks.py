"""Title marks of the sampler settings (report/marks.py: sampler_marks): DDIM clipping
other than diffusers' DDIMPipeline's for the checkpoint, h-space PCA edits at another eta
than the reference's 1."""

from __future__ import annotations

import pandas as pd

from attnedit.report.marks import title_marks


def test_clip_sample_is_marked_only_where_it_is_not_the_pipelines():
    as_pipeline = pd.DataFrame({"clip_sample": [True, False], "clip_sample_pipeline": [True, False]})
    assert "clip_sample" not in title_marks(as_pipeline)
    forced = pd.DataFrame({"clip_sample": [True, False, None], "clip_sample_pipeline": [True, True, True]})
    assert ("[DDIM clip_sample=False, not diffusers' DDIMPipeline's setting for this checkpoint: model.clip_sample]"
            in title_marks(forced))
    assert "clip_sample" not in title_marks(pd.DataFrame({"clip_sample": [False]})), "nothing to compare with"


def test_hspace_pca_edit_eta_is_marked_where_it_is_not_the_references():
    assert "h-space PCA edits" not in title_marks(pd.DataFrame({"edit_eta": [1.0, None]}))
    mark = title_marks(pd.DataFrame({"edit_eta": [0.0, 1.0, None]}))
    assert "[h-space PCA edits at eta 0, not the reference's eta-1 samples with stored noise: method.edit_eta=1]" in mark
