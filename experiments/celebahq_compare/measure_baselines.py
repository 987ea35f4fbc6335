"""What the baselines' protocol options change, measured on the shipped trained shapes DDPM
(experiments/shapes_ddpm/, 20 DDIM steps): the numbers behind the deviations and options
named in experiments/celebahq_compare/README.md.

1. ``boosting``: pullback's performance boosting alone (eta 1 from the step nearest 0.2 T,
   no edit) against the eta-0 unedited samples every edit is scored against: PSNR, SSIM
   (``--samples``: seeds 0..n-1; the noise of the eta-1 steps from each sample's generator,
   as the runs draw it).
2. ``pullback``: the public protocol (rank 50, 16 guidance steps, t_edit 1.0, boosting) on
   ``--samples`` samples x ``--directions`` directions at alpha +1: sign flips made by the
   reference alignment, their agreement, iterations and convergence, x_t change, PSNR of
   the edit; at the model's 20 steps and at ``--long-steps`` (the public code's 100).
3. ``hspace_stability``: h-space PCA from ``N`` samples (the public code: 50000): mean
   |cos| between component k found from two disjoint seed sets, over the steps.
4. ``hspace_edit``: the published edit (alpha 1 x strength 0.1, singular_value at 50000
   rows) as a relative change of h (``delta_h_ratio``), per direction, and its PSNR.
5. ``--convergence N``: why the public stop test is not met: per power-method iteration
   (rank 50, seed 0's x_T, t_edit 1.0), how many of the vectors the SVD flipped, and the
   largest entry change of the top 4 and of all vectors once the flips are undone.

    python experiments/celebahq_compare/measure_baselines.py --device cuda --out baseline_options.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from attnedit.assets import asset_path
from attnedit.backends.base import Control
from attnedit.backends.ddpm import DDPMBackend
from attnedit.data.base import Sample
from attnedit.methods.hspace_pca import HSpacePCA
from attnedit.methods.local_basis import h_space, linearized, plain_attention
from attnedit.methods.pullback import Pullback
from attnedit.methods.per_sample import nearest_step
from attnedit.metrics.fidelity import SSIM

from measurements import emit  # this folder's shared output (a script's own folder is on sys.path)


def scores(edited, reference) -> dict[str, float]:
    psnr = peak_signal_noise_ratio(edited, reference, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(edited, reference, data_range=1.0, reduction="none")
    finite = psnr[torch.isfinite(psnr)]
    return {"psnr_mean": float(finite.mean()) if len(finite) else float("inf"), "ssim_mean": float(ssim.mean()),
            "max_abs_diff": float((edited - reference).abs().max())}


def boosting(backend, samples) -> dict:
    """Float images; ``ssim_mean`` is torchmetrics' (whole padded map), ``ssim_crop_mean``
    the runs' default (attnedit.metrics.fidelity, border=crop)."""
    boost = nearest_step(backend.timesteps(), 0.2, backend.num_train_timesteps)

    class Boost(Control):  # from x_T (no stored state to continue from), eta 1 from the boosting step
        @staticmethod
        def eta_at(t):
            return 1.0 if t <= boost else backend.eta

    boosted, plain = backend.generate(samples, Boost()), backend.generate(samples)
    crop = float(SSIM(border="crop").score(boosted, plain)["ssim"].mean())
    return {"boost_timestep": boost, **scores(boosted, plain), "ssim_crop_mean": crop}


def pullback(backend, samples, directions, **options) -> dict:
    method = Pullback(directions=directions, alphas=[1.0], **options)
    start = time.perf_counter()
    method.setup(backend)
    setup = time.perf_counter() - start
    rows, images, refs = [], [], []
    for sample in samples:
        batch = [sample] * len(directions)
        with method.control(backend, method.edits()) as control:
            images.append(backend.generate(batch, control))
        refs.append(backend.generate(batch))
        rows += control.row_extras
    edited, reference = torch.cat(images), torch.cat(refs)
    return {
        "steps": backend.num_inference_steps, "t_edit": method.timestep, "boost_timestep": method.boost_timestep,
        "sign_reference_seconds": setup, "edits": len(rows),
        "sign_flipped_share": sum(r["sign_flipped"] for r in rows) / len(rows),
        "sign_agreement_mean": sum(r["sign_agreement"] for r in rows) / len(rows),
        "sign_agreement_min": min(r["sign_agreement"] for r in rows),
        "iterations_mean": sum(r["pullback_iterations"] for r in rows) / len(rows),
        "converged_share": sum(r["pullback_converged"] for r in rows) / len(rows),
        "x_step_ratio_mean": sum(r["x_step_ratio"] for r in rows) / len(rows),
        "decomposition_seconds_mean": sum(r["discovery_seconds_per_sample"] for r in rows) / len(rows),
        **scores(edited, reference),
    }


def hspace_stability(backend, n, k) -> dict:
    halves = []
    for first_seed in (1_000_000, 1_000_000 + n):
        method = HSpacePCA(directions=k, num_samples=n, first_seed=first_seed, discovery_batch_size=256, progress=False)
        method.setup(backend)
        halves.append(method.components.double())
    cos = (halves[0] * halves[1]).sum(-1).abs()  # (steps, k)
    return {"num_samples": n, "abs_cos_per_direction": cos.mean(0).tolist(), "abs_cos_mean": float(cos.mean())}


def hspace_edit(backend, samples, k, num_samples) -> dict:
    method = HSpacePCA(directions=k, alphas=[1.0], num_samples=num_samples, discovery_batch_size=256, progress=False)
    method.setup(backend)
    ratios, images, refs = [], [], []
    for sample in samples:
        with method.control(backend, method.edits()) as control:
            images.append(backend.generate([sample] * k, control))
        refs.append(backend.generate([sample] * k))
        ratios.append(torch.tensor([r["delta_h_ratio"] for r in control.row_extras]))
    ratio = torch.stack(ratios).mean(0)
    return {"num_samples": method.num_samples, "delta_h_ratio_per_direction": ratio.tolist(),
            "delta_h_ratio_mean": float(ratio.mean()), **scores(torch.cat(images), torch.cat(refs))}


def convergence(backend, iterations: int, rank: int = 50) -> list[dict]:
    """The power method's iterations as power_method runs them, with the sign flips counted."""
    x = backend.initial_noise([0])[0].to(backend.device)
    t = nearest_step(backend.timesteps(), 1.0, backend.num_train_timesteps)
    start = torch.randn(x.numel(), rank, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = torch.linalg.qr(start)[0].T.to(x.device, x.dtype).view(rank, *x.shape)
    rows = []
    with plain_attention(backend.unet):
        _, jv, jtu = linearized(h_space(backend.unet, t), x)
        for i in range(iterations):
            nxt = torch.linalg.svd(jtu(jv(v)).flatten(1), full_matrices=False)[2].view_as(v)
            dots = (v.flatten(1) * nxt.flatten(1)).sum(1)
            change = (v - nxt * torch.sign(dots).view(-1, 1, 1, 1)).abs().flatten(1).max(1).values
            rows.append({"iteration": i + 1, "flipped": int((dots < 0).sum()), "top4_change": float(change[:4].max()),
                         "all_change": float(change.max()), "public_test_met": bool(torch.allclose(v, nxt, atol=1e-4))})
            print(rows[-1], flush=True)
            v = nxt
    return rows


def measure(out: dict, args, backend, samples) -> None:
    started = time.perf_counter()
    directions = list(range(args.directions))
    out["boosting"] = boosting(backend, samples)
    options = {"rank": args.rank, "max_iters": args.max_iters, "min_iters": min(10, args.max_iters)}
    out["pullback"] = [pullback(backend, samples, directions, **options)]
    print(json.dumps(out, indent=1), flush=True)
    out["hspace_edit"] = hspace_edit(backend, samples, args.directions, args.num_samples)
    out["hspace_stability"] = [hspace_stability(backend, n, args.directions) for n in args.stability]
    print(json.dumps(out, indent=1), flush=True)
    if args.long_steps:
        long = DDPMBackend(asset_path("shapes_ddpm"), name="shapes_ddpm", device=args.device,
                           num_inference_steps=args.long_steps)
        out["pullback"].append(pullback(long, samples, directions, **options))
    out["seconds"] = time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--directions", type=int, default=4)
    parser.add_argument("--stability", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--num-samples", type=int, default=1000, help="h-space PCA discovery samples (default 1000)")
    parser.add_argument("--rank", type=int, default=50, help="pullback rank (the protocol: 50; lower for a smoke run)")
    parser.add_argument("--max-iters", type=int, default=50, help="pullback iterations (the protocol: 50)")
    parser.add_argument("--long-steps", type=int, default=100, help="pullback again at this many steps (0: skip)")
    parser.add_argument("--convergence", type=int, default=0, help="only the convergence probe, this many iterations")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fidelity numbers in full float32
    backend = DDPMBackend(asset_path("shapes_ddpm"), name="shapes_ddpm", device=args.device, num_inference_steps=20)
    samples = [Sample(id=f"seed{s:06d}", seed=s) for s in range(args.samples)]
    out = {"model": "shapes_ddpm (shipped, trained)", "device": backend.describe()["device_name"],
           "samples": args.samples, "directions": args.directions, "rank": args.rank, "max_iters": args.max_iters}
    if args.convergence:
        out["convergence"] = convergence(backend, args.convergence, args.rank)
    else:
        measure(out, args, backend, samples)
    emit(out, args.out)


if __name__ == "__main__":
    main()
