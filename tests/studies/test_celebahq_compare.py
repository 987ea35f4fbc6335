"""The celebahq_compare study's configs (experiments/celebahq_compare): every compared
method in step with celebahq_sad, and each published protocol's own edit size."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from attnedit.config import compose
from comparison_runs import COMPARED
from harness import REPO


def test_celebahq_compare_composes_in_step_with_celebahq_sad():
    sad = compose("config", ["experiment=celebahq_sad"])
    directions = compose("directions", [])
    for choice, target in COMPARED.items():
        cfg = compose("config", ["experiment=celebahq_compare", f"compare={choice}"])
        assert cfg.name == "celebahq_compare" and cfg.method._target_ == f"attnedit.methods.{target}"
        # one sampler for every method (model.clip_sample too: report/comparison.py refuses mixed rows)
        for key in ("model.path", "model.num_inference_steps", "model.eta", "model.clip_sample", "dataset.num_samples",
                    "dataset.first_seed", "method.directions", "method.alphas", "batch_size", "tables.reference"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(sad, key), key
        assert list(cfg.metrics) == list(sad.metrics)
        # labels chosen on probes apart from the evaluated seeds (the runner refuses others); Table 2's null on
        probes = cfg.method.labeling if choice != "sad" else directions.labeling
        assert probes.first_seed >= cfg.dataset.first_seed + cfg.dataset.num_samples
        assert cfg.metrics.directional_clip.label_null == 5 and sad.metrics.directional_clip.label_null == 0
        if choice == "sad":
            assert cfg.method.directions_file == sad.method.directions_file
        else:
            assert "directions_file" not in cfg.method
            for key in ("num_probes", "first_seed", "alpha", "vocabulary"):
                assert cfg.method.labeling[key] == directions.labeling[key], key
    # the study's largest |alpha| is each published protocol's own edit (experiments/celebahq_compare/compare/*.yaml)
    official = OmegaConf.load(REPO / "conf" / "method" / "pullback.yaml")
    biggest = max(abs(a) for a in sad.method.alphas)
    pullback = compose("config", ["experiment=celebahq_compare", "compare=pullback"]).method
    assert biggest * pullback.guidance_edit_step == max(abs(a) for a in official.alphas) * official.guidance_edit_step == 1.0
    assert (pullback.t_edit, pullback.rank, pullback.guidance_steps, pullback.guidance_scale) == (1.0, 50, 16, 0.1)
    hspace = compose("config", ["experiment=celebahq_compare", "compare=hspace_pca"]).method
    published = OmegaConf.load(REPO / "conf" / "method" / "hspace_pca.yaml")
    assert biggest * hspace.strength == pytest.approx(max(abs(a) for a in published.alphas) * published.strength) == 0.1
