"""Train the built-in shapes DDPM on a CPU (the weights attnedit ships and the default run uses).

A UNet2DModel with google/ddpm-cifar10-32's block types (attnedit.backends.tiny.SHAPES_UNET)
learns epsilon-prediction on procedural shapes (attnedit.data.shapes) rendered on the fly:
batch b of step s is drawn from seed (seed, s), so a run is fully determined by its settings
and a killed run resumes from its last checkpoint to the same result. bf16 autocast on the
CPU (AVX-512 BF16) with fp32 master weights and an EMA of the weights, which is what ships.

    .venv/bin/python experiments/shapes_ddpm/train_ddpm.py            # ~35-45 min on 2 cores
    .venv/bin/python experiments/shapes_ddpm/train_ddpm.py --steps 20 --out /tmp/x   # smoke run

Writes <out>/unet (config + safetensors, EMA weights), <out>/scheduler, and
experiments/shapes_ddpm/training_log.json (settings, loss curve, wall time, machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel

from attnedit.backends.tiny import SCHEDULER, SHAPES_UNET
from attnedit.data.shapes import draw_factors, render

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_OUT = REPO / "src" / "attnedit" / "assets" / "shapes_ddpm"


def batch(seed: int, step: int, size: int, resolution: int) -> torch.Tensor:
    images = render(draw_factors(np.random.default_rng([seed, step]), size), resolution)
    return torch.from_numpy(images).float() * 2 - 1


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "attnedit" / "train_shapes_ddpm")
    parser.add_argument("--log", type=Path, default=HERE / "training_log.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    resolution = SHAPES_UNET["sample_size"]

    unet = UNet2DModel(**SHAPES_UNET)
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = DDPMScheduler(**SCHEDULER)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    alphas_cumprod = scheduler.alphas_cumprod.float()
    start, losses, elapsed = 0, [], 0.0
    checkpoint = args.work / "checkpoint.pt"
    if checkpoint.exists():  # resume: same seeds per step, so the result does not depend on interruptions
        # Tensors, numbers and lists only: weights_only=True unpickles nothing executable.
        state = torch.load(checkpoint, weights_only=True)
        unet.load_state_dict(state["unet"]), ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"]), torch.set_rng_state(state["rng"])
        start, losses, elapsed = state["step"], state["losses"], state["elapsed"]
        print(f"resumed at step {start}")

    began = time.perf_counter() - elapsed
    for step in range(start, args.steps):
        x0 = batch(args.seed, step, args.batch_size, resolution)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch_size,))
        noise = torch.randn_like(x0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            predicted = unet(x_t, t).sample
        loss = (predicted.float() - noise).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        losses.append(round(loss.item(), 5))
        if (step + 1) % 50 == 0 or step + 1 == args.steps:
            wall = time.perf_counter() - began
            print(f"step {step + 1}/{args.steps} loss(avg 50) {np.mean(losses[-50:]):.4f} {wall / 60:.1f} min", flush=True)
        if (step + 1) % 250 == 0 and step + 1 < args.steps:
            args.work.mkdir(parents=True, exist_ok=True)
            state = dict(unet=unet.state_dict(), ema=ema.state_dict(), optimizer=optimizer.state_dict(),
                         rng=torch.get_rng_state(), step=step + 1, losses=losses, elapsed=time.perf_counter() - began)
            torch.save(state, checkpoint.with_suffix(".tmp"))
            os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
    wall = time.perf_counter() - began

    ema.save_pretrained(args.out / "unet")
    scheduler.save_pretrained(args.out / "scheduler")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "work", "log")}
    log = {
        "settings": settings,
        "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in SHAPES_UNET.items()},
        "parameters": sum(p.numel() for p in unet.parameters()),
        "wall_minutes": round(wall / 60, 2),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "loss_per_50_steps": [round(float(np.mean(losses[i : i + 50])), 5) for i in range(0, len(losses), 50)],
    }
    args.log.write_text(json.dumps(log, indent=1) + "\n")
    checkpoint.unlink(missing_ok=True)
    print(f"saved {args.out} ({wall / 60:.1f} min)")


if __name__ == "__main__":
    main()
