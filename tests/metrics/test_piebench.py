"""The PIE-Bench metrics (metrics/piebench.py) against the official per-image formulas
(torchmetrics, one image and one metric at a time; piebench_fixture), on a fixture in the
official format: pixel metrics in every region, SSIM conventions, the fast LPIPS network,
CLIP scores, structure distance, and scoring several methods at once."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.image.lpips import _NoTrainLpips
from torchmetrics.image import PeakSignalNoiseRatio
from torchmetrics.regression import MeanSquaredError

from attnedit.data.piebench import PIEBench
from attnedit.errors import ConfigError
from attnedit.metrics.piebench import REGIONS
from attnedit.metrics.registry import build_metric
from attnedit.report.marks import title_marks
from piebench_fixture import TINY_CLIP, TINY_DINO, fixture_batch, official_mask_decode, official_scores, pil_rgb
from piebench_fixture import one_thread  # noqa: F401 (an autouse fixture: one torch thread)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """(root, {id: edited path}, the batch) of a PIE-Bench fixture: piebench_fixture.fixture_batch."""
    return fixture_batch(tmp_path_factory.mktemp("pie"))


@pytest.mark.parametrize("net", ["squeeze", "alex"])
def test_fast_lpips_equals_torchmetrics_network(net):
    """The GEMM / unconcatenated-parts forward (squeeze) and the channels-last one (alex)
    against torchmetrics' own LPIPS module, at sizes where pooling rounds up (ceil_mode)."""
    metric = build_metric("lpips_whole", net_type=net, weights="random", seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        reference_net = _NoTrainLpips(net=net, pnet_rand=True).eval()
    gen = torch.Generator().manual_seed(1)
    for shape in [(2, 3, 67, 93), (1, 3, 128, 128)]:
        a = torch.rand(shape, generator=gen)
        b = (a + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
        with torch.no_grad():
            expected = reference_net(a * 2 - 1, b * 2 - 1).flatten().double()
        torch.testing.assert_close(metric(a, b)["lpips_whole"], expected, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def official_per_image(fixture):
    """id -> {metric: value} of the official per-image loop on the fixture, every region."""
    root, edited, _ = fixture
    names = [f"{base}_{region}" for base in ("psnr", "ssim", "mse", "lpips") for region in REGIONS]
    return official_scores(root, edited, names, lpips_seed=7)


@pytest.mark.parametrize("region", list(REGIONS))
def test_pixel_metrics_equal_official_per_image_formulas(fixture, official_per_image, region):
    _, _, batch = fixture
    names = [f"{base}_{region}" for base in ("psnr", "ssim", "mse", "lpips")]
    expected = official_per_image
    for name in names:
        kwargs = {"weights": "random", "seed": 7} if name.startswith("lpips") else {}
        metric = build_metric(name, **kwargs)
        values = metric(batch["edited"], batch["reference"], mask=batch["mask"])[name]
        assert values.shape == (len(batch["ids"]),)
        for i, key in enumerate(batch["ids"]):
            want = expected[key][name]
            if want == "nan":
                assert math.isnan(values[i]), (name, key)
            else:
                assert values[i] == pytest.approx(want, abs=1e-5, rel=1e-6), (name, key)
    if region == "unedit_part":  # the all-ones mask of entry ...001 leaves no background
        assert expected["000000000001"][names[0]] == "nan"


def test_ssim_conventions_equal_their_torchmetrics(fixture):
    """Each SSIM convention against the official per-image loop run with that torchmetrics:
    "current" with the installed StructuralSimilarityIndexMeasure module, the default
    "torchmetrics_legacy_crop" with the installed library's map cropped as before 1.4.2."""
    root, edited, batch = fixture
    names = [f"ssim_{region}" for region in REGIONS]
    for convention in ("current", "torchmetrics_legacy_crop"):
        expected = official_scores(root, edited, names, ssim_convention=convention)
        for name in names:
            metric = build_metric(name, convention=convention)
            out = metric(batch["edited"], batch["reference"], mask=batch["mask"])
            assert out[f"{name}_convention"] == [convention] * len(batch["ids"])  # every row records it
            for i, key in enumerate(batch["ids"]):
                want = expected[key][name]
                if want == "nan":
                    assert math.isnan(out[name][i]), (convention, name, key)
                else:
                    assert out[name][i] == pytest.approx(want, abs=1e-5), (convention, name, key)
    assert build_metric("ssim_whole").convention == "torchmetrics_legacy_crop"  # the published numbers'
    with pytest.raises(ConfigError, match="convention 'legacy' is not one of"):
        build_metric("ssim_whole", convention="legacy")


def test_table_titles_name_the_ssim_convention_of_the_rows(fixture):
    """Runner rows take every column a metric returns: the SSIM convention reaches the rows
    and, from them, every table title (attnedit.report.marks.title_marks, also the DCAG report's)."""
    _, _, batch = fixture
    rows = {}
    for name, convention in (("ssim_whole", "current"), ("ssim_unedit_part", "torchmetrics_legacy_crop")):
        rows.update(build_metric(name, convention=convention)(batch["edited"], batch["reference"], mask=batch["mask"]))
    marks = title_marks(pd.DataFrame(rows))
    assert "[ssim_whole: SSIM map averaged whole (torchmetrics >= 1.4.2" in marks
    assert "[ssim_unedit_part: SSIM map without its 5-pixel border (torchmetrics < 1.4.2" in marks


def test_whole_batch_per_call_equals_image_by_image(fixture):
    """The GPU path (images_per_call = the batch) gives the CPU path's values."""
    _, _, batch = fixture
    for base in ("psnr", "ssim", "mse", "lpips"):
        kwargs = {"weights": "random", "seed": 7} if base == "lpips" else {}
        metric = build_metric(f"{base}_unedit_part", **kwargs)
        one = metric(batch["edited"], batch["reference"], mask=batch["mask"])[metric.name]
        metric.images_per_call = len(batch["ids"])
        whole = metric(batch["edited"], batch["reference"], mask=batch["mask"])[metric.name]
        torch.testing.assert_close(whole, one, atol=1e-6, rtol=0, equal_nan=True)


def test_region_multiplies_both_images_and_keeps_the_full_frame():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 16, 16, generator=gen), torch.rand(2, 3, 16, 16, generator=gen)
    mask = torch.zeros(2, 16, 16)
    mask[:, 4:10, 4:10] = 1
    got = build_metric("mse_unedit_part")(a, b, mask=mask)["mse_unedit_part"]
    keep = (1 - mask)[:, None]
    want = ((a * keep - b * keep) ** 2).mean(dim=(1, 2, 3)).double()  # zeros count in the mean
    torch.testing.assert_close(got, want)
    got_edit = build_metric("psnr_edit_part")(a, b, mask=mask)["psnr_edit_part"]
    want_edit = -10 * torch.log10(((a - b) ** 2 * mask[:, None]).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(got_edit, want_edit.double())


def test_psnr_mse_accurate_at_official_size():
    """Sums over 512x512x3 values, where a naive float32 accumulation would drift past 1e-5 dB."""
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(2, 3, 512, 512, generator=gen)
    b = (a + 0.05 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    psnr, mse = build_metric("psnr_whole")(a, b)["psnr_whole"], build_metric("mse_whole")(a, b)["mse_whole"]
    for i in range(2):
        want_psnr = PeakSignalNoiseRatio(data_range=1.0)(a[i : i + 1], b[i : i + 1]).item()
        assert psnr[i] == pytest.approx(want_psnr, abs=1e-5)
        assert mse[i] == pytest.approx(MeanSquaredError()(a[i], b[i]).item(), abs=1e-9)


def test_edited_of_another_size_is_resized_bicubic_antialiased(fixture):
    _, _, batch = fixture
    big = F.interpolate(batch["edited"], scale_factor=2, mode="nearest")
    metric = build_metric("ssim_whole")
    resized = F.interpolate(big, size=(64, 64), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    torch.testing.assert_close(
        metric(big, batch["reference"])["ssim_whole"], metric(resized, batch["reference"])["ssim_whole"]
    )


def _official_clip(model, processor, image_u8: np.ndarray, text: str) -> float:
    """One image and one text as torchmetrics' CLIPScore scores them (projection of pooled outputs)."""
    pixels = processor(images=torch.from_numpy(image_u8).permute(2, 0, 1), return_tensors="pt")["pixel_values"]
    tokens = processor(text=[text], return_tensors="pt", padding=True)
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        txt = model.text_projection(model.text_model(**tokens).pooler_output)
    cos = F.cosine_similarity(img, txt).item()
    return max(100 * cos, 0.0)


def test_clip_scores_equal_per_image_formula(fixture):
    root, edited, batch = fixture
    mapping = PIEBench(root).mapping
    context = {k: batch[k] for k in ("mask", "original_prompt", "editing_prompt")}
    needs = {
        "target_image": ("editing_prompt",),
        "target_image_edit_part": ("editing_prompt", "mask"),
        "source_image": ("original_prompt",),
    }
    for kind in ("target_image", "target_image_edit_part", "source_image"):
        name = f"clip_similarity_{kind}"
        metric = build_metric(name, weights="random", seed=3, config_overrides=TINY_CLIP)
        assert metric.needs == needs[kind]
        values = metric(batch["edited"], batch["reference"], **context)[name]
        for i, key in enumerate(batch["ids"]):
            if kind == "source_image":
                img = pil_rgb(root / "annotation_images" / mapping[key]["image_path"])
                text = batch["original_prompt"][i]
            else:
                img = pil_rgb(edited[key])
                text = batch["editing_prompt"][i]
            if kind == "target_image_edit_part":
                mask = official_mask_decode(mapping[key]["mask"], (64, 64))
                img = np.uint8(img * mask[:, :, None].repeat(3, axis=2))
            want = _official_clip(metric.model, metric.processor, img, text)
            assert values[i] == pytest.approx(want, abs=1e-4), (kind, key)
    empty = build_metric("clip_similarity_target_image_edit_part", weights="random", seed=3, config_overrides=TINY_CLIP)
    out = empty(batch["edited"][:1], batch["reference"][:1], mask=torch.zeros(1, 64, 64), editing_prompt=["x"])
    assert math.isnan(out["clip_similarity_target_image_edit_part"][0])


def _official_structure(model, src: torch.Tensor, tgt: torch.Tensor) -> float:
    """LossG.calculate_global_ssim_loss for one pair of 0-255 float CxHxW images."""
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize(224, max_size=480, antialias=False),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    heads = model.blocks[-1].attn.num_heads

    def self_sim(img):
        out = []
        hook = model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: out.append(o))
        x = transform(img)[None]
        with torch.no_grad():
            model(x)
        hook.remove()
        qkv = out[0]
        tokens, dim = qkv.shape[1], qkv.shape[2] // 3
        keys = qkv.reshape(tokens, 3, heads, dim // heads).permute(1, 2, 0, 3)[1]
        h, t, d = keys.shape
        flat = keys.transpose(0, 1).reshape(t, h * d)[None]
        norm = flat.norm(dim=2, keepdim=True)
        return (flat @ flat.permute(0, 2, 1)) / torch.clamp(norm @ norm.permute(0, 2, 1), min=1e-8)

    return F.mse_loss(self_sim(tgt), self_sim(src)).item()


def test_structure_distance_equals_official_formula(fixture):
    root, edited, batch = fixture
    mapping = PIEBench(root).mapping
    metric = build_metric("structure_distance", weights="random", seed=5, config_overrides=TINY_DINO)
    values = metric(batch["edited"][:3], batch["reference"][:3])["structure_distance"]
    for i, key in enumerate(batch["ids"][:3]):
        # The official script hands DINO the 8-bit values as floats in 0..255.
        src = torch.from_numpy(pil_rgb(root / "annotation_images" / mapping[key]["image_path"]).astype(np.float32))
        tgt = torch.from_numpy(pil_rgb(edited[key]).astype(np.float32))
        src, tgt = src.permute(2, 0, 1), tgt.permute(2, 0, 1)
        assert values[i] == pytest.approx(_official_structure(metric.model, src, tgt), rel=1e-4, abs=1e-7)
    assert float(metric(batch["reference"][:1], batch["reference"][:1])["structure_distance"]) == 0.0


def test_score_each_equals_one_method_at_a_time(fixture):
    """Scoring several methods against one prepared source equals scoring each alone:
    every metric whose reference part is computed once (LPIPS, SSIM, structure, CLIP)."""
    _, _, batch = fixture
    gen = torch.Generator().manual_seed(4)
    editeds = [batch["edited"], (batch["edited"] + 0.2 * torch.rand(batch["edited"].shape, generator=gen)).clamp(0, 1)]
    context = {k: batch[k] for k in ("mask", "original_prompt", "editing_prompt")}
    built = [build_metric(f"{base}_{region}") for base in ("psnr", "ssim", "mse") for region in REGIONS]
    built += [build_metric(f"lpips_{region}", weights="random", seed=7) for region in REGIONS]
    built += [build_metric("structure_distance", weights="random", seed=5, config_overrides=TINY_DINO)]
    for kind in ("target_image", "target_image_edit_part", "source_image"):
        built.append(build_metric(f"clip_similarity_{kind}", weights="random", seed=3, config_overrides=TINY_CLIP))
    for metric in built:
        needed = {k: context[k] for k in metric.needs}
        together = metric.score_each(editeds, batch["reference"], **needed)
        assert len(together) == 2
        for edited, scores in zip(editeds, together):
            alone = metric.score(edited, batch["reference"], **needed)[metric.name]
            torch.testing.assert_close(scores[metric.name], alone, atol=1e-6, rtol=0, equal_nan=True)
        first, second = (s[metric.name] for s in together)
        if metric.name == "clip_similarity_source_image":
            torch.testing.assert_close(first, second)  # the edited images play no part
        else:
            assert not torch.allclose(first, second, equal_nan=True), metric.name  # each method its own values
