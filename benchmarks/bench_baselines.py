"""The baselines' direction finding against a faithful loop of their official code, side by
side on the same UNet and inputs: is a baseline at least as fast as its authors' code
(a slow baseline would flatter SAD in the editing-time table)?

pullback: the local basis (``attnedit.methods.local_basis.power_method``) against a
per-iteration loop of Diffusion-Pullback's ``local_encoder_pullback_xt``
(enkeejunior1/Diffusion-Pullback@859c012, src/utils/utils.py:165-249), written here:
per iteration, J V by ``torch.func.jacfwd`` of h(x + a v_i) in a at a = 0 over chunks of
``chunk_size`` (25) vectors (:206-216; every chunk is copied to the host and back, as
there), then the Jacobian of the summed projections sum_hw <u_i, h(x)> with
``torch.autograd.functional.jacobian`` (one forward, one backward per vector; :225-230),
then the SVD of that (rank x D) matrix (:233); stop test ``allclose`` on host copies
(:240). Both start from the same orthonormal V and run exactly ``--iters`` iterations.
Printed: seconds per round of each side (interleaved rounds, the order swapped every round,
so load on a shared host falls on both), the ratio official / attnedit of the medians,
and the agreement of the top singular values with each other and, with ``--exact``, with
the SVD of the full Jacobian (its rows by reverse mode).

hspace: the per-step PCA of h-space PCA (``attnedit.methods.hspace_pca.per_step_pca``)
against the reference's incremental PCA (renhaa/semantic-diffusion@91f0a15,
editing/incremental_pca.py:30-42: sklearn ``IncrementalPCA(n_components=25)``, one per
sampler step, ``partial_fit`` per batch of 1000 samples). sklearn is not a dependency:
the incremental update (Ross et al. 2008, as sklearn's ``partial_fit``: SVD of the stacked
[previous s_k u_k; the batch centered on its mean; the mean-shift row], float32 input kept
float32) is written here in numpy. Features are synthetic (N, D) float32 per step with a
decaying spectrum: the time depends only on N, D, steps and k. A third side is the plain
float64 SVD of the centered matrix (what per_step_pca computed before its Gram route).
Printed: seconds of each side for all steps, the ratio reference / attnedit, and the
largest difference of the top singular values and smallest |cos| of the components of
each side against the SVD's.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_baselines.py --rank 8 16 --iters 50
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_baselines.py --only hspace
    python benchmarks/bench_baselines.py --device cuda --model celebahq --rank 50 --iters 3   # GPU
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_baselines.py --model tiny --rank 2 --iters 1 --quick  # the code paths, small

``measure_pullback(...)`` and ``measure_hspace(...)`` return the numbers as dicts (gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "attnedit" / "assets" / "shapes_ddpm"


# -- the official pullback loop, in this file's own code ------------------------------------
def official_local_basis(f: Callable[[Tensor], Tensor], x: Tensor, v0: Tensor, iters: int,
                         chunk_size: int = 25, min_iters: int = 10, tol: float = 1e-4) -> tuple[Tensor, Tensor, int]:
    """(vT (rank, D), s (rank,), iterations) of Algorithm 1 as utils.py:165-249 runs it on one
    x_t (1, C, H, W) from the start ``v0`` (rank, C, H, W); ``f`` is x -> h(x)."""
    rank = len(v0)
    chunks = -(-rank // chunk_size)
    a = torch.tensor(0.0, device=x.device, dtype=x.dtype)
    v, s = v0.to(x.device, x.dtype), None
    for i in range(iters):
        v_prev = v.detach().cpu().clone()
        parts = []
        for vi in v.chunk(chunks):
            ui = torch.func.jacfwd(lambda a_, vi=vi: f(x + a_ * vi), argnums=0, randomness="error")(a)
            parts.append(ui.detach().cpu().clone())
        u = torch.cat(parts).to(x.device, x.dtype)

        def projections(z: Tensor) -> Tensor:
            return torch.einsum("bchw,ichw->b", u, f(z))

        w = torch.autograd.functional.jacobian(projections, x).view(rank, -1)
        _, s, vh = torch.linalg.svd(w, full_matrices=False)
        v = vh.view_as(v0)
        if torch.allclose(v_prev, v.detach().cpu(), atol=tol) and i > min_iters:
            return vh, s.sqrt(), i + 1
    return v.flatten(1), s.sqrt(), iters


def exact_singular_values(f: Callable[[Tensor], Tensor], x: Tensor, k: int, batch: int = 256) -> Tensor:
    """Top k singular values of the full Jacobian dh/dx at x (1, C, H, W), float64: its rows
    J^T e_j by reverse mode, ``batch`` at a time."""
    with torch.enable_grad():
        h, pullback = torch.func.vjp(f, x)
    eye = torch.eye(h.numel(), device=x.device, dtype=x.dtype)
    rows = [torch.func.vmap(lambda c: pullback(c.view_as(h))[0].flatten())(eye[i: i + batch])
            for i in range(0, h.numel(), batch)]
    return torch.linalg.svdvals(torch.cat(rows).double())[:k].cpu()


# -- the reference's incremental PCA, in this file's own code --------------------------------
class IncrementalPCA:
    """sklearn's IncrementalPCA.partial_fit (Ross et al. 2008) in numpy: the state is
    (components (k, D), singular values (k,), mean (D,), samples seen)."""

    def __init__(self, k: int) -> None:
        self.k, self.components, self.singular_values, self.mean, self.seen = k, None, None, None, 0

    def partial_fit(self, batch: np.ndarray) -> None:
        n = len(batch)
        batch_mean = batch.mean(0)
        total = self.seen + n
        mean = batch_mean if self.seen == 0 else (self.seen * self.mean + n * batch_mean) / total
        centered = batch - batch_mean
        if self.seen:
            shift = np.sqrt(self.seen * n / total) * (self.mean - batch_mean)
            centered = np.vstack([self.singular_values[:, None] * self.components, centered, shift[None]])
        _, s, vh = np.linalg.svd(centered.astype(batch.dtype, copy=False), full_matrices=False)
        picked = vh[np.arange(len(vh)), np.abs(vh).argmax(1)]  # svd_flip(u_based_decision=False)
        vh = vh * np.where(picked < 0, -1.0, 1.0).astype(vh.dtype)[:, None]
        self.components, self.singular_values, self.mean, self.seen = vh[: self.k], s[: self.k], mean, total


# -- timing ------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu, out


def interleaved(sides: dict[str, Callable[[], Any]], rounds: int, device: torch.device) -> tuple[dict, dict, dict]:
    """({side: wall seconds per round}, {side: CPU seconds per round}, {side: last result}):
    each round runs every side once, the order reversed on odd rounds."""
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, Any] = {}
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            seconds, cpu_seconds, results[name] = timed(sides[name], device)
            wall[name].append(round(seconds, 3))
            cpu[name].append(round(cpu_seconds, 3))
    return wall, cpu, results


def ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    return round(float(np.median(times[slow]) / np.median(times[fast])), 3)


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


# -- pullback ------------------------------------------------------------------------------
def model_and_state(model: str, device: str, folder: Path, timestep: int):
    """(UNet on the device, x_t (C, H, W) of seed 0 at ``timestep``): the shipped shapes DDPM,
    or the CelebA-HQ / tiny architectures with seeded random weights."""
    from diffusers import DDPMScheduler, UNet2DModel

    from attnedit.backends.ddpm import DDPMBackend
    from attnedit.backends.tiny import CELEBAHQ_UNET, SCHEDULER, TINY_UNET
    from attnedit.methods.per_sample import state_at

    path = SHIPPED
    if model != "shapes":
        torch.manual_seed(0)
        path = folder / model
        UNet2DModel(**(CELEBAHQ_UNET if model == "celebahq" else TINY_UNET)).save_pretrained(path)
        DDPMScheduler(**SCHEDULER).save_pretrained(path)
    backend = DDPMBackend(str(path), device=device, num_inference_steps=50)
    return backend, state_at(backend, 0, timestep)


def measure_pullback(device: str = "cpu", model: str = "shapes", ranks=(8, 16), iters: int = 50, rounds: int = 2,
                     timestep: int = 980, exact: bool = False, chunk_size: int = 25) -> list[dict[str, Any]]:
    """Per rank: seconds of the official loop and of power_method (each round both, exactly
    ``iters`` iterations), their ratio, and the singular values' agreement."""
    from attnedit.methods.local_basis import h_space, plain_attention, power_method

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backend, x = model_and_state(model, device, Path(tmp), timestep)
        dev = backend.device
        with plain_attention(backend.unet):
            f = h_space(backend.unet, timestep)
            for rank in ranks:
                # power_method's own start (seed 0), given to the official loop too
                start = torch.randn(x.numel(), rank, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
                v0 = torch.linalg.qr(start)[0].T.to(dev, x.dtype).view(rank, *x.shape)
                sides = {
                    "official": lambda: official_local_basis(f, x[None], v0, iters, chunk_size, min_iters=iters, tol=1e-30),
                    "attnedit": lambda: power_method(f, x, rank, min_iters=iters, max_iters=iters, tol=1e-30, seed=0),
                }
                timed(lambda: power_method(f, x, rank, min_iters=1, max_iters=1, seed=0), dev)  # warm-up
                before = load()
                wall, cpu, results = interleaved(sides, rounds, dev)
                ours, theirs = results["attnedit"].singular_values.double(), results["official"][1].double().cpu()
                row = {"model": model, "device": str(dev), "rank": rank, "iters": iters, "timestep": timestep,
                       "official_s": wall["official"], "attnedit_s": wall["attnedit"],
                       "official_cpu_s": cpu["official"], "attnedit_cpu_s": cpu["attnedit"],
                       "ratio_wall": ratio(wall, "official", "attnedit"), "ratio_cpu": ratio(cpu, "official", "attnedit"),
                       "max_abs_s_attnedit_vs_official": float((ours - theirs).abs().max()),
                       "s_top": float(ours[0]), "load": f"{before} -> {load()}"}
                if exact:
                    want = exact_singular_values(f, x[None], rank)
                    row["max_abs_s_attnedit_vs_exact"] = float((ours - want).abs().max())
                    row["max_abs_s_official_vs_exact"] = float((theirs - want).abs().max())
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


# -- h-space PCA -------------------------------------------------------------------------------
def synthetic_features(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) float32 with singular values decaying as 1 / (1 + j) around a random mean."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, min(n, d))))[0]
    scores = rng.standard_normal((n, min(n, d))) / (1.0 + np.arange(min(n, d)))
    return (scores @ basis.T + rng.standard_normal(d)).astype(np.float32)


def svd_pca(features: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The plain route (and per_step_pca's implementation before the Gram matrix): the SVD of
    the centered float64 matrix, signs as per_step_pca."""
    x = features.double()
    _, s, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    picked = vh[:k].gather(1, vh[:k].abs().argmax(dim=1, keepdim=True)).squeeze(1)
    return vh[:k] * torch.where(picked < 0, -1.0, 1.0).to(vh.dtype)[:, None], s[:k]


def measure_hspace(device: str = "cpu", n: int = 1000, d: int = 1024, steps: int = 50, k: int = 25,
                   batch: int = 1000, rounds: int = 2) -> dict[str, Any]:
    """Seconds to fit every step's PCA: the reference's incremental PCA (batches of ``batch``,
    on the host as sklearn), ``per_step_pca`` and the plain float64 SVD (both on ``device``,
    as HSpacePCA.discover), interleaved; agreement of each with the SVD."""
    from attnedit.methods.hspace_pca import per_step_pca

    dev = torch.device(device)
    features = [synthetic_features(n, d, seed) for seed in range(steps)]
    on_device = [torch.from_numpy(f).to(dev) for f in features]

    def reference():
        fits = []
        for f in features:
            ipca = IncrementalPCA(k)
            for i in range(0, n, batch):
                ipca.partial_fit(f[i: i + batch])
            fits.append((torch.from_numpy(ipca.components).double(), torch.from_numpy(ipca.singular_values).double()))
        return fits

    sides = {"reference": reference, "attnedit": lambda: [per_step_pca(f, k) for f in on_device],
             "svd": lambda: [svd_pca(f, k) for f in on_device]}
    timed(lambda: (per_step_pca(on_device[0], k), svd_pca(on_device[0], k)), dev)  # warm-up
    before = load()
    wall, cpu, results = interleaved(sides, rounds, dev)

    def apart(name: str) -> tuple[float, float]:
        """(largest |s - s_svd| / s_svd[0], smallest |cos| of a component with the SVD's)."""
        s_diff, cos_min = 0.0, 1.0
        for (u, s), (u0, s0) in zip(results[name], results["svd"]):
            u, s, u0, s0 = u.cpu(), s.cpu(), u0.cpu(), s0.cpu()
            s_diff = max(s_diff, float((s - s0).abs().max() / s0[0]))
            cos_min = min(cos_min, float((u * u0).sum(1).abs().min()))
        return s_diff, cos_min

    row = {"n": n, "d": d, "steps": steps, "k": k, "batch": batch, "device": str(dev),
           **{f"{name}_s": wall[name] for name in sides}, **{f"{name}_cpu_s": cpu[name] for name in sides},
           "ratio_wall": ratio(wall, "reference", "attnedit"), "ratio_cpu": ratio(cpu, "reference", "attnedit"),
           "ratio_svd_wall": ratio(wall, "svd", "attnedit"), "load": f"{before} -> {load()}"}
    for name in ("attnedit", "reference"):
        row[f"{name}_vs_svd_max_rel_s"], row[f"{name}_vs_svd_min_abs_cos"] = apart(name)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["pullback", "hspace"], default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=["shapes", "celebahq", "tiny"], default="shapes")
    parser.add_argument("--rank", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--exact", action="store_true", help="also the exact SVD of the full Jacobian (small models)")
    parser.add_argument("--samples", type=int, default=1000, help="h-space PCA: samples per step")
    parser.add_argument("--dims", type=int, default=1024, help="h-space PCA: h dimension (shapes DDPM: 1024)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="small sizes: the code path, not a measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load {load()}")
    if args.only in (None, "pullback"):
        measure_pullback(args.device, args.model, args.rank, args.iters, 1 if args.quick else args.rounds,
                         exact=args.exact)
    if args.only in (None, "hspace"):
        if args.quick:
            measure_hspace(args.device, n=64, d=128, steps=2, k=4, batch=32, rounds=1)
        else:
            measure_hspace(args.device, args.samples, args.dims, args.steps, rounds=args.rounds)


if __name__ == "__main__":
    main()
