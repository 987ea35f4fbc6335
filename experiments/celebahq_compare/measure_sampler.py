"""What the two sampler options change, on the shipped trained shapes DDPM
(experiments/shapes_ddpm/, 20 DDIM steps, eta 0): the numbers behind ``model.clip_sample``
and h-space PCA's ``edit_eta`` in experiments/celebahq_compare/README.md.

1. ``clip_sample``: the unedited samples with DDIM's x0 clipping (the checkpoint's config,
   as diffusers' DDIMPipeline) against the same seeds unclipped (the baselines' own
   samplers); then a SAD edit (the quickstart's: top directions of the model's edit layer,
   ``--sad-alpha``) under each, as the two edited images against each other and as the
   fidelity each sampler's table would report (edit against its own unedited sample), and
   the share of saturated pixels (0 or 1) of the unedited samples.
2. ``edit_eta``: h-space PCA (``--num-samples`` eta-1 discovery samples, published edit
   a = alpha x 0.1 at 50000 rows) edited at eta 0 (the study's sampler) and at eta 1 with
   each sample's stored noise (the reference's): fidelity against each one's own unedited
   sample, the eta-1 edits against the eta-0 sample (what scoring against the study's
   reference would charge), and ``delta_h_ratio``.

    python experiments/celebahq_compare/measure_sampler.py --out sampler_options.json
"""

from __future__ import annotations

import argparse
import time

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from attnedit.assets import asset_path
from attnedit.backends.ddpm import DDPMBackend
from attnedit.data.base import Sample
from attnedit.methods.hspace_pca import HSpacePCA
from attnedit.methods.sad import SAD

from measurements import emit  # this folder's shared output (a script's own folder is on sys.path)


def scores(images, reference) -> dict[str, float]:
    psnr = peak_signal_noise_ratio(images, reference, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(images, reference, data_range=1.0, reduction="none")
    finite = psnr[torch.isfinite(psnr)]
    return {"psnr_mean": float(finite.mean()) if len(finite) else float("inf"),
            "psnr_min": float(finite.min()) if len(finite) else float("inf"),
            "ssim_mean": float(ssim.mean()), "ssim_min": float(ssim.min()),
            "max_abs_diff": float((images - reference).abs().max())}


def edited(backend, method, samples) -> tuple[torch.Tensor, list[dict]]:
    """Every edit of ``method`` on every sample (batch: one sample's edits)."""
    images, extras = [], []
    for sample in samples:
        edits = method.edits()
        with method.control(backend, edits) as control:
            images.append(backend.generate([sample] * len(edits), control))
        extras += control.row_extras or [{}] * len(edits)
    return torch.cat(images), extras


def clip_sample(device: str, samples: list[Sample], directions: int, alpha: float) -> dict:
    out, unedited, edits = {}, {}, {}
    for clip in (True, False):
        backend = DDPMBackend(str(asset_path("shapes_ddpm")), device=device, num_inference_steps=20, clip_sample=clip)
        method = SAD(directions=directions, alphas=[-alpha, alpha], layers=["down_blocks.1.attentions.0"])
        method.setup(backend)
        unedited[clip] = torch.cat([backend.reference([s]) for s in samples])
        edits[clip], _ = edited(backend, method, samples)
        reference = unedited[clip].repeat_interleave(len(method.edits()), dim=0)
        out[f"edit_vs_own_unedited_clip_{clip}"] = scores(edits[clip], reference)
        out[f"unedited_saturated_share_clip_{clip}"] = float(((unedited[clip] <= 0) | (unedited[clip] >= 1)).float().mean())
    out["unedited_clipped_vs_unclipped"] = scores(unedited[False], unedited[True])
    out["edit_clipped_vs_unclipped"] = scores(edits[False], edits[True])
    out["settings"] = {"samples": len(samples), "sad_directions": directions, "sad_alphas": [-alpha, alpha],
                       "layer": "down_blocks.1.attentions.0", "steps": 20}
    return out


def edit_eta(device: str, samples: list[Sample], directions: int, num_samples: int) -> dict:
    backend = DDPMBackend(str(asset_path("shapes_ddpm")), device=device, num_inference_steps=20)
    out = {"settings": {"samples": len(samples), "directions": directions, "alphas": [-1.0, 1.0],
                        "strength": 0.1, "num_samples": num_samples, "steps": 20}}
    unedited_eta0 = torch.cat([backend.reference([s]) for s in samples])
    for eta in (None, 1.0):
        method = HSpacePCA(directions=directions, alphas=[-1.0, 1.0], num_samples=num_samples, edit_eta=eta,
                           progress=False)
        start = time.perf_counter()
        method.setup(backend)
        images, extras = edited(backend, method, samples)
        per_sample = len(method.edits())
        sampler = method.sampler_control(backend)
        own = unedited_eta0 if sampler is None else torch.cat([backend.generate([s], sampler) for s in samples])
        name = f"eta_{method.sampler_eta:g}"
        out[name] = {
            "vs_own_unedited": scores(images, own.repeat_interleave(per_sample, dim=0)),
            "vs_eta0_unedited": scores(images, unedited_eta0.repeat_interleave(per_sample, dim=0)),
            "own_unedited_vs_eta0_unedited": scores(own, unedited_eta0),
            "delta_h_ratio_mean": sum(e["delta_h_ratio"] for e in extras) / len(extras),
            "seconds": time.perf_counter() - start,
        }
        out.setdefault("_images", {})[name] = images
    out["eta1_edit_vs_eta0_edit"] = scores(out["_images"]["eta_1"], out["_images"]["eta_0"])
    del out["_images"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--directions", type=int, default=4)
    parser.add_argument("--sad-alpha", type=float, default=0.6, help="the quickstart's largest |alpha|")
    parser.add_argument("--num-samples", type=int, default=200, help="h-space PCA discovery samples")
    parser.add_argument("--only", choices=["clip_sample", "edit_eta"], default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    samples = [Sample(id=f"seed{s}", seed=s) for s in range(args.samples)]
    out = {}
    if args.only in (None, "clip_sample"):
        out["clip_sample"] = clip_sample(args.device, samples, args.directions, args.sad_alpha)
    if args.only in (None, "edit_eta"):
        out["edit_eta"] = edit_eta(args.device, samples, args.directions, args.num_samples)
    emit(out, args.out)


if __name__ == "__main__":
    main()
