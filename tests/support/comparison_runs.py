"""The runs of the comparison experiment (experiments/celebahq_compare) on the tiny DDPM,
shared by the comparison and editing-time table tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnedit.backends.tiny import build_tiny_ddpm
from attnedit.config import compose
from attnedit.run.runner import Runner
from harness import REPO, run_overrides

#: The columns every method's rows hold.
CORE = ("case_id", "sample_id", "method", "direction", "label", "alpha", "alpha_scale", "layers", "position",
        "source_text", "target_text", "ssim", "psnr", "seconds_per_case", "batch_size", "model_random_weights",
        "clip_sample", "clip_sample_pipeline")
#: compare=<choice> -> its method class under attnedit.methods
COMPARED = {"sad": "sad.SAD", "pullback": "pullback.Pullback", "pullback_move": "pullback_move.PullbackMove",
            "hspace_pca": "hspace_pca.HSpacePCA", "attn_input_pca": "attn_input_pca.AttnInputPCA",
            "random": "random_directions.RandomDirections"}


def run_all(root: Path) -> dict[str, Path]:
    """Each baseline as the comparison runs it (experiment=celebahq_compare compare=<name>, its
    own directions labeled in setup by a stand-in CLIP) on the tiny model; SAD by method=sad."""
    model = build_tiny_ddpm(root / "tiny32", sample_size=32)  # the tiny DDPM at a quarter of the pixels
    # pullback one case per batch: a sample's second batch must reuse its decomposition
    extra = {"pullback": ["method.rank=2", "method.min_iters=0", "method.max_iters=1", "method.guidance_steps=2",
                          "batch_size=1"],
             "pullback_move": ["method.max_iters=1", "batch_size=2"],
             "hspace_pca": ["method.num_samples=4", "batch_size=2"], "attn_input_pca": ["method.num_samples=4", "batch_size=2"]}
    labeling = ["labeling.clip._target_=fake_clip.FakeClip", "labeling.num_probes=1",
                "labeling.vocabulary=[[redder,x,red],[bluer,x,blue]]"]
    runs = {}
    for method in COMPARED:
        overrides = [o for o in run_overrides(root, model)
                     if not o.startswith(("dataset.", "model.num_", "method.alphas", "batch_size"))]
        common = [*overrides, "dataset.num_samples=2", "model.num_inference_steps=3", "method.alphas=[0.4]",
                  "save_images=false", *extra.get(method, ["batch_size=2"])]
        if method == "sad":  # compare=sad reads the labeled directions file of the recipe's step 1
            cfg = compose("config", ["method=sad", *common,
                                     f"tables.reference={REPO}/experiments/celebahq_sad/reference/sad_celebahq_table2.csv"])
        else:
            cfg = compose("config", ["experiment=celebahq_compare", f"compare={method}", *common, *labeling])
        runs[method] = Runner(cfg).run()
    return runs


_RUNS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def all_runs(request, tmp_path_factory) -> dict[str, Path]:
    """:func:`run_all`, once per session: the test modules that import this fixture share the runs."""
    if _RUNS not in request.config.stash:
        request.config.stash[_RUNS] = run_all(tmp_path_factory.mktemp("compare"))
    return request.config.stash[_RUNS]
