"""attnedit from Python, in one's own diffusers pipelines (README: "Using attnedit from Python").

- :func:`sad_directions`: SAD editing directions of a UNet2DModel self-attention layer.
- :func:`inject_directions`: a context manager adding ``alpha * n`` to that layer's input
  while ``0.5 T < t < 0.8 T``, around a user's DDIMPipeline (or any loop calling the UNet).
- :func:`bias_delta_guidance`: GRAG / DCAG on the condition-image tokens of an MM-DiT
  (QwenImageEditPipeline's transformer, or FLUX.1 Kontext's), around a pipeline call.
- :func:`piebench_metrics` / :func:`piebench_metric`: the PIE-Bench metrics (official
  conventions, :mod:`attnedit.metrics.piebench`) on tensors and masks.

These are the functions the benchmark runs (``method=sad``, ``method=dcag``,
``metrics=piebench``), with the same defaults; they are importable from ``attnedit``
directly and loaded on first use, so ``import attnedit`` imports no torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from attnedit.backends.layers import select_layers, self_attention_layers
from attnedit.errors import ConfigError
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from attnedit.methods.directions import LayerDirections
from attnedit.methods.directions import sad_directions as _layer_directions
from attnedit.methods.injection import InjectionState
from attnedit.methods.injection import inject_directions as _inject
from attnedit.metrics.base import PairMetric
from attnedit.metrics.piebench import OFFICIAL_DEFAULT_METRICS, PIEBENCH_METRICS
from attnedit.metrics.registry import build_metric

__all__ = ["sad_directions", "inject_directions", "bias_delta_guidance", "piebench_metric", "piebench_metrics"]

DEFAULT_LAYER = "mid_block.attentions.0"  # the UNet bottleneck: the harness's (and the paper's) default


def _unet(model: Any) -> nn.Module:
    """The UNet of a pipeline, or the model itself."""
    return model.unet if hasattr(model, "unet") and isinstance(model.unet, nn.Module) else model


def _layer(model: Any, layer: str) -> nn.Module:
    return select_layers(self_attention_layers(_unet(model)), [layer])[layer]


def sad_directions(model: Any, layer: str = DEFAULT_LAYER) -> LayerDirections:
    """SAD directions of one self-attention layer: eigenvectors of Wq^T Wq + Wk^T Wk + Wv^T Wv.

    ``model``: a diffusers ``UNet2DModel`` or a pipeline holding one (``pipe.unet``);
    ``layer``: the attention module's diffusers name (an unknown name raises
    :class:`~attnedit.errors.ConfigError` listing the model's layers). Returns
    ``.eigenvalues`` (descending) and ``.eigenvectors`` (one unit direction per row, over
    the layer's input channels), both float64 numpy; each row's sign is fixed so that its
    largest-magnitude entry is positive, so "+alpha" means the same on every machine.
    The same computation as ``attnedit-directions`` and ``method=sad``.
    """
    return _layer_directions(_layer(model, layer))


@contextlib.contextmanager
def inject_directions(
    model: Any,
    layer: str,
    direction: Any,
    alpha: float | Sequence[float],
    *,
    window: tuple[float, float] = (0.5, 0.8),
    position: str = "after_norm",
    alpha_scale: str = "token_norm",
    num_train_timesteps: int | None = None,
) -> Iterator[InjectionState]:
    """Inside the block, every UNet call at ``window[0] * T < t < window[1] * T`` sees
    ``Z + delta`` instead of the layer's input ``Z``; outside the window nothing changes.

    ``model``: a diffusers pipeline (``pipe.unet`` and ``pipe.scheduler``, e.g.
    DDIMPipeline; T = ``scheduler.config.num_train_timesteps``) or a bare
    ``UNet2DModel`` with ``num_train_timesteps`` given. ``direction``: one vector over
    the layer's input channels (e.g. ``sad_directions(...).eigenvectors[k]``), or one per
    batch element [B, C]; ``alpha``: a float or one per batch element.
    ``alpha_scale``: ``"token_norm"`` (default, as ``method=sad``): delta = alpha *
    mean token norm of Z at that step and sample * n; ``"unit"``: delta = alpha * n, the
    paper's literal formula (README, "SAD defaults"). ``position``: ``"after_norm"``
    (Z = the GroupNorm output feeding to_q/k/v) or ``"before_norm"`` (the layer input).
    Nest several blocks to edit several layers. Yields the state whose ``applied[layer]``
    lists the timesteps edited; every hook is removed on exit, also after an exception.
    """
    unet = _unet(model)
    if num_train_timesteps is None:
        scheduler = getattr(model, "scheduler", None)
        if scheduler is None:
            raise ConfigError("inject_directions: a bare UNet needs num_train_timesteps=<T> (the scheduler's "
                              "config.num_train_timesteps); or pass the pipeline")
        num_train_timesteps = int(scheduler.config.num_train_timesteps)
    layers = select_layers(self_attention_layers(unet), [layer])
    channels = layers[layer].to_q.in_features
    vectors = torch.as_tensor(np.asarray(direction, dtype=np.float32))
    vectors = vectors[None] if vectors.ndim == 1 else vectors
    alphas = torch.as_tensor(np.asarray(alpha, dtype=np.float32)).reshape(-1)
    if vectors.ndim != 2 or vectors.shape[1] != channels:
        raise ConfigError(f"inject_directions: direction of shape {tuple(np.shape(direction))} for layer {layer}, "
                          f"which has {channels} input channels; pass [{channels}] or [batch, {channels}]")
    batch = max(len(vectors), len(alphas))
    if {len(vectors), len(alphas)} - {1, batch}:
        raise ConfigError(f"inject_directions: {len(vectors)} directions and {len(alphas)} alphas; give one of "
                          "each, or one per batch element")
    with _inject(unet, layers, {layer: vectors.expand(batch, -1)}, alphas.expand(batch),
                 num_train_timesteps=int(num_train_timesteps), window=tuple(window), position=position,
                 alpha_scale=alpha_scale) as state:
        yield state


def piebench_metric(name: str, **options: Any) -> PairMetric:
    """One PIE-Bench metric as an object: ``metric(edited, source, mask=..., ...)`` gives
    ``{column: per-image values}``; ``update`` / ``compute`` / ``reset`` keep a running
    mean that skips NaN (the official "nan" of an empty region).

    ``name``: ``<psnr|ssim|mse|lpips>_<unedit_part|edit_part|whole>``,
    ``clip_similarity_<target_image|target_image_edit_part|source_image>`` or
    ``structure_distance``; ``options`` go to its class (e.g. ``convention=`` for SSIM,
    ``net_type=`` for LPIPS, ``weights="random"`` for offline tests).
    """
    if name not in PIEBENCH_METRICS:
        raise ConfigError(f"unknown PIE-Bench metric '{name}'; use one of {', '.join(PIEBENCH_METRICS)}")
    return build_metric(name, **options)


def piebench_metrics(
    edited: Tensor,
    source: Tensor,
    mask: Tensor | None = None,
    metrics: Sequence[str] = OFFICIAL_DEFAULT_METRICS,
    *,
    editing_prompt: Sequence[str] | None = None,
    original_prompt: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Tensor]:
    """Per-image PIE-Bench scores of edited vs source images, as the official script computes them.

    ``edited``, ``source``: float NCHW in [0, 1] (8-bit images / 255); edited images of
    another size are resized to the source's (bicubic, antialiased). ``mask``: [N, H, W],
    1 in the edit region (PIE-Bench's mask): ``*_unedit_part`` scores the background,
    ``*_edit_part`` the edit region, NaN where that region is empty. The CLIP scores need
    ``editing_prompt`` / ``original_prompt`` (one text per image). ``metrics``: default
    the official script's default set; ``options``: per metric name, keyword arguments of
    :func:`piebench_metric`. Returns ``{column: float64 tensor [N]}`` (SSIM adds a
    ``<name>_convention`` list naming how its map was averaged).
    """
    context = {"mask": mask, "editing_prompt": editing_prompt, "original_prompt": original_prompt}
    options = dict(options or {})
    unknown = sorted(set(options) - set(metrics))
    if unknown:
        raise ConfigError(f"piebench_metrics: options for {unknown}, which are not in metrics={list(metrics)}")
    scores: dict[str, Tensor] = {}
    for name in metrics:
        scores.update(piebench_metric(name, **options.get(name, {}))(edited, source, **context))
    return scores
