"""PIE-Bench metrics against the official per-image formulas (torchmetrics, one image and
one metric at a time), on a fixture in the official format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure

from attnedit.data.piebench import PIEBench
from attnedit.errors import ConfigError, WeightsNotFoundError
from attnedit.metrics.piebench import REGIONS
from attnedit.metrics.piebench_backbones import openai_clip_tokenizer
from attnedit.metrics.registry import build_metric
from attnedit.metrics.ssim_fast import ssim, ssim_against, ssim_reference
from piebench_fixture import (
    fixture_samples,
    official_mask_decode,
    official_scores,
    one_thread,  # noqa: F401 (an autouse fixture: one torch thread)
    )

TINY_CLIP = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "projection_dim": 16,
}
TINY_DINO = {"depth": 2, "embed_dim": 48, "num_heads": 3}


def pil_rgb(path) -> np.ndarray:
    """An image file as uint8 HxWx3, read with PIL as the official script does."""
    return np.array(Image.open(path).convert("RGB"))


def as_float(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root, edited, samples = fixture_samples(tmp_path_factory.mktemp("pie"))
    batch = {
        "ids": [s.id for s in samples],
        "reference": torch.stack([s.image for s in samples]),
        "edited": torch.stack([as_float(pil_rgb(edited[s.id])) for s in samples]),
        "mask": torch.stack([s.fields["mask"] for s in samples]),
        "original_prompt": [s.fields["original_prompt"] for s in samples],
        "editing_prompt": [s.fields["editing_prompt"] for s in samples],
    }
    return root, edited, batch


def test_fast_ssim_equals_torchmetrics():
    gen = torch.Generator().manual_seed(0)
    for shape in [(3, 3, 64, 64), (2, 3, 37, 53), (1, 1, 16, 70)]:
        a = torch.rand(shape, generator=gen)
        b = (a + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1)
        b[..., : shape[2] // 2, :] *= 0  # zeroed areas, as masked images have
        a[..., : shape[2] // 2, :] *= 0
        expected = torch.stack(
            [structural_similarity_index_measure(a[i : i + 1], b[i : i + 1], data_range=1.0) for i in range(len(a))]
        )
        torch.testing.assert_close(ssim(a, b, chunk=2), expected, atol=1e-5, rtol=0)
    same = torch.rand(1, 3, 20, 20, generator=gen)
    assert abs(float(ssim(same, same)) - 1) < 1e-6


def test_fast_ssim_legacy_crop_equals_torchmetrics_map_cropped():
    """crop=5 against the installed torchmetrics' own per-pixel SSIM map with the 5-pixel
    border cut off as torchmetrics < 1.4.2 did; in strips whose edges fall inside the crop."""
    from torchmetrics.functional.image.ssim import _ssim_update

    gen = torch.Generator().manual_seed(5)
    for shape, rows in [((2, 3, 64, 64), 256), ((2, 3, 37, 53), 4), ((1, 1, 16, 70), 3)]:
        a = torch.rand(shape, generator=gen)
        b = (a + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1)
        a[..., : shape[2] // 2, :] *= 0  # zeroed areas, as masked images have
        b[..., : shape[2] // 2, :] *= 0
        _, full = _ssim_update(a, b, data_range=1.0, return_full_image=True)
        expected = full[..., 5:-5, 5:-5].flatten(1).mean(-1)
        got = ssim_against(a, ssim_reference(b), rows=rows, crop=5)
        torch.testing.assert_close(got.float(), expected, atol=1e-5, rtol=0)
        assert (got - ssim(a, b)).abs().max() > 1e-4  # the border matters: the conventions differ
    with pytest.raises(ValueError, match="5-pixel border crop leaves nothing of a 10x40 image"):
        ssim(torch.rand(1, 1, 10, 40), torch.rand(1, 1, 10, 40), crop=5)


@pytest.mark.parametrize("net", ["squeeze", "alex"])
def test_fast_lpips_equals_torchmetrics_network(net):
    """The GEMM / unconcatenated-parts forward (squeeze) and the channels-last one (alex)
    against torchmetrics' own LPIPS module, at sizes where pooling rounds up (ceil_mode)."""
    from torchmetrics.functional.image.lpips import _NoTrainLpips

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
def official(fixture):
    root, edited, _ = fixture
    names = [f"{base}_{region}" for base in ("psnr", "ssim", "mse", "lpips") for region in REGIONS]
    return official_scores(root, edited, names, lpips_seed=7)


@pytest.mark.parametrize("region", list(REGIONS))
def test_pixel_metrics_equal_official_per_image_formulas(fixture, official, region):
    _, _, batch = fixture
    names = [f"{base}_{region}" for base in ("psnr", "ssim", "mse", "lpips")]
    expected = official
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
    and, from them, every table title (attnedit.tables.title_marks, also the DCAG report's)."""
    import pandas as pd

    from attnedit.report.marks import title_marks

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
    from torchmetrics.image import PeakSignalNoiseRatio
    from torchmetrics.regression import MeanSquaredError

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


def test_learned_backbone_weights_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache
    with pytest.raises(WeightsNotFoundError, match="squeezenet1_1-b8a52dc0.pth.*checkpoints"):
        build_metric("lpips_whole", seed=123)
    with pytest.raises(ConfigError, match="only apply to weights=random"):
        build_metric("structure_distance", config_overrides=TINY_DINO)
    a = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seeded = [build_metric("lpips_whole", weights="random", seed=s) for s in (1, 1, 2)]
    assert seeded[0].weights == "random(seed=1)" and seeded[0].uses_random_weights
    values = [float(m(a, a.flip(-1))["lpips_whole"]) for m in seeded]
    assert values[0] == values[1] != values[2]


def test_clip_tokenizer_is_openai_bpe():
    import open_clip

    ours = openai_clip_tokenizer()
    reference = open_clip.get_tokenizer("ViT-L-14")
    for text in ["a dog sitting on a mat", "Photo of a red, shiny bicycle!"]:
        ids = ours(text)["input_ids"]
        assert ids == reference([text])[0][: len(ids)].tolist()


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
