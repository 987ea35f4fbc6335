"""The local basis of x_t (Park et al., NeurIPS 2023): top right singular vectors of the
Jacobian J = d h / d x_t, h = the UNet mid-block output ("h-space").

J is never formed. Subspace iteration on J^T J uses forward-mode products J V
(torch.func.jvp) and reverse-mode products J^T U (torch.func.vjp), with a QR between
iterations; a final Rayleigh-Ritz step (SVD of the small matrix J V) orders the vectors
by singular value. The k vectors of one sample travel as a batch of k copies of x_t: the
UNet treats batch elements independently, so row i of the batched product is J v_i.

Convergence: the subspace change ||V_new - P_old V_new||_F (P_old the projector onto
the previous span; about the sine of the largest principal angle) below ``tol``. The
public code compares successive vectors entry-wise instead, which sign flips defeat.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor
from torch import Tensor, nn


@dataclass
class LocalBasis:
    vectors: Tensor  # (k, C, H, W): unit right singular vectors in x-space, canonical signs
    singular_values: Tensor  # (k,) float64, descending
    iterations: int
    residual: float  # subspace change at the last iteration
    converged: bool
    h_norm: float  # ||h(x_t)||, for edits scaled to the feature size


class _MidBlockOutput(Exception):
    def __init__(self, h: Tensor) -> None:
        self.h = h


@contextlib.contextmanager
def plain_attention(unet: nn.Module) -> Iterator[None]:
    """Swap every attention processor for diffusers' plain-math one: fused attention
    kernels (SDPA flash/efficient) have no forward-mode derivative. Restored on exit."""
    saved = [(m, m.processor) for m in unet.modules() if isinstance(m, Attention)]
    try:
        for module, _ in saved:
            module.set_processor(AttnProcessor())
        yield
    finally:
        for module, processor in saved:
            module.set_processor(processor)


def h_space(unet: nn.Module, timestep: int) -> Callable[[Tensor], Tensor]:
    """x_t (B, C, H, W) -> unet.mid_block output at ``timestep``; the up path never runs
    (a forward hook on mid_block stops the forward with its output)."""
    t = torch.tensor(int(timestep))

    def stop(module, args, output):
        raise _MidBlockOutput(output[0] if isinstance(output, tuple) else output)

    def f(x: Tensor) -> Tensor:
        handle = unet.mid_block.register_forward_hook(stop)
        try:
            unet(x, t.to(x.device))
        except _MidBlockOutput as captured:
            return captured.h
        finally:
            handle.remove()
        raise RuntimeError("unet.mid_block did not run; h-space needs a UNet with a mid block")

    return f


def canonical_signs(vectors: Tensor) -> Tensor:
    """Flip each row so its largest-magnitude entry is positive (as SAD's directions)."""
    flat = vectors.flatten(1)
    picked = flat.gather(1, flat.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    signs = torch.where(picked < 0, -1.0, 1.0).to(vectors.dtype)
    return vectors * signs.view(-1, *([1] * (vectors.ndim - 1)))


def _orthonormal_rows(w: Tensor) -> Tensor:
    q, _ = torch.linalg.qr(w.flatten(1).T.to(torch.promote_types(w.dtype, torch.float32)))
    return q.T.to(w.dtype).view_as(w)


def _subspace_change(old: Tensor, new: Tensor) -> float:
    old, new = old.flatten(1).double(), new.flatten(1).double()
    return float((new - (new @ old.T) @ old).norm())


def subspace_iteration(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    k: int,
    max_iters: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
) -> LocalBasis:
    """Top-k right singular vectors of the Jacobian of ``f`` at one sample ``x`` (C, H, W).

    ``f`` maps a batch to a batch and must treat elements independently. The start
    subspace is seeded (drawn on the CPU), so a sample gets the same basis everywhere.
    """
    if k < 1 or max_iters < 1:
        raise ValueError(f"need k >= 1 and max_iters >= 1, got k={k}, max_iters={max_iters}")
    if k > x.numel():
        raise ValueError(f"k={k} singular vectors asked for, but x_t has only {x.numel()} entries")
    x_batch = x.detach().unsqueeze(0).expand(k, *x.shape).contiguous()
    start = torch.randn(k, *x.shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    v = _orthonormal_rows(start.to(x.device, x.dtype))
    with torch.enable_grad():
        h, pullback = torch.func.vjp(f, x_batch)  # linearized once at x_t, reused every iteration
        residual, iterations = float("inf"), 0
        for iterations in range(1, max_iters + 1):
            _, u = torch.func.jvp(f, (x_batch,), (v,))  # J v_i
            v_next = _orthonormal_rows(pullback(u)[0])  # orth(J^T J V)
            residual = _subspace_change(v, v_next)
            v = v_next
            if residual < tol:
                break
        _, u = torch.func.jvp(f, (x_batch,), (v,))
    # Rayleigh-Ritz: J V^T = P S Q^T, so the right singular vectors are the rows of Q^T V.
    _, s, qt = torch.linalg.svd(u.flatten(1).double().T, full_matrices=False)
    vectors = (qt @ v.flatten(1).double()).to(x.dtype).view_as(v)
    h_norm = float(h[0].detach().double().norm())
    return LocalBasis(canonical_signs(vectors).detach(), s.detach().cpu(), iterations, residual, residual < tol, h_norm)
