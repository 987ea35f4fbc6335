"""The shapes_factors study's recipe (experiments/shapes_factors): one run per method on
the shipped shapes DDPM, with the factor metric."""

from __future__ import annotations

from attnedit.config import compose


def test_factor_benchmark_recipe_composes_one_run_per_method():
    for choice, target in [("sad", "SAD"), ("pullback", "Pullback"), ("pullback_move", "PullbackMove"),
                           ("hspace_pca", "HSpacePCA"), ("attn_input_pca", "AttnInputPCA"), ("random", "RandomDirections")]:
        cfg = compose("config", ["experiment=shapes_factors", f"method={choice}"])
        assert cfg.method._target_.endswith("." + target) and cfg.model.name == "shapes_ddpm"
        assert list(cfg.metrics) == ["ssim", "psnr", "factors"] and cfg.method.alphas == [-0.6, -0.3, 0.0, 0.3, 0.6]
        edits_h_or_x = choice in ("pullback", "pullback_move", "hspace_pca")  # mid-block output / x_t, no attention layer
        assert cfg.method.get("layers") == (None if edits_h_or_x else ["down_blocks.1.attentions.0"])
    # other models keep the mid block by default; quickstart's pullback has no stray keys
    assert compose("config", ["model=ddpm_celebahq", "method=sad"]).method.layers == ["mid_block.attentions.0"]
    assert "layers" not in compose("config", ["method=pullback"]).method
