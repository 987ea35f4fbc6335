"""UNet evaluations and wall time of SAD edits with and without the shared trajectory prefix.

Both paths run the runner's order of work on one DDPMBackend (the same weights and
kernels): per batch of cases, the missing unedited references, then the edits. The only
difference is ``backend.share_prefix``: off, every edit denoises from x_T (the naive
path, T steps per edit); on, every edit continues from its sample's stored unedited state
at the first step inside SAD's window, so S samples with E edits each cost
S * T + S * E * (steps from that one on) sample-evaluations instead of S * T * (1 + E).

Counted: UNet sample-evaluations (a forward pre-hook adds the batch size of each call),
next to that formula. Timed: the whole loop, fastest of ``--rounds`` (CUDA synchronized).
Compared: every edited image of the two paths (largest absolute difference: the shared
path computed the steps before the window in the reference's batch, the naive one in the
edits' batch, so they differ by the rounding of batch composition, amplified by random
weights; tests/backends/test_ddpm.py checks bitwise equality for equal compositions).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_shared_prefix.py            # tiny model, CPU
    python benchmarks/bench_shared_prefix.py --device cuda --config celebahq       # the GPU check

``--config celebahq`` is google/ddpm-ema-celebahq-256's architecture (UNet2DModel(**CELEBAHQ_UNET),
random weights: the counts and times do not depend on them) at 50 DDIM steps; ``tiny``
is the test model (64x64) at 10 steps. ``measure(device, config, ...)`` returns the
numbers as a dict for scripts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from attnedit.backends.base import device_name
from attnedit.backends.ddpm import DDPMBackend
from attnedit.backends.tiny import CELEBAHQ_UNET, SCHEDULER, build_tiny_ddpm
from attnedit.data.base import Sample
from attnedit.methods.sad import SAD

CONFIGS = {"tiny": {"steps": 10}, "celebahq": {"steps": 50}}


def build_model(folder: Path, config: str) -> Path:
    if config == "tiny":
        return build_tiny_ddpm(folder)
    torch.manual_seed(0)
    UNet2DModel(**CELEBAHQ_UNET).save_pretrained(folder)
    DDPMScheduler(**SCHEDULER).save_pretrained(folder)
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_cases(backend: DDPMBackend, method: SAD, samples: list[Sample], batch_size: int) -> tuple[torch.Tensor, float]:
    """The runner's order of work: per batch, the missing references, then the edits."""
    cases = [(s, e) for s in samples for e in method.edits()]
    referenced: set[str] = set()
    outputs = []
    _sync(backend.device)
    start = time.perf_counter()
    for i in range(0, len(cases), batch_size):
        batch = cases[i : i + batch_size]
        missing = [s for s in {s.id: s for s, _ in batch}.values() if s.id not in referenced]
        if missing:
            backend.reference(missing)
            referenced.update(s.id for s in missing)
        with method.control(backend, [e for _, e in batch]) as control:
            outputs.append(backend.generate([s for s, _ in batch], control))
    _sync(backend.device)
    return torch.cat(outputs), time.perf_counter() - start


def measure(
    device: str = "cpu",
    config: str = "tiny",
    samples: int = 2,
    directions: int = 2,
    alphas: tuple[float, ...] = (-0.4, -0.2, 0.2, 0.4),
    batch_size: int = 8,
    steps: int | None = None,
    rounds: int = 1,
) -> dict:
    steps = steps or CONFIGS[config]["steps"]
    with tempfile.TemporaryDirectory() as tmp:
        backend = DDPMBackend(str(build_model(Path(tmp) / config, config)), device=device, num_inference_steps=steps)
    method = SAD(directions=directions, alphas=list(alphas))
    method.setup(backend)
    evaluations: list[int] = []
    backend.unet.register_forward_pre_hook(lambda module, args: evaluations.append(int(args[0].shape[0])))
    seeds = [Sample(f"seed{i}", seed=i) for i in range(samples)]
    backend.reference(seeds[:1])  # warm-up: allocator, kernels
    result = {name: {"seconds": float("inf")} for name in ("naive", "shared")}
    for _ in range(rounds):  # alternating, so drifting load hits both paths alike
        for name, shared in (("naive", False), ("shared", True)):
            backend.share_prefix = shared
            backend.prefix.clear()
            evaluations.clear()
            images, seconds = run_cases(backend, method, seeds, batch_size)
            result[name].update(seconds=min(result[name]["seconds"], seconds),
                                unet_sample_evaluations=sum(evaluations), images=images)
    with method.control(backend, method.edits()[:1]) as control:
        first = control.first_edit_timestep
    T, E = len(backend.timesteps()), len(method.edits())
    after = sum(t <= first for t in backend.timesteps())
    diff = float((result["naive"].pop("images") - result["shared"].pop("images")).abs().max())
    return {
        "device": str(backend.device),
        "device_name": device_name(backend.device),
        "config": config,
        "steps": T,
        "samples": samples,
        "edits_per_sample": E,
        "batch_size": batch_size,
        "first_edit_timestep": first,
        "steps_from_first_edit": after,
        "expected_evaluations": {"naive": samples * T * (1 + E), "shared": samples * (T + E * after)},
        **result,
        "evaluation_ratio": result["naive"]["unet_sample_evaluations"] / result["shared"]["unet_sample_evaluations"],
        "speedup": result["naive"]["seconds"] / result["shared"]["seconds"],
        "max_abs_diff": diff,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--directions", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: 10 tiny, 50 celebahq)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args()
    r = measure(args.device, args.config, args.samples, args.directions, batch_size=args.batch_size,
                steps=args.steps, rounds=args.rounds)
    print(f"{r['config']} on {r['device_name']} ({r['device']}), {r['steps']} DDIM steps, {r['samples']} samples x "
          f"{r['edits_per_sample']} edits, batch {r['batch_size']}; edits start at t={r['first_edit_timestep']} "
          f"({r['steps_from_first_edit']} of {r['steps']} steps)")
    print("| path | UNet sample-evaluations | expected | seconds |")
    print("|---|---:|---:|---:|")
    for name in ("naive", "shared"):
        print(f"| {name} | {r[name]['unet_sample_evaluations']} | {r['expected_evaluations'][name]} | "
              f"{r[name]['seconds']:.3f} |")
    print(f"evaluations naive/shared {r['evaluation_ratio']:.3f}x, time naive/shared {r['speedup']:.3f}x, "
          f"largest image difference {r['max_abs_diff']:.3g}")
    if args.out:
        args.out.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
