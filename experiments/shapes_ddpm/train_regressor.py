"""Train the factor regressor (attnedit.factors.regressor) on procedural shapes, on a CPU.

Batches are rendered on the fly from seed (seed, step), with Gaussian pixel noise of a
random level in [0, --noise] so the regressor also reads slightly imperfect images
(generated samples are not exact renderings). Evaluated on held-out rendered images
(seeds apart from training): shape accuracy, per-factor mean absolute error and accuracy
within attnedit.factors.accuracy.TOLERANCE.

    .venv/bin/python experiments/shapes_ddpm/train_regressor.py      # ~5 min on 2 cores

Writes <out>/config.json + model.safetensors (shipped as attnedit/assets/shapes_regressor)
and experiments/shapes_ddpm/regressor_log.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attnedit.data.shapes import draw_factors, render
from attnedit.factors.accuracy import factor_accuracy, factor_errors
from attnedit.factors.regressor import FactorRegressor, as_factors, targets

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parents[1] / "src" / "attnedit" / "assets" / "shapes_regressor"
HELD_OUT_SEED = 10_000  # evaluation images: rng([HELD_OUT_SEED]); training: rng([seed, step])


def noisy_batch(rng: np.random.Generator, size: int, resolution: int, noise: float):
    factors = draw_factors(rng, size)
    images = render(factors, resolution)
    sigma = rng.uniform(0, noise, (size, 1, 1, 1))
    images = np.clip(images + sigma * rng.standard_normal(images.shape), 0, 1)
    return torch.from_numpy(images).float(), factors


def evaluate(model: FactorRegressor, n: int = 2000, resolution: int = 32) -> dict:
    factors = draw_factors(np.random.default_rng([HELD_OUT_SEED]), n)
    predicted = as_factors(model.predict(torch.from_numpy(render(factors, resolution)).float()))
    errors = factor_errors(predicted, factors)
    return {
        "images": n,
        "accuracy": factor_accuracy(predicted, factors),
        "mean_abs_error": {k: float(v.mean()) for k, v in errors.items() if k != "shape"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--noise", type=float, default=0.04)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--log", type=Path, default=HERE / "regressor_log.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = FactorRegressor()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    began, losses = time.perf_counter(), []
    for step in range(args.steps):
        images, factors = noisy_batch(np.random.default_rng([args.seed, step]), args.batch_size, 32, args.noise)
        labels, values = targets(factors)
        for group in optimizer.param_groups:  # cosine decay
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        out = model.train()(images)
        loss = F.cross_entropy(out[:, :3], labels) + 10 * F.mse_loss(out[:, 3:], values)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{args.steps} loss {np.mean(losses[-100:]):.4f}", flush=True)
    model.eval()
    report = evaluate(model)
    model.save(args.out)
    log = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "log")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_minutes": round((time.perf_counter() - began) / 60, 2),
        "held_out": report,
        "loss_per_100_steps": [round(float(np.mean(losses[i : i + 100])), 5) for i in range(0, len(losses), 100)],
    }
    args.log.write_text(json.dumps(log, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
