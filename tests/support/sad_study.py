"""A full tiny SAD study with all four paper metrics (+ LPIPS) on random backbones, read by
the study's checks (tests/studies) and its tables' (tests/report); a plugin of the root
conftest: one run per session. Direction 0: +alpha smiles; direction 1: -alpha ages the
face (the label's sign is -1)."""

from __future__ import annotations

import pytest

LABELS = ("+method.labels={0: {label: smiling, source: face, target: smiling face},"
          " 1: {label: old, source: face, target: old face, sign: -1}}")
SIGN = {0: 1, 1: -1}
TEXTS = {0: ("face", "smiling face"), 1: ("face", "old face")}


@pytest.fixture(scope="session")
def sad_study_run(tiny_ddpm_dir, tmp_path_factory):
    """The run directory: 1 sample x 2 directions x alphas -0.4, -0.2, 0.2, 0.4, with
    celebahq_sad's published Table 2 as the reference and Table 2 taken at |alpha| 0.4."""
    from attnedit.config import REPO_ROOT, compose
    from attnedit.run.runner import Runner

    root = tmp_path_factory.mktemp("study")
    cfg = compose("config", [
        "model=tiny_ddpm", f"paths.root_dir={root}", f"model.path={tiny_ddpm_dir}", "model.num_inference_steps=3",
        "metrics=sad", "metric_weights=random", "+metrics.directional_clip.model=ViT-S-32-alt",
        "+metrics.directional_clip.templates=['a photo of a {}.']", "dataset.num_samples=1", "method.directions=2",
        "method.alphas=[-0.4,-0.2,0.2,0.4]", LABELS, "batch_size=8", "progress=false", "device=cpu",
        f"tables.reference={REPO_ROOT}/experiments/celebahq_sad/reference/sad_celebahq_table2.csv", "+tables.table2_alpha=0.4",
    ])
    return Runner(cfg).run()
