"""Editing time of SAD vs Riemannian pullback on the CPU, with the real ddpm_celebahq
architecture (UNet2DModel(**CELEBAHQ_UNET), 256x256, random weights: time does not
depend on the weights), saved with save_pretrained and loaded through DDPMBackend, at
reduced steps and batch 1.

Measured (fastest of ``--rounds``, the machine may be shared):
- unedited sampling: one DDIM run;
- SAD discovery: the eigendecomposition of one layer (no cache);
- SAD edit: one DDIM run with the injection hooks;
- pullback: one DDIM run whose latent hook computes the sample's local basis
  (``--vectors`` singular vectors, ``--iters`` subspace iterations) and edits x_t;
  its decomposition time alone is read from the control.

Printed ratios: SAD edit / unedited sampling, pullback / SAD edit. Then a projection to
the SAD study's settings (50 steps, 15 vectors, 50 iterations, 1500 cases over 100
samples) by linear scaling of the measured parts: sampling time with the steps,
decomposition time with (iterations + 1) x vectors (the first forward and the final
Rayleigh-Ritz product cost about one iteration); an extrapolation, labeled as such.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_editing_time.py [--steps 5] [--iters 2] [--vectors 1]
"""

from __future__ import annotations

import argparse
import platform
import socket
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from attnedit.backends.ddpm import DDPMBackend
from attnedit.backends.tiny import CELEBAHQ_UNET, SCHEDULER
from attnedit.data.base import Sample
from attnedit.methods.pullback import Pullback
from attnedit.methods.sad import SAD


def build_model(folder: Path) -> Path:
    torch.manual_seed(0)
    UNet2DModel(**CELEBAHQ_UNET).save_pretrained(folder)
    DDPMScheduler(**SCHEDULER).save_pretrained(folder)
    return folder


def timed(fn, rounds: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="DDIM steps (the study uses 50)")
    parser.add_argument("--iters", type=int, default=2, help="pullback subspace iterations (the study: up to 50)")
    parser.add_argument("--vectors", type=int, default=1, help="pullback singular vectors (the study: 15)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sample = [Sample(id="seed000000", seed=0)]
    with tempfile.TemporaryDirectory() as tmp:
        backend = DDPMBackend(str(build_model(Path(tmp) / "ddpm_celebahq_random")), device="cpu",
                              num_inference_steps=args.steps)
        print(f"ddpm_celebahq architecture, random weights, {sum(p.numel() for p in backend.unet.parameters()) / 1e6:.1f}M "
              f"parameters; CPU {platform.processor() or platform.machine()}, {args.threads} threads, host "
              f"{socket.gethostname()}; {args.steps} DDIM steps, batch 1, fastest of {args.rounds}")

        backend.generate(sample)  # warm-up (allocator, oneDNN kernels)
        unedited, _ = timed(lambda: backend.generate(sample), args.rounds)

        sad = SAD(directions=[0], alphas=[0.4])
        discovery, _ = timed(lambda: sad.setup(backend, cache_dir=None), args.rounds)

        def sad_edit():
            with sad.control(backend, sad.edits()[:1]):
                return backend.generate(sample)

        sad_seconds, _ = timed(sad_edit, args.rounds)

        pullback = Pullback(directions=[args.vectors - 1], alphas=[0.4], max_iters=args.iters, tol=1e-12)
        pullback.setup(backend)

        def pullback_edit():
            pullback.cache.clear()  # count the decomposition every round
            with pullback.control(backend, pullback.edits()[:1]) as control:
                backend.generate(sample, control)
            return control.row_extras[0]

        pullback_seconds, extras = timed(pullback_edit, args.rounds)
        decomposition = extras["discovery_seconds_per_sample"]

    print(f"unedited sampling        {unedited:9.2f} s")
    print(f"SAD discovery (once)     {discovery:9.4f} s")
    print(f"SAD edit                 {sad_seconds:9.2f} s")
    print(f"pullback decomposition   {decomposition:9.2f} s  ({args.vectors} vector(s), {extras['pullback_iterations']} "
          f"iteration(s), t={pullback.timestep})")
    print(f"pullback edit (incl.)    {pullback_seconds:9.2f} s")
    print(f"ratio SAD edit / unedited sampling:  {sad_seconds / unedited:.3f}")
    print(f"ratio pullback / SAD edit:           {pullback_seconds / sad_seconds:.2f}")

    # Extrapolation to the study's settings by linear scaling (labeled as such).
    per_step = sad_seconds / args.steps
    per_iter_vector = decomposition / ((args.iters + 1) * args.vectors)
    sad_case = 50 * per_step
    pull_sample = per_iter_vector * 51 * 15
    sad_total = discovery + 1500 * sad_case
    pull_total = 100 * pull_sample + 1500 * 50 * ((pullback_seconds - decomposition) / args.steps)
    print("extrapolated to 50 steps, 15 vectors x 50 iterations, 1500 cases over 100 samples (linear scaling):")
    print(f"  SAD      {sad_total / 3600:8.2f} h  ({sad_case:.1f} s per edit)")
    print(f"  pullback {pull_total / 3600:8.2f} h  ({pull_sample:.0f} s decomposition per sample)")
    print(f"  pullback / SAD: {pull_total / sad_total:.2f}")


if __name__ == "__main__":
    main()
