"""What SAD's alpha means under each ``alpha_scale``, and what the ambiguous readings of
the paper change: the measurements quoted in experiments/celebahq_sad/README.md.

The paper writes Z' = Z + alpha n (n a unit eigenvector, alpha in [-0.4, 0.4]);
``alpha_scale=unit`` is that literal reading, ``token_norm`` multiplies alpha by the mean
token norm of Z at that step (methods/injection.py). Three parts:

A. shapes: the shipped trained shapes DDPM (model=shapes_ddpm), 50 DDIM steps: PSNR/SSIM
   of each edit against the unedited sample at |alpha| = 0.4 under both modes, the mean
   token norm of Z in the window (the factor between the modes), and the unit alpha that
   gives the token_norm edit's size.
B. celebahq: the google/ddpm-ema-celebahq-256 architecture with seeded random weights
   (no hub here; ``--celebahq-model google/ddpm-ema-celebahq-256`` measures the trained one): the mean token norm of Z at mid_block.attentions.0 inside the window,
   and the relative change each mode makes at alpha 0.4 to Z, to the attention layer's
   output and to the UNet's noise prediction, one step at a time on the unedited path.
C. readings (shapes model, token_norm, alpha 0.4, 50 DDIM steps): strict vs inclusive
   window bounds (how many steps fall on a bound, the PSNR each reading gives and between
   them) and C = sum W^T W (in x in, the harness) vs sum W W^T (out x out; same size for
   these square layers).

    python experiments/celebahq_sad/measure_alpha_scale.py [--parts shapes,celebahq,readings]
        [--samples 8] [--shapes-steps 50] [--celebahq-samples 2] [--celebahq-steps 10]
        [--celebahq-model ID_OR_DIR] [--device cpu] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attnedit.assets import asset_path
from attnedit.backends.ddpm import DDPMBackend
from attnedit.backends.tiny import CELEBAHQ_UNET, build_tiny_ddpm
from attnedit.data.base import Sample
from attnedit.methods.directions import canonical_signs, sad_directions
from attnedit.methods.injection import inject_directions
from attnedit.metrics.fidelity import PSNR, SSIM

ALPHA = 0.4
WINDOW = (0.5, 0.8)
INCLUSIVE = (0.4999, 0.8001)  # strict bounds around integer timesteps = the inclusive reading of (0.5, 0.8)


def samples(seeds) -> list[Sample]:
    return [Sample(id=f"seed{s}", seed=int(s)) for s in seeds]


def generate(backend, layer: str, vectors: np.ndarray, alphas, seeds, alpha_scale="token_norm", window=WINDOW):
    """Every (vector, alpha) edit of every seed in one batch, edit-major."""
    batch = samples(seeds) * len(vectors)
    dirs = torch.from_numpy(np.repeat(vectors, len(seeds), axis=0)).float()
    alpha = torch.tensor(np.repeat(alphas, len(seeds)), dtype=torch.float32)
    attn = backend.self_attention_layers()[layer]
    with inject_directions(backend.unet, {layer: attn}, {layer: dirs}, alpha, num_train_timesteps=backend.num_train_timesteps,
                           window=window, alpha_scale=alpha_scale):
        return backend.generate(batch)


def fidelity(edited: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    ref = reference.repeat(len(edited) // len(reference), 1, 1, 1)
    return {"psnr": float(PSNR()(edited, ref)["psnr"].mean()), "ssim": float(SSIM()(edited, ref)["ssim"].mean()),
            "ssim_border_pad": float(SSIM(border="pad")(edited, ref)["ssim"].mean()),  # the torchmetrics 1.5+ reading
            "rms_change": float((edited - ref).pow(2).mean().sqrt())}


def token_norms(backend, layer: str, seeds, window=WINDOW) -> dict[int, float]:
    """Mean over samples of the mean token norm of Z (the GroupNorm output feeding to_q/k/v),
    per timestep inside ``window``, on the unedited path."""
    lo, hi = window[0] * backend.num_train_timesteps, window[1] * backend.num_train_timesteps
    attn, state, found = backend.self_attention_layers()[layer], {}, {}

    def on_call(_, args, kwargs):
        state["t"] = int(torch.as_tensor(kwargs.get("timestep", args[1] if len(args) > 1 else None)).flatten()[0])

    def on_norm(_, __, out):
        if lo < state["t"] < hi:
            found[state["t"]] = float(out.double().flatten(2).norm(dim=1).mean())

    handles = [backend.unet.register_forward_pre_hook(on_call, with_kwargs=True),
               attn.group_norm.register_forward_hook(on_norm)]
    try:
        backend.generate(samples(seeds))
    finally:
        for h in handles:
            h.remove()
    return found


def part_shapes(args) -> dict:
    backend = DDPMBackend(asset_path("shapes_ddpm"), device=args.device, num_inference_steps=args.shapes_steps)
    layer = "down_blocks.1.attentions.0"  # conf/model/shapes_ddpm.yaml: edit_layers
    directions = sad_directions(backend.self_attention_layers()[layer]).eigenvectors[: args.directions]
    seeds = list(range(args.samples))
    reference = backend.generate(samples(seeds))
    norms = token_norms(backend, layer, seeds)
    factor = float(np.mean(list(norms.values())))
    out = {"model": "shapes_ddpm (shipped, trained)", "layer": layer, "steps": args.shapes_steps, "samples": len(seeds),
           "directions": args.directions, "mean_token_norm_in_window": factor,
           "token_norm_by_t": {str(t): round(v, 4) for t, v in sorted(norms.items(), reverse=True)}, "rows": []}
    vectors = np.concatenate([directions, directions])
    alphas = np.array([ALPHA] * len(directions) + [-ALPHA] * len(directions))
    for scale, alpha_values in (("unit", alphas), ("token_norm", alphas), ("unit", alphas * factor)):
        edited = generate(backend, layer, vectors, alpha_values, seeds, alpha_scale=scale)
        label = f"{scale} alpha=±{abs(alpha_values[0]):.3g}"
        out["rows"].append({"setting": label, **fidelity(edited, reference)})
    control = generate(backend, layer, directions[:1], np.array([0.0]), seeds)  # the noise floor: alpha 0
    out["rows"].append({"setting": "alpha=0 (control)", **fidelity(control, reference)})
    return out


def part_celebahq(args) -> dict:
    if args.celebahq_model is not None:
        return measure_celebahq(args, args.celebahq_model, random=False)
    with tempfile.TemporaryDirectory(prefix="celebahq_random_") as folder:  # the real config, seeded random weights
        return measure_celebahq(args, build_tiny_ddpm(Path(folder) / "unet", seed=0, **CELEBAHQ_UNET), random=True)


@torch.no_grad()
def measure_celebahq(args, path, random: bool) -> dict:
    backend = DDPMBackend(str(path), device=args.device, num_inference_steps=args.celebahq_steps, random_weights=random)
    layer = "mid_block.attentions.0"
    attn = backend.self_attention_layers()[layer]
    n = torch.from_numpy(sad_directions(attn).eigenvectors[:1]).float()
    seeds = list(range(args.celebahq_samples))
    lo, hi = WINDOW[0] * backend.num_train_timesteps, WINDOW[1] * backend.num_train_timesteps
    state, taps = {}, {}

    def on_call(_, args_, kwargs):
        state["t"] = int(torch.as_tensor(kwargs.get("timestep", args_[1] if len(args_) > 1 else None)).flatten()[0])
        state["x"] = (kwargs.get("sample", args_[0] if args_ else None)).detach().clone()

    def tap(name):
        def hook(_, __, out):
            taps[name] = (out[0] if isinstance(out, tuple) else out).detach().double().clone()
        return hook

    steps: dict[int, dict] = {}

    def on_unet(_, __, out):
        if lo < state["t"] < hi:
            steps[state["t"]] = {"x": state["x"], "z": taps["z"], "attn": taps["attn"], "eps": out.sample.double().clone()}

    handles = [backend.unet.register_forward_pre_hook(on_call, with_kwargs=True),
               attn.group_norm.register_forward_hook(tap("z")), attn.register_forward_hook(tap("attn")),
               backend.unet.register_forward_hook(on_unet)]
    start = time.perf_counter()
    try:
        backend.generate(samples(seeds))  # the unedited path; Z, the layer output and eps inside the window
        rows = []
        for t, seen in sorted(steps.items(), reverse=True):
            z = seen["z"]
            norm = z.flatten(2).norm(dim=1).mean(dim=1)  # per sample
            row = {"t": t, "mean_token_norm": float(norm.mean())}
            for scale in ("unit", "token_norm"):
                dirs, alphas = n.expand(len(seeds), -1), torch.full((len(seeds),), ALPHA)
                with inject_directions(backend.unet, {layer: attn}, {layer: dirs}, alphas,
                                       num_train_timesteps=backend.num_train_timesteps, window=WINDOW, alpha_scale=scale):
                    edited_tap = attn.group_norm.register_forward_hook(tap("z_edit"))  # after the injection hook
                    try:
                        eps = backend.unet(seen["x"], t).sample.double()
                    finally:
                        edited_tap.remove()
                attn_out, z_edit = taps["attn"], taps["z_edit"]
                rel = lambda a, b: float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).mean())
                row[scale] = {"z_token_change": float(((z_edit - z).flatten(2).norm(dim=1).mean(dim=1) / norm).mean()),
                              "attn_output_change": rel(attn_out, seen["attn"]), "eps_change": rel(eps, seen["eps"])}
            rows.append(row)
    finally:
        for h in handles:
            h.remove()
    factor = float(np.mean([r["mean_token_norm"] for r in rows]))
    model = "google/ddpm-ema-celebahq-256 architecture, RANDOM weights (seed 0)" if random else str(path)
    return {"model": model, "layer": layer,
            "steps": args.celebahq_steps, "samples": len(seeds), "device": str(backend.device),
            "seconds": round(time.perf_counter() - start, 1), "mean_token_norm_in_window": factor, "by_t": rows}


def part_readings(args) -> dict:
    backend = DDPMBackend(asset_path("shapes_ddpm"), device=args.device, num_inference_steps=args.shapes_steps)
    layer = "down_blocks.1.attentions.0"
    attn = backend.self_attention_layers()[layer]
    timesteps = backend.timesteps()
    T = backend.num_train_timesteps
    strict = [t for t in timesteps if WINDOW[0] * T < t < WINDOW[1] * T]
    inclusive = [t for t in timesteps if WINDOW[0] * T <= t <= WINDOW[1] * T]
    seeds = list(range(args.samples))
    reference = backend.generate(samples(seeds))
    wtw = sad_directions(attn).eigenvectors[: args.directions]
    mats = [getattr(attn, k).weight.detach().double().cpu().numpy() for k in ("to_q", "to_k", "to_v")]
    values, vectors = np.linalg.eigh(sum(w @ w.T for w in mats))
    wwt = canonical_signs(vectors[:, np.argsort(values)[::-1]].T)[: args.directions]
    vectors2 = np.concatenate([wtw, -wtw])
    alphas = np.array([ALPHA] * (2 * len(wtw)))  # +n and -n at +0.4 (= -0.4 along n)
    a = generate(backend, layer, vectors2, alphas, seeds)
    b = generate(backend, layer, vectors2, alphas, seeds, window=INCLUSIVE)
    c = generate(backend, layer, np.concatenate([wwt, -wwt]), alphas, seeds)
    overlap = np.abs(wtw @ wwt.T)
    return {
        "model": "shapes_ddpm (shipped, trained)", "layer": layer, "steps": args.shapes_steps, "samples": len(seeds),
        "directions": args.directions, "alpha_scale": "token_norm", "alpha": ALPHA,
        "window": {"on_bounds": [t for t in timesteps if t in (WINDOW[0] * T, WINDOW[1] * T)],
                   "strict_steps": len(strict), "inclusive_steps": len(inclusive),
                   "strict": fidelity(a, reference), "inclusive": fidelity(b, reference),
                   "strict_vs_inclusive_psnr": float(PSNR()(a, b)["psnr"].mean())},
        "matrix": {"WtW": fidelity(a, reference), "WWt": fidelity(c, reference),
                   "WtW_vs_WWt_psnr": float(PSNR()(a, c)["psnr"].mean()),
                   "abs_cos_top_directions": [round(float(v), 4) for v in np.diag(overlap)],
                   "max_abs_cos_any_pair": round(float(overlap.max()), 4)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="shapes,celebahq,readings")
    parser.add_argument("--samples", type=int, default=8, help="shapes samples (parts shapes, readings)")
    parser.add_argument("--shapes-steps", type=int, default=50, help="DDIM steps on the shapes model (the study's 50)")
    parser.add_argument("--directions", type=int, default=4)
    parser.add_argument("--celebahq-samples", type=int, default=2)
    parser.add_argument("--celebahq-steps", type=int, default=10)
    parser.add_argument("--celebahq-model", default=None,
                        help="hub id or folder of trained weights (google/ddpm-ema-celebahq-256); default: random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the results as JSON")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # rounding stays below the edits
    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for part in args.parts.split(","):
        results[part] = {"shapes": part_shapes, "celebahq": part_celebahq, "readings": part_readings}[part](args)
        print(json.dumps({part: results[part]}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
