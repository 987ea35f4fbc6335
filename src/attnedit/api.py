"""attnedit from Python, in one's own diffusers pipelines (README: "Using attnedit from Python").

- :func:`load_pipeline`: a DDIMPipeline of a model the benchmark knows by name (the shipped
  ``shapes_ddpm``, offline; ``ddpm_celebahq``, ...), a hub id or a local folder.
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

__all__ = ["load_pipeline", "sad_directions", "inject_directions", "bias_delta_guidance", "piebench_metric", "piebench_metrics"]

DEFAULT_LAYER = "mid_block.attentions.0"  # the UNet bottleneck: the harness's (and the paper's) default


def load_pipeline(model: str = "shapes_ddpm", *, device: str = "auto", dtype: str = "float32") -> Any:
    """A diffusers ``DDIMPipeline`` (UNet + DDIM scheduler) loaded as ``model=<name>`` loads it.

    ``model``: a DDPM model config name (``conf/model``: ``shapes_ddpm``, the trained model
    shipped inside the package, needs no download; ``ddpm_celebahq``, ``ddpm_church``, ...:
    their hub ids), a hub id, or a local folder saved with ``save_pretrained`` (a pipeline
    folder with ``unet/`` and ``scheduler/``, ``model_index.json`` optional, or a bare UNet
    folder). The scheduler is the checkpoint's as DDIMScheduler, with the config's
    ``clip_sample`` where it sets one. Weights that are not there raise
    :class:`~attnedit.errors.WeightsNotFoundError` naming the download command; configs of
    test-only random weights (``tiny_ddpm``) and of other model families are refused.
    ``device``: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ...
    """
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    from attnedit.backends.ddpm import component_dirs
    from attnedit.backends.loading import pick_device, pick_dtype, resolve_model_dir
    from attnedit.config import conf_dir

    path, hub_id, clip_sample = model, None, None
    if (conf_dir() / "model" / f"{model}.yaml").exists():
        from attnedit.config import compose

        config = compose(overrides=[f"model={model}"]).model
        if not str(config.get("_target_", "")).endswith("DDPMBackend") or config.get("random_weights"):
            raise ConfigError(f"load_pipeline({model!r}): it loads the trained DDPM models (shapes_ddpm, "
                              "ddpm_celebahq, ddpm_church, ddpm_bedroom, ddpm_cat), a hub id or a folder; "
                              f"{model!r} is another family or test-only random weights")
        path, hub_id, clip_sample = str(config.path), config.get("hub_id"), config.get("clip_sample")
    unet_dir, scheduler_dir = component_dirs(resolve_model_dir(path, f"load_pipeline({model!r})", hub_id=hub_id))
    where = pick_device(device, "device")
    unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=pick_dtype(dtype, where)).to(where).eval()
    scheduler = DDIMScheduler.from_pretrained(scheduler_dir)
    if clip_sample is not None:
        scheduler = DDIMScheduler.from_config(scheduler.config, clip_sample=bool(clip_sample))
    return DDIMPipeline(unet=unet, scheduler=scheduler)


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
