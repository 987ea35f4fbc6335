"""What the order of saving and resizing a PIE-Bench edit changes in its background scores
(``dataset.saved_size``, attnedit.run.saved_edits).

Sources: the five photographs bundled with scikit-image (or ``--images`` files), center-cropped
square and resized to PIE-Bench's 512 x 512 (PIL bicubic), as 8-bit images. The
pipeline's output stands in as the source upsampled to Qwen-Image-Edit's 1024 x 1024
(bicubic, antialiased), so the background differs from the source by the saving alone
(``--noise``: plus Gaussian noise of that standard deviation drawn at 512 and upsampled
with the image, a stand-in for the model's own background error: 0.06 puts background
PSNR near 30 dB); inside a central ellipse (about a quarter of the frame, the edit
mask) the colour channels are rotated, an edit the background scores must not see.
Each output is saved and scored both ways through the runner's own function:

- ``output`` (official scripts + attnedit-evaluate): JPEG q75 of the 1024 x 1024 image,
  decoded, resized to 512;
- ``source``: the float output resized to 512 (the backend's bicubic), then JPEG q75.

Printed per image: psnr_unedit_part and ssim_unedit_part of both orders and their
difference (output - source).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_saved_size.py [--noise 0 0.06] [--images a.png b.jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from attnedit.api import piebench_metrics
from attnedit.run.saved_edits import saved_edit

SKIMAGE = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
METRICS = ["psnr_unedit_part", "ssim_unedit_part"]


def photographs(paths: list[str] | None) -> dict[str, np.ndarray]:
    if not paths:
        import skimage

        paths = [str(Path(skimage.__file__).parent / "data" / name) for name in SKIMAGE]
    return {p.rsplit("/", 1)[-1]: np.asarray(Image.open(p).convert("RGB")) for p in paths}


def to_source(image: np.ndarray, size: int = 512) -> torch.Tensor:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side]).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1).float().div(255)


def ellipse(size: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    return (((yy - c) / (size * 0.28)) ** 2 + ((xx - c) / (size * 0.28)) ** 2 <= 1).float()


def measure(source: torch.Tensor, noise: float, seed: int = 0) -> dict[str, dict[str, float]]:
    size = tuple(source.shape[-2:])
    changed = source
    if noise:  # the model's own error on the background, at the source's scale (it survives the resize)
        changed = source + noise * torch.randn(source.shape, generator=torch.Generator().manual_seed(seed))
    output = F.interpolate(changed[None], scale_factor=2, mode="bicubic", align_corners=False, antialias=True)[0]
    mask = ellipse(size[0])
    big = F.interpolate(mask[None, None], scale_factor=2, mode="nearest")[0, 0]
    output = torch.where(big.bool(), output.roll(1, dims=0), output).clamp(0, 1)  # the "edit"
    _, official = saved_edit(output, size, "jpeg", 75, "output")
    resized = F.interpolate(output[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)
    _, first = saved_edit(resized, size, "jpeg", 75, "source")
    out = {}
    for order, edited in (("output", official), ("source", first)):
        scores = piebench_metrics(edited[None], source[None], mask[None], metrics=METRICS)
        out[order] = {m: float(scores[m][0]) for m in METRICS}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="*")
    parser.add_argument("--noise", nargs="*", type=float, default=[0.0, 0.06])
    args = parser.parse_args()
    print("| image | noise | PSNR bg output | PSNR bg source | diff dB | SSIM bg output | SSIM bg source | diff |")
    print("|---|---|---|---|---|---|---|---|")
    for noise in args.noise:
        for name, image in photographs(args.images).items():
            r = measure(to_source(image), noise)
            p, s = (r["output"]["psnr_unedit_part"], r["source"]["psnr_unedit_part"]), (
                r["output"]["ssim_unedit_part"], r["source"]["ssim_unedit_part"])
            print(f"| {name} | {noise:g} | {p[0]:.2f} | {p[1]:.2f} | {p[0] - p[1]:+.2f} | {s[0]:.4f} | {s[1]:.4f} "
                  f"| {s[0] - s[1]:+.4f} |")


if __name__ == "__main__":
    main()
