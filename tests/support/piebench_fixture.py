"""A tiny PIE-Bench in the official format, and the official per-image formulas written
independently of attnedit (the reference the tests and the benchmark compare with).

The fixture's images are small (64x64 by default) so tests stay fast; its masks are run
-length encoded over that size, and the dataset decodes each mask at its image's size.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors on a shared CPU: OpenMP's thread barriers cost more than two threads gain."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# id -> (category, path under annotation_images/, mask kind)
ENTRIES = {
    "000000000000": ("0", "0_random_140/000000000000.jpg", "box"),
    "000000000001": ("0", "0_random_140/000000000001.jpg", "full"),  # mask covers all: background is empty
    "111000000000": ("1", "1_change_object_80/1_artificial/111000000000.jpg", "ellipse"),
    "111000000001": ("1", "1_change_object_80/1_artificial/111000000001.jpg", "box"),
    "211000000000": ("2", "2_add_object_80/1_artificial/211000000000.jpg", "ellipse"),
    "811000000000": ("8", "8_change_background_80/1_artificial/811000000000.jpg", "box"),
    "911000000000": ("9", "9_change_style_80/1_artificial/911000000000.jpg", "ellipse"),
}


#: Tiny configs of the learned PIE-Bench metrics' backbones (weights=random only).
TINY_CLIP = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "projection_dim": 16,
}
TINY_DINO = {"depth": 2, "embed_dim": 48, "num_heads": 3}


def encode_rle(mask: np.ndarray) -> list[int]:
    """Row-major run-length encoding [start, length, ...] of the ones of a 2-D mask."""
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo-like uint8 HxWx3 image: smooth colour fields plus fine noise."""
    coarse = rng.random((3, 6, 6))
    up = np.stack([np.kron(c, np.ones((size // 6 + 1, size // 6 + 1)))[:size, :size] for c in coarse], -1)
    img = 0.8 * up + 0.2 * rng.random((size, size, 3))
    return (img * 255).round().astype(np.uint8)


def make_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    if kind == "full":
        return np.ones((size, size), bool)
    if kind == "box":
        y0, x0 = rng.integers(size // 8, size // 2, 2)
        return (yy >= y0) & (yy < y0 + size // 3) & (xx >= x0) & (xx < x0 + size // 3)
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    return ((yy - cy) / (size / 4)) ** 2 + ((xx - cx) / (size / 5)) ** 2 <= 1


def write_piebench_fixture(root: Path, size: int = 64, seed: int = 0, entries: dict | None = None) -> dict:
    """Write ``root/mapping_file.json`` and ``root/annotation_images/...``; return the mapping."""
    rng = np.random.default_rng(seed)
    mapping = {}
    for key, (category, rel, kind) in (entries or ENTRIES).items():
        path = root / "annotation_images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, size)).save(path, quality=95)
        mapping[key] = {
            "image_path": rel,
            "original_prompt": f"a [cat] sitting on a mat number {key[-2:]}",
            "editing_prompt": f"a [dog] sitting on a mat number {key[-2:]}",
            "editing_instruction": "Change the cat to a dog",
            "editing_type_id": category,
            "blended_word": "cat dog",
            "mask": encode_rle(make_mask(kind, size, rng)),
        }
    root.mkdir(parents=True, exist_ok=True)
    (root / "mapping_file.json").write_text(json.dumps(mapping, indent=1))
    return mapping


def write_edited(
    root: Path,
    edited: Path,
    seed: int = 1,
    png: tuple[str, ...] = (),
    double: tuple[str, ...] = (),
    side_by_side: tuple[str, ...] = (),
) -> dict:
    """Edited images mirroring annotation_images/: the source plus changes and noise.

    Ids in ``png`` are saved as .png instead of .jpg (the evaluator accepts either);
    ids in ``double`` are saved at twice the size (the evaluator resizes them); ids in
    ``side_by_side`` as source | edit in one image, as PnPInversion saves its outputs
    (the official script crops the bottom-right corner). Returns id -> edited file path.
    """
    rng = np.random.default_rng(seed)
    mapping = json.loads((root / "mapping_file.json").read_text())
    paths = {}
    for key, item in mapping.items():
        src = np.asarray(Image.open(root / "annotation_images" / item["image_path"]).convert("RGB")).astype(float)
        noise = rng.normal(0, 12, src.shape)
        noise[src.shape[0] // 3 : src.shape[0] // 2] += 60  # a band of strong change
        out = np.clip(src + noise, 0, 255).round().astype(np.uint8)
        img = Image.fromarray(out)
        if key in double:
            img = img.resize((src.shape[1] * 2, src.shape[0] * 2), Image.BICUBIC)
        if key in side_by_side:
            img = Image.fromarray(np.concatenate([src.astype(np.uint8), out], axis=1))
        path = edited / item["image_path"]
        if key in png:
            path = path.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=95)
        paths[key] = path
    return paths


# The official formulas ------------------------------------------------------------------
def fixture_samples(base: Path, size: int = 64) -> tuple[Path, dict, list]:
    """A PIE-Bench fixture under ``base/PIE-Bench`` with an edited image per entry in
    ``base/edited``: (root, {id: edited path}, the samples as PIEBench.load gives them)."""
    from attnedit.data.piebench import PIEBench

    root = base / "PIE-Bench"
    write_piebench_fixture(root, size=size)
    edited = write_edited(root, base / "edited")
    data = PIEBench(root)
    return root, edited, [data.load(i) for i in data.sample_ids()]


def pil_rgb(path) -> np.ndarray:
    """An image file as uint8 HxWx3, read with PIL as the official script does."""
    return np.array(Image.open(path).convert("RGB"))


def fixture_batch(base: Path, size: int = 64) -> tuple[Path, dict, dict]:
    """:func:`fixture_samples` as one batch: (root, {id: edited path}, {"ids", "reference",
    "edited", "mask", "original_prompt", "editing_prompt"}), images as [0, 1] float NCHW."""
    import torch

    root, edited, samples = fixture_samples(base, size)
    batch = {
        "ids": [s.id for s in samples],
        "reference": torch.stack([s.image for s in samples]),
        "edited": torch.stack([torch.from_numpy(pil_rgb(edited[s.id])).permute(2, 0, 1).float() / 255
                               for s in samples]),
        "mask": torch.stack([s.fields["mask"] for s in samples]),
        "original_prompt": [s.fields["original_prompt"] for s in samples],
        "editing_prompt": [s.fields["editing_prompt"] for s in samples],
    }
    return root, edited, batch


def official_mask_decode(encoded, shape=(512, 512)) -> np.ndarray:
    """PnPInversion's mask_decode: a pixel loop over every run, then the border set to 1."""
    length = shape[0] * shape[1]
    mask = np.zeros((length,))
    for i in range(0, len(encoded), 2):
        run = min(encoded[i + 1], length - encoded[i])
        for j in range(run):
            mask[encoded[i] + j] = 1
    mask = mask.reshape(shape[0], shape[1])
    mask[0, :] = mask[-1, :] = 1
    mask[:, 0] = mask[:, -1] = 1
    return mask


def random_lpips_metric(seed: int):
    """torchmetrics' LPIPS metric (squeeze) with a backbone drawn under torch.manual_seed(seed)."""
    import torch
    from torchmetrics.functional.image.lpips import _NoTrainLpips
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with mock.patch("torchmetrics.image.lpip._NoTrainLpips", functools.partial(_NoTrainLpips, pnet_rand=True)):
            return LearnedPerceptualImagePatchSimilarity(net_type="squeeze")


def legacy_ssim(pred, gt):
    """SSIM as torchmetrics computed it before 1.4.2 (the published PIE-Bench numbers):
    the installed torchmetrics' own per-pixel SSIM map, its 5-pixel border cropped as the
    old code did (Lightning-AI/torchmetrics src/torchmetrics/functional/image/ssim.py,
    line 170 at efdb111d9^, removed by PR 2721), then the mean per image."""
    from torchmetrics.functional.image.ssim import _ssim_update

    _, full = _ssim_update(pred, gt, data_range=1.0, return_full_image=True)
    return full[..., 5:-5, 5:-5].flatten(1).mean(-1).mean()


class OfficialCalculator:
    """The official MetricsCalculator's pixel metrics: one image, one metric, one torchmetrics call.

    ``ssim_convention``: "torchmetrics_legacy_crop" (the torchmetrics of the published
    numbers, :func:`legacy_ssim`) or "current" (the installed torchmetrics' module).
    ``device``: where the modules and each image's tensors go, as MetricsCalculator(device)."""

    def __init__(self, lpips_seed: int = 0, ssim_convention: str = "torchmetrics_legacy_crop", device="cpu") -> None:
        from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
        from torchmetrics.regression import MeanSquaredError

        self.device = device
        self.psnr = PeakSignalNoiseRatio(data_range=1.0).to(device)
        current = StructuralSimilarityIndexMeasure(data_range=1.0).to(device)
        self.ssim = {"current": current, "torchmetrics_legacy_crop": legacy_ssim}[ssim_convention]
        self.mse = MeanSquaredError().to(device)
        self.lpips = random_lpips_metric(lpips_seed).to(device)

    @staticmethod
    def _prepare(img_pred, img_gt, mask_pred, mask_gt):
        import torch

        pred = np.array(img_pred).astype(np.float32) / 255
        gt = np.array(img_gt).astype(np.float32) / 255
        assert pred.shape == gt.shape
        if mask_pred is not None:
            pred = pred * np.array(mask_pred).astype(np.float32)
        if mask_gt is not None:
            gt = gt * np.array(mask_gt).astype(np.float32)
        return torch.tensor(pred).permute(2, 0, 1), torch.tensor(gt).permute(2, 0, 1)

    def calculate(self, base: str, src, tgt, mask_src, mask_tgt) -> float:
        pred, gt = (t.to(self.device) for t in self._prepare(src, tgt, mask_src, mask_tgt))
        if base == "mse":
            return self.mse(pred.contiguous(), gt.contiguous()).item()
        pred, gt = pred[None], gt[None]
        if base == "lpips":
            return self.lpips(pred * 2 - 1, gt * 2 - 1).item()
        return getattr(self, base)(pred, gt).item()

    def metric(self, name: str, src, tgt, mask) -> float | str:
        """The official calculate_metric for <base>, <base>_unedit_part and <base>_edit_part."""
        base, _, region = name.partition("_")
        if region == "unedit_part":  # the official script tests the source and the target mask
            if (1 - mask).sum() == 0 or (1 - mask).sum() == 0:
                return "nan"
            return self.calculate(base, src, tgt, 1 - mask, 1 - mask)
        if region == "edit_part":
            if mask.sum() == 0 or mask.sum() == 0:
                return "nan"
            return self.calculate(base, src, tgt, mask, mask)
        return self.calculate(base, src, tgt, None, None)


def official_scores(
    root: Path, edited: dict, metrics: list[str], lpips_seed: int = 0, ssim_convention: str = "torchmetrics_legacy_crop"
) -> dict:
    """id -> {metric: value or "nan"} with the official per-image loop (PIL images, loop decoder)."""
    calc = OfficialCalculator(lpips_seed, ssim_convention)
    mapping = json.loads((root / "mapping_file.json").read_text())
    results = {}
    for key, item in mapping.items():
        src = Image.open(root / "annotation_images" / item["image_path"])
        tgt = Image.open(edited[key])
        if tgt.size[0] != tgt.size[1]:  # evaluate.py lines 271-273: source | edit side by side (512 there)
            w, h = src.size
            tgt = tgt.crop((tgt.size[0] - w, tgt.size[1] - h, tgt.size[0], tgt.size[1]))
        mask = official_mask_decode(item["mask"], (src.size[1], src.size[0]))
        mask = mask[:, :, np.newaxis].repeat([3], axis=2)
        names = {m: m.replace("_whole", "") for m in metrics}  # the official whole-image names
        results[key] = {m: calc.metric(names[m], src, tgt, mask) for m in metrics}
    return results
