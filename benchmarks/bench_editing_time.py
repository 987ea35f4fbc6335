"""Editing time of SAD vs Riemannian pullback (the public protocol, method=pullback) with
the real ddpm_celebahq architecture (UNet2DModel(**CELEBAHQ_UNET), 256x256, random
weights: time does not depend on the weights), saved with save_pretrained and loaded
through DDPMBackend, at batch 1; CPU by default (reduced steps, rank, iterations),
``--device cuda`` for the study's settings.

Measured in interleaved rounds (``--rounds``, default 5): each round times every method
once, in an order rotated from round to round, so machine load (other jobs on a shared
host) falls on all methods alike instead of on whichever ran while it peaked; printed as
the median with its interquartile range and the minimum, with the host's load average
(``os.getloadavg()``) before and after. Ratios divide medians. Timed:
- unedited sampling: one DDIM run;
- SAD discovery: the eigendecomposition of one layer (no cache); SAD edit: one DDIM run
  with the injection hooks;
- pullback: one DDIM run whose latent hook at t_edit computes the sample's basis
  (``--rank`` vectors, exactly ``--iters`` power-method iterations) and applies
  ``--guidance-steps`` steps of x-space guidance (2 UNet evaluations each); its
  decomposition time alone is read from the control; the sign reference's decomposition
  (once per run) is timed apart.

Printed: the times, UNet evaluations per edit, the ratios SAD edit / unedited sampling
and pullback / SAD edit, then a projection to the CelebA study (50 steps, rank 50, 12 to
50 iterations, 1500 cases over 100 samples) by linear scaling of the measured parts:
sampling with the steps, decomposition with (iterations + 1) x rank (the linearization
and the final product cost about one iteration); an extrapolation, labeled as such.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_editing_time.py [--steps 5] [--iters 2] [--rank 2]
    python benchmarks/bench_editing_time.py --device cuda --steps 50 --rank 50 --iters 2
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel

from attnedit.backends.ddpm import DDPMBackend
from attnedit.backends.tiny import CELEBAHQ_UNET, SCHEDULER
from attnedit.data.base import Sample
from attnedit.methods.pullback import Pullback
from attnedit.methods.sad import SAD

STUDY_STEPS, STUDY_RANK, STUDY_ITERS, STUDY_SAMPLES, STUDY_CASES = 50, 50, (12, 50), 100, 1500


def build_model(folder: Path) -> Path:
    torch.manual_seed(0)
    UNet2DModel(**CELEBAHQ_UNET).save_pretrained(folder)
    DDPMScheduler(**SCHEDULER).save_pretrained(folder)
    return folder


def once(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def interleaved(fns: dict, rounds: int, device: torch.device) -> tuple[dict[str, list[float]], dict]:
    """{name: seconds per round}, {name: the last result}: every round runs each fn once,
    the order rotated by one per round."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    results: dict = {}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds, results[name] = once(fns[name], device)
            times[name].append(seconds)
    return times, results


def spread(seconds: list[float]) -> tuple[float, float, float, float]:
    """(median, q25, q75, minimum)."""
    q25, median, q75 = np.quantile(seconds, [0.25, 0.5, 0.75])
    return float(median), float(q25), float(q75), float(min(seconds))


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="DDIM steps (the study uses 50)")
    parser.add_argument("--iters", type=int, default=2, help="power-method iterations (the protocol: 12 to 50)")
    parser.add_argument("--rank", type=int, default=2, help="vectors iterated (the protocol: 50)")
    parser.add_argument("--guidance-steps", type=int, default=16, help="x-space guidance steps (the protocol: 16)")
    parser.add_argument("--t-edit", type=float, default=1.0, help="fraction of T (the protocol's default: 1.0)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median and IQR over them)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sample = [Sample(id="seed000000", seed=0)]
    with tempfile.TemporaryDirectory() as tmp:
        backend = DDPMBackend(str(build_model(Path(tmp) / "ddpm_celebahq_random")), device=args.device,
                              num_inference_steps=args.steps)
        device = backend.device
        print(f"ddpm_celebahq architecture, random weights, {sum(p.numel() for p in backend.unet.parameters()) / 1e6:.1f}M "
              f"parameters; {device} ({backend.describe()['device_name']}), {args.threads} CPU threads, host "
              f"{socket.gethostname()} ({platform.machine()}); {args.steps} DDIM steps, batch 1")

        backend.generate(sample)  # warm-up (allocator, kernels)
        sad = SAD(directions=[0], alphas=[0.4])
        sad.setup(backend, cache_dir=None)
        pullback = Pullback(directions=[0], alphas=[1.0], t_edit=args.t_edit, rank=args.rank, min_iters=0,
                            max_iters=args.iters, tol=1e-30, guidance_steps=args.guidance_steps)
        pullback.setup(backend)
        reference = pullback.discovery_seconds  # the sign reference's decomposition, once per run
        decompositions: list[float] = []

        def sad_edit():
            with sad.control(backend, sad.edits()[:1]):
                return backend.generate(sample)

        def pullback_edit():
            pullback.cache.clear()  # count the decomposition every round
            with pullback.control(backend, pullback.edits()[:1]) as control:
                backend.generate(sample, control)
            decompositions.append(control.row_extras[0]["discovery_seconds_per_sample"])
            return control.row_extras[0]

        load_before = load()
        times, results = interleaved({"unedited": lambda: backend.generate(sample),
                                      "sad_discovery": lambda: sad.setup(backend, cache_dir=None),
                                      "sad_edit": sad_edit, "pullback_edit": pullback_edit}, args.rounds, device)
        load_after = load()
        extras = results["pullback_edit"]
        edit_steps = sum(t <= pullback.timestep for t in backend.timesteps())
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    unedited, discovery, sad_seconds, pullback_seconds = (spread(times[k])[0] for k in
                                                          ("unedited", "sad_discovery", "sad_edit", "pullback_edit"))
    decomposition = spread(decompositions)[0]
    evals = extras["guidance_unet_evals"] + edit_steps
    print(f"{args.rounds} interleaved rounds; load average (1/5/15 min) before {load_before}, after {load_after}")
    print("                         median s  [q25, q75]            min s")

    def line(name: str, seconds: list[float], note: str = "") -> None:
        median, q25, q75, best = spread(seconds)
        print(f"{name:<24} {median:9.4f}  [{q25:9.4f}, {q75:9.4f}]  {best:9.4f}  {note}")

    line("unedited sampling", times["unedited"], f"({args.steps} UNet evaluations)")
    line("SAD discovery (once)", times["sad_discovery"])
    line("SAD edit", times["sad_edit"], f"({args.steps} UNet evaluations)")
    print(f"pullback sign reference  {reference:9.3f} s  (once per run)")
    line("pullback decomposition", decompositions, f"(rank {args.rank}, {extras['pullback_iterations']} iteration(s), "
         f"t={pullback.timestep})")
    line("pullback edit (incl.)", times["pullback_edit"], f"({evals} UNet evaluations: {extras['guidance_unet_evals']} "
         f"guidance + {edit_steps} sampling steps from t_edit)")
    if peak is not None:
        print(f"peak GPU memory          {peak:9.2f} GiB")
    print(f"ratio SAD edit / unedited sampling (medians):  {sad_seconds / unedited:.3f}")
    print(f"ratio pullback / SAD edit (medians):           {pullback_seconds / sad_seconds:.2f}")
    print(f"ratio pullback edit without its decomposition / SAD edit: {(pullback_seconds - decomposition) / sad_seconds:.2f}")

    # Extrapolation to the study's settings by linear scaling (labeled as such).
    per_step = sad_seconds / args.steps
    per_iter_vector = decomposition / ((args.iters + 1) * args.rank)
    per_eval = (pullback_seconds - decomposition) / evals
    sad_case = STUDY_STEPS * per_step
    sad_total = discovery + STUDY_CASES * sad_case
    pull_edit = per_eval * (2 * args.guidance_steps + STUDY_STEPS)  # t_edit = 1.0: every step after the edit
    print(f"extrapolated to {STUDY_STEPS} steps, rank {STUDY_RANK}, {STUDY_CASES} cases over {STUDY_SAMPLES} samples "
          "(linear scaling):")
    print(f"  SAD      {sad_total / 3600:8.2f} h  ({sad_case:.2f} s per edit)")
    for iters in STUDY_ITERS:
        pull_sample = per_iter_vector * (iters + 1) * STUDY_RANK
        pull_total = STUDY_SAMPLES * pull_sample + STUDY_CASES * pull_edit
        print(f"  pullback {pull_total / 3600:8.2f} h  ({iters} iterations: {pull_sample:.0f} s decomposition per sample, "
              f"{pull_edit:.2f} s per edit)  pullback / SAD: {pull_total / sad_total:.1f}")


if __name__ == "__main__":
    main()
