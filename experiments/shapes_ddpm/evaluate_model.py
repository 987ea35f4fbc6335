"""Evidence that the shipped shapes DDPM learned its data, read by the shipped regressor.

Generated samples have no true factors, so each image (generated or real) also gets
factors by analysis-by-synthesis (attnedit.factors.accuracy.fit_factors: the rendering
nearest to the image, searched from the regressor's answer). Reported per factor, side
by side for real held-out images and for generated samples:

- regressor vs fit: the share of images whose regressor factor is within tolerance of the
  fitted one (real images: also regressor vs truth and fit vs truth);
- the fit's residual RMSE (how far the image is from any clean rendering), and the
  share of images within 0.05 of one;
- the distribution of generated factors: shape frequencies and, per continuous factor,
  the Kolmogorov-Smirnov distance of the fitted values to the uniform prior.

    .venv/bin/python experiments/shapes_ddpm/evaluate_model.py [--samples 256]

Writes model_report.{json,md} and samples.png (8x8 generated samples) next to this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attnedit.assets import asset_path
from attnedit.backends.ddpm import DDPMBackend
from attnedit.data.shapes import FACTOR_RANGES, FACTORS, SHAPES, draw_factors, render
from attnedit.factors.accuracy import factor_accuracy, fit_factors
from attnedit.factors.regressor import as_factors, load_regressor

HERE = Path(__file__).resolve().parent
CLEAN_RMSE = 0.05  # an image within this RMSE of a rendering "is" that rendering (sensor-like noise level)


def ks_uniform(values: np.ndarray, low: float, high: float) -> float:
    """Kolmogorov-Smirnov distance between the values and U(low, high)."""
    x = np.sort((values - low) / (high - low))
    n = len(x)
    return float(max((np.arange(1, n + 1) / n - x).max(), (x - np.arange(n) / n).max()))


def assess(images: np.ndarray, regressor, truth=None) -> dict:
    predicted = as_factors(regressor.predict(torch.from_numpy(images).float()))
    fitted, residual = fit_factors(images, predicted)
    out = {
        "images": len(images),
        "regressor_vs_fit": factor_accuracy(predicted, fitted),
        "fit_rmse_median": float(np.median(residual)),
        "fit_rmse_p90": float(np.quantile(residual, 0.9)),
        "clean_share": float((residual <= CLEAN_RMSE).mean()),
        "shape_frequencies": {s: float((fitted.shape == i).mean()) for i, s in enumerate(SHAPES)},
        "ks_to_prior": {k: ks_uniform(getattr(fitted, k), *FACTOR_RANGES[k]) for k in FACTOR_RANGES},
    }
    if truth is not None:
        out["regressor_vs_truth"] = factor_accuracy(predicted, truth)
        out["fit_vs_truth"] = factor_accuracy(fitted, truth)
    return out


def grid_image(images: np.ndarray, columns: int = 8, scale: int = 3) -> Image.Image:
    n, _, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.ones((rows * (h + 1), columns * (w + 1), 3))
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image.transpose(1, 2, 0)
    pil = Image.fromarray((canvas * 255).round().astype(np.uint8))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def markdown(report: dict) -> str:
    real, generated = report["real"], report["generated"]
    lines = [
        f"# Shapes DDPM: does it generate its data? ({generated['images']} generated samples, "
        f"{report['num_inference_steps']} DDIM steps; {real['images']} real held-out images)",
        "",
        "Per-factor share of images whose factor is recovered (shape exactly; others within "
        "attnedit.factors.accuracy.TOLERANCE).",
        "",
        "| factor | real: regressor vs truth | real: regressor vs fit | generated: regressor vs fit |"
        " generated: KS to prior |",
        "|---|---|---|---|---|",
    ]
    for k in FACTORS:
        ks = f"{generated['ks_to_prior'][k]:.3f}" if k in generated["ks_to_prior"] else "—"
        lines.append(
            f"| {k} | {real['regressor_vs_truth'][k]:.3f} | {real['regressor_vs_fit'][k]:.3f} | "
            f"{generated['regressor_vs_fit'][k]:.3f} | {ks} |"
        )
    lines += [
        "",
        "| images | fit RMSE median | fit RMSE p90 | share within RMSE 0.05 of a clean rendering |",
        "|---|---|---|---|",
    ]
    for name, part in (("real", real), ("generated", generated)):
        lines.append(f"| {name} | {part['fit_rmse_median']:.4f} | {part['fit_rmse_p90']:.4f} | {part['clean_share']:.3f} |")
    freqs = ", ".join(f"{k} {v:.2f}" for k, v in generated["shape_frequencies"].items())
    lines += ["", f"Generated shape frequencies (prior 1/3 each): {freqs}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--first-seed", type=int, default=500_000)
    parser.add_argument("--model", default=None, help="default: the shipped attnedit/assets/shapes_ddpm")
    parser.add_argument("--regressor", default=None, help="default: the shipped attnedit/assets/shapes_regressor")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (conf/model/shapes_ddpm.yaml: 20)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.model = args.model or asset_path("shapes_ddpm")
    args.regressor = args.regressor or asset_path("shapes_regressor")
    backend = DDPMBackend(args.model, name="shapes_ddpm", device="cpu", num_inference_steps=args.steps)
    regressor = load_regressor(args.regressor)
    seeds = list(range(args.first_seed, args.first_seed + args.samples))
    generated = np.concatenate([backend.denoise(backend.initial_noise(seeds[i : i + 64])).double().numpy()
                                for i in range(0, len(seeds), 64)])
    truth = draw_factors(np.random.default_rng([args.first_seed]), args.samples)
    report = {
        "model": str(args.model),
        "num_inference_steps": backend.num_inference_steps,
        "real": assess(render(truth), regressor, truth),
        "generated": assess(generated, regressor),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "model_report.md").write_text(markdown(report))
    grid_image(generated[:64]).save(args.out / "samples.png")
    print(markdown(report))
    print(f"figure: {args.out / 'samples.png'}")


if __name__ == "__main__":
    main()
