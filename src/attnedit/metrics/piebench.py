"""PIE-Bench metrics with the official PnPInversion conventions (reference/piebench.md).

Names are the official ones: ``<base>_unedit_part`` (background), ``<base>_edit_part``
and, for the whole frame, ``<base>_whole`` (``psnr``/``ssim``/``mse`` name the plain
fidelity metrics elsewhere), for base psnr, ssim, mse, lpips; ``clip_similarity_*``
and ``structure_distance``.

Conventions, each as the official script has it:
- images are floats in [0, 1] (8-bit files / 255); PSNR and SSIM use data_range 1;
- SSIM is torchmetrics' (Gaussian window 11, sigma 1.5, reflect padding), its map averaged
  as the torchmetrics of 2023 that produced the published numbers did: without a 5-pixel
  border (``convention="torchmetrics_legacy_crop"``, the default); ``"current"`` averages
  the whole map as torchmetrics >= 1.4.2 does (PR 2721; :mod:`attnedit.metrics.ssim_fast`).
  Each row records it in the column ``<metric>_convention``;
- a region is scored by multiplying *both* images by (1 - mask) (background) or mask
  (edit), broadcast over channels, then computing on the full frame (zeros included);
- the value is NaN exactly where the official script writes "nan": the region is empty;
- LPIPS is torchmetrics' LPIPS, net squeeze by default, inputs mapped to [-1, 1];
- CLIP score is max(100 * cos(image, text), 0) of CLIP ViT-L/14 on the 8-bit image
  (times the mask for the edit part), as torchmetrics' CLIPScore computes it;
- structure distance is the MSE between the cosine self-similarity matrices of the
  last DINO block's keys (CLS included), images as 0-255 floats resized to 224 on the
  short side (max 480) and ImageNet-normalized.

Edited images of another size than the source are resized to the source size first,
bicubic with antialiasing (``torch.nn.functional.interpolate(mode="bicubic",
antialias=True, align_corners=False)``, clamped to [0, 1]); the official script instead
asserts equal sizes. Every metric takes a whole batch per call and returns one value
per image; inside, the pixel metrics and LPIPS go image by image, which keeps a
512x512 image's intermediate maps in CPU cache (a batch's do not fit).
``score_each`` scores several methods' edited batches against one source batch, the
source-only work (region product, SSIM padding, LPIPS features, DINO and CLIP source
passes) done once per source image.
"""

from __future__ import annotations

import abc
import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnedit.errors import ConfigError, DataError
from attnedit.metrics import piebench_backbones as backbones
from attnedit.metrics.base import REGIONS, MetricInfo, PairMetric
from attnedit.metrics.ssim_fast import gaussian_window, ssim_against, ssim_reference
from attnedit.metrics.weights import weights_label

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def match_size(edited: Tensor, size: tuple[int, int]) -> Tensor:
    """Edited NCHW images at ``size`` (H, W): bicubic, antialiased, clamped to [0, 1]."""
    if tuple(edited.shape[-2:]) == tuple(size):
        return edited
    resized = F.interpolate(edited.float(), size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp_(0, 1)


def region_weights(mask: Tensor | None, region: str) -> Tensor | None:
    """The [N, 1, H, W] multiplier of a region (None for the whole image)."""
    if region == "whole":
        return None
    if mask is None:
        raise DataError(f"region '{region}' needs the PIE-Bench mask of every image.")
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None]
    weights = 1 - mask if region == "unedit_part" else mask
    return weights[:, None]


def empty_region(weights: Tensor | None, n: int, device: torch.device | str = "cpu") -> Tensor:
    """Rows whose region holds no pixel (the official script writes "nan" for them), on
    the weights' device (``device`` for the whole image)."""
    if weights is None:
        return torch.zeros(n, dtype=torch.bool, device=device)
    return weights.flatten(1).sum(1) == 0


def to_uint8(images: Tensor) -> Tensor:
    """The 8-bit image the official script reads from disk."""
    return images.mul(255).round_().clamp_(0, 255).to(torch.uint8)


class PIEBenchMetric(PairMetric):
    """Shared behaviour: resize edited images to the source size, then score."""

    def __call__(self, edited: Tensor, reference: Tensor, **context) -> dict[str, Tensor]:
        if edited.ndim == 4 and reference.ndim == 4 and edited.shape[:2] == reference.shape[:2]:
            edited = match_size(edited, reference.shape[-2:])
        return super().__call__(edited, reference, **context)


class RegionMetric(PIEBenchMetric):
    """A full-reference metric on a region: both images times the region's weights."""

    base = ""

    def __init__(self, region: str = "unedit_part") -> None:
        super().__init__()
        if region not in REGIONS:
            raise ConfigError(f"metric '{self.base}': region {region!r} is not one of {list(REGIONS)}.")
        self.region = region
        self.name = f"{self.base}_{region}"
        self.needs = () if region == "whole" else ("mask",)

    def score(self, edited: Tensor, reference: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        return self.score_each([edited], reference, mask=mask)[0]

    #: Images per call of prepare/compare; None: one on CPU (a 512x512 image's maps stay in
    #: cache, a batch's do not), the whole batch elsewhere (a GPU is launch-bound one by one).
    images_per_call: int | None = None

    def score_each(self, editeds, reference: Tensor, mask: Tensor | None = None) -> list[dict[str, Tensor]]:
        weights = region_weights(None if mask is None else mask.to(reference.device), self.region)
        values: list[list[Tensor]] = [[] for _ in editeds]
        step = self.images_per_call or (1 if reference.device.type == "cpu" else len(reference))
        for i in range(0, len(reference), step):
            w = None if weights is None else weights[i : i + step]
            source = self.prepare(in_region(reference[i : i + step], w))
            for column, edited in zip(values, editeds):
                column.append(self.compare(in_region(edited[i : i + step], w), source).double())
        # Values stay on the device, NaN set without a boolean index: nothing here waits for a GPU.
        empty = empty_region(weights, len(reference), reference.device)
        return [{self.name: torch.where(empty, float("nan"), torch.cat(column))} for column in values]

    def prepare(self, reference: Tensor) -> Any:
        """The reference-only part of the metric, computed once per source image for all methods."""
        return reference

    @abc.abstractmethod
    def compare(self, edited: Tensor, prepared: Any) -> Tensor:
        """Per-image values of [n, C, H, W] images already multiplied by the region,
        against what :meth:`prepare` made of the reference."""


def in_region(images: Tensor, weights: Tensor | None) -> Tensor:
    """Float images times the region's weights (the official script's ``image * mask``)."""
    images = images.float()
    return images if weights is None else images * weights


def mean_squared_error(edited: Tensor, reference: Tensor) -> Tensor:
    """Per-image MSE over all channels and pixels, in float32 as torchmetrics computes it
    (torch's cascade summation: ~1e-7 relative at 512x512x3, far inside the 1e-5 budget)."""
    diff = (edited - reference).flatten(1)
    return diff.square_().sum(dim=1).double() / diff.shape[1]


class PIEBenchMSE(RegionMetric):
    base, higher_is_better = "mse", False
    display_name, unit, scale = "MSE", "x10^4", 1e4

    def compare(self, edited: Tensor, reference: Tensor) -> Tensor:
        return mean_squared_error(edited, reference)


class PIEBenchPSNR(RegionMetric):
    base, higher_is_better = "psnr", True
    display_name, unit = "PSNR", "dB"

    def compare(self, edited: Tensor, reference: Tensor) -> Tensor:
        # data_range 1; identical images give inf, as torchmetrics does.
        return 10 * torch.log10(1.0 / mean_squared_error(edited, reference))


#: SSIM conventions -> the border (pixels) of the SSIM map left out of the mean.
#: torchmetrics < 1.4.2 cropped (window size - 1) / 2 = 5 pixels; PR 2721 removed the crop.
SSIM_CONVENTIONS = {"torchmetrics_legacy_crop": (gaussian_window(1.5, torch.float32, "cpu").numel() - 1) // 2, "current": 0}
#: The default: the convention of the torchmetrics the published PIE-Bench numbers were computed with.
SSIM_DEFAULT_CONVENTION = "torchmetrics_legacy_crop"
#: The plain whole-image ``ssim`` (:class:`attnedit.metrics.fidelity.SSIM`, the official
#: script's ``ssim``) averages its map the same two ways under other names: its ``border``
#: for each convention (``crop`` leaves out the same 5 pixels), so one ``ssim_convention``
#: reaches every SSIM of attnedit-evaluate.
SSIM_BORDER = {"torchmetrics_legacy_crop": "crop", "current": "pad"}
#: How each convention averages the SSIM map, for table titles.
SSIM_CONVENTION_TEXT = {
    "torchmetrics_legacy_crop": "SSIM map without its 5-pixel border (torchmetrics < 1.4.2, as the published "
    "PIE-Bench numbers)",
    "current": "SSIM map averaged whole (torchmetrics >= 1.4.2: not the published PIE-Bench numbers' convention, "
    "which drop a 5-pixel border)",
}


class PIEBenchSSIM(RegionMetric):
    """SSIM on a region; ``convention`` chooses how the SSIM map is averaged (module docstring)."""

    base, higher_is_better = "ssim", True
    display_name, unit, scale = "SSIM", "x10^2", 1e2

    def __init__(self, region: str = "unedit_part", convention: str = SSIM_DEFAULT_CONVENTION) -> None:
        super().__init__(region)
        if convention not in SSIM_CONVENTIONS:
            raise ConfigError(
                f"metric '{self.name}': convention {convention!r} is not one of {list(SSIM_CONVENTIONS)}."
            )
        self.convention, self.crop = convention, SSIM_CONVENTIONS[convention]

    def score_each(self, editeds, reference: Tensor, mask: Tensor | None = None) -> list[dict[str, Tensor]]:
        out = super().score_each(editeds, reference, mask=mask)
        for scores in out:  # every row says how its SSIM was averaged
            scores[f"{self.name}_convention"] = [self.convention] * len(reference)
        return out

    def prepare(self, reference: Tensor):
        return ssim_reference(reference, data_range=1.0)

    def compare(self, edited: Tensor, prepared) -> Tensor:
        return ssim_against(edited, prepared, crop=self.crop)


# LPIPS squeeze, fast path: NHWC maps, 1x1 convolutions as GEMMs, no concatenation.
def _nchw(nhwc: Tensor) -> Tensor:
    return nhwc.permute(0, 3, 1, 2)  # a channels-last NCHW view, no copy


def _pointwise(parts: list[Tensor], conv) -> Tensor:
    """A 1x1 convolution + ReLU of channel-split NHWC parts as GEMMs: [N*H*W, C] @ W^T.

    On CPU torch runs these 1x1 convolutions in its slow im2col kernel
    (aten::_slow_conv2d_forward), not oneDNN; one sgemm per part, accumulated into the
    output, is faster and spares concatenating the parts."""
    n, h, w, _ = parts[0].shape
    weight = conv.weight.flatten(1)
    out, start = None, 0
    for part in parts:
        c = part.shape[-1]
        flat, wt = part.reshape(-1, c), weight[:, start : start + c].t()
        out = torch.addmm(conv.bias, flat, wt) if out is None else out.addmm_(flat, wt)
        start += c
    return out.relu_().view(n, h, w, -1)


def _fire(parts: list[Tensor], fire) -> list[Tensor]:
    squeezed = _pointwise(parts, fire.squeeze)
    wide = F.conv2d(_nchw(squeezed), fire.expand3x3.weight, fire.expand3x3.bias, padding=1).relu_()
    return [_pointwise([squeezed], fire.expand1x1), wide.permute(0, 2, 3, 1)]


def _pool(parts: list[Tensor]) -> list[Tensor]:
    return [F.max_pool2d(_nchw(p), 3, 2, ceil_mode=True).permute(0, 2, 3, 1) for p in parts]


def squeeze_features(net, x: Tensor) -> list[list[Tensor]]:
    """torchmetrics' SqueezeNet slices on a scaled NCHW batch: per slice, its output as
    channel-split NHWC parts (the fire modules' concatenation is never materialized)."""
    conv1 = net.slices[0][0]
    # A channels-last input: oneDNN's 3-channel stride-2 convolution runs ~3x faster than on NCHW.
    x = x.contiguous(memory_format=torch.channels_last)
    parts = [F.conv2d(x, conv1.weight, conv1.bias, stride=conv1.stride).relu_().permute(0, 2, 3, 1)]
    out = [parts]
    for block in net.slices[1:]:
        for layer in block:
            parts = _pool(parts) if isinstance(layer, torch.nn.MaxPool2d) else _fire(parts, layer)
        out.append(parts)
    return out


class PIEBenchLPIPS(RegionMetric):
    """LPIPS (torchmetrics' network, squeeze by default) on [-1, 1] inputs, one value per image.

    Same network and formula as torchmetrics' forward, evaluated faster: channels-last
    weights (oneDNN's convolutions and pooling run several times faster than on NCHW maps
    on CPU), squeeze's 1x1 convolutions as GEMMs on its fire outputs kept as
    unconcatenated parts (:func:`squeeze_features`), each layer's 1x1 "lin" head followed
    by the spatial mean as a per-pixel dot product with the head's weights. The source
    image's unit-normalized features are computed once (:meth:`prepare`) and compared
    with every method's edited image.
    """

    base, higher_is_better = "lpips", False
    display_name, unit, scale = "LPIPS", "x10^3", 1e3

    def __init__(
        self, region: str = "unedit_part", net_type: str = "squeeze", weights: str = "pretrained", seed: int = 0
    ) -> None:
        super().__init__(region)
        self.net_type = net_type
        self.model = backbones.load_lpips(net_type, weights, seed).to(memory_format=torch.channels_last)
        self.weights = weights_label(weights, seed)

    @torch.inference_mode()
    def unit_features(self, images: Tensor) -> list[list[Tensor]]:
        """Per layer, the network's NHWC features of [-1, 1]-mapped images divided by their
        channel norm (torchmetrics' eps 1e-8), as the channel parts the layer comes in."""
        model = self.model.to(images.device)
        x = model.scaling_layer(images * 2 - 1)
        if self.net_type == "squeeze":
            layers = squeeze_features(model.net, x)
        else:  # NCHW input into channels-last weights: oneDNN's fastest first layer, channels-last after it.
            layers = [[feature.permute(0, 2, 3, 1)] for feature in model.net(x)]
        unit = []
        for parts in layers:
            squares = sum(torch.linalg.vector_norm(p, dim=-1, keepdim=True).square_() for p in parts)
            scale = torch.rsqrt(squares.add_(1e-8))
            unit.append([p.mul_(scale) for p in parts])
        return unit

    def prepare(self, reference: Tensor) -> list[list[Tensor]]:
        return self.unit_features(reference)

    @torch.inference_mode()
    def compare(self, edited: Tensor, prepared: list[list[Tensor]]) -> Tensor:
        heads = [lin.model[-1].weight.flatten() for lin in self.model.lins]  # Conv2d(C, 1, 1, bias=False)
        total = torch.zeros(len(edited), dtype=torch.float64, device=edited.device)
        for parts, source_parts, head in zip(self.unit_features(edited), prepared, heads):
            # Subtract, square, weight by the 1x1 head, average over space; part by part.
            start, score = 0, 0
            for p, q in zip(parts, source_parts):
                c = p.shape[-1]
                score = score + p.sub_(q).square_() @ head[start : start + c]
                start += c
            total += score.mean((1, 2))
        return total


CLIP_KINDS = {
    "target_image": ("editing_prompt",),
    "target_image_edit_part": ("editing_prompt", "mask"),
    "source_image": ("original_prompt",),
}


class PIEBenchCLIPScore(PIEBenchMetric):
    """CLIP score of an image and a bracket-stripped prompt: max(100 * cosine, 0).

    ``target_image``: the edited image with the editing prompt; ``target_image_edit_part``:
    the 8-bit edited image times the mask (NaN where the mask is empty); ``source_image``:
    the source image (the ``reference`` argument) with the original prompt.
    torchmetrics 1.9's CLIPScore cannot read transformers 5's feature outputs, so its
    formula is applied here to the same model, processor and 8-bit images.
    """

    higher_is_better = True
    display_name, unit = "CLIP score", "CLIP score 0-100"
    KIND_NAMES = {"source_image": "CLIP score (source image)"}

    @classmethod
    def column_info(cls, name: str, **options) -> MetricInfo:
        kind = options.get("kind", "target_image")
        region = "edit_part" if kind.endswith("_edit_part") else "whole"
        return MetricInfo(name, cls.KIND_NAMES.get(kind, cls.display_name), cls.unit, cls.scale, region,
                          cls.higher_is_better)

    def info(self) -> MetricInfo:
        return self.column_info(self.name, kind=self.kind)

    def __init__(
        self,
        kind: str = "target_image",
        model: str = backbones.CLIP_MODEL,
        weights: str = "pretrained",
        seed: int = 0,
        config_overrides: dict | None = None,
    ) -> None:
        super().__init__()
        if kind not in CLIP_KINDS:
            raise ConfigError(f"CLIP score kind {kind!r} is not one of {list(CLIP_KINDS)}.")
        self.kind, self.name, self.needs = kind, f"clip_similarity_{kind}", CLIP_KINDS[kind]
        self.model, self.processor = backbones.load_clip(model, weights, seed, config_overrides)
        self.weights = weights_label(weights, seed)

    @torch.no_grad()
    def score(self, edited: Tensor, reference: Tensor, **context) -> dict[str, Tensor]:
        images = to_uint8(reference if self.kind == "source_image" else edited)
        texts = list(context[self.needs[0]])
        if len(texts) != len(images):
            raise DataError(f"metric '{self.name}': {len(images)} images but {len(texts)} prompts.")
        empty = torch.zeros(len(images), dtype=torch.bool)
        if self.kind == "target_image_edit_part":
            mask = context["mask"].to(images.device)
            images = (images * mask[:, None].to(torch.uint8)).to(torch.uint8)
            empty = (mask.flatten(1).sum(1) == 0).cpu()
        values = self.clip_score(images, texts).double()
        values[empty] = float("nan")
        return {self.name: values}

    def score_each(self, editeds, reference: Tensor, **context) -> list[dict[str, Tensor]]:
        if self.kind == "source_image":  # does not depend on the edited images: once for all methods
            values = self.score(editeds[0], reference, **context)
            return [dict(values) for _ in editeds]
        return super().score_each(editeds, reference, **context)

    def clip_score(self, images: Tensor, texts: list[str]) -> Tensor:
        device = images.device
        self.model.to(device)
        pixels = self.processor(images=[i.cpu() for i in images], return_tensors="pt")["pixel_values"]
        tokens = self.processor(text=texts, return_tensors="pt", padding=True)
        limit = self.model.config.text_config.max_position_embeddings
        if tokens["input_ids"].shape[-1] > limit:  # torchmetrics cuts longer captions the same way
            warnings.warn(f"metric '{self.name}': a prompt is longer than {limit} tokens; truncated.", stacklevel=3)
        image_features = _features(self.model.get_image_features(pixel_values=pixels.to(device)))
        text_features = _features(
            self.model.get_text_features(
                input_ids=tokens["input_ids"][..., :limit].to(device),
                attention_mask=tokens["attention_mask"][..., :limit].to(device),
            )
        )
        image_features = image_features / image_features.norm(p=2, dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(p=2, dim=-1, keepdim=True)
        return (100 * (image_features * text_features).sum(-1)).clamp(min=0).cpu()


def _features(output) -> Tensor:
    """transformers 4 returns the projected features, transformers 5 an output object holding them."""
    return output if isinstance(output, Tensor) else output.pooler_output


class StructureDistance(PIEBenchMetric):
    """DINO ViT-B/8 structure distance of source and edited image (lower is closer).

    As in the official LossG.calculate_global_ssim_loss: each image (0-255 floats, as the
    official script passes them) goes through Resize(224, max_size=480) and ImageNet
    normalization; the last block's keys of all tokens (CLS included) give a cosine
    self-similarity matrix; the value is the MSE between the two matrices. The official
    torchvision of 2023 resized tensors without antialiasing, today's default
    antialiases: ``antialias`` chooses (default False, as the published numbers).
    """

    name, higher_is_better = "structure_distance", False
    display_name, unit, scale = "structure distance", "x10^3", 1e3

    def __init__(
        self,
        model: str = backbones.DINO_MODEL,
        weights: str = "pretrained",
        seed: int = 0,
        antialias: bool = False,
        config_overrides: dict | None = None,
    ) -> None:
        super().__init__()
        self.model = backbones.load_dino(model, weights, seed, config_overrides)
        self.weights = weights_label(weights, seed)
        self.antialias = antialias
        self._stats: dict[tuple, tuple[Tensor, Tensor]] = {}  # (device, dtype) -> ImageNet mean, std

    def transform(self, images: Tensor) -> Tensor:
        """0-255 float NCHW -> the DINO input of the official script."""
        from torchvision.transforms import functional as TF

        resized = TF.resize(images, 224, max_size=480, antialias=self.antialias)
        # TF.normalize's arithmetic ((x - mean) / std), with the statistics kept on the device:
        # TF.normalize copies them there and checks std on the host, which waits for a GPU, at every call.
        key = (resized.device, resized.dtype)
        if key not in self._stats:
            self._stats[key] = tuple(torch.tensor(v, dtype=resized.dtype, device=resized.device).view(-1, 1, 1)
                                     for v in (IMAGENET_MEAN, IMAGENET_STD))
        mean, std = self._stats[key]
        return resized.sub(mean).div_(std)

    @torch.no_grad()
    def key_self_similarity(self, images: Tensor) -> Tensor:
        """[N, T, T] cosine similarities of the last block's keys; ``images`` are 0-255 floats."""
        captured = []
        qkv = self.model.blocks[-1].attn.qkv
        handle = qkv.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            self.model.to(images.device)(self.transform(images))
        finally:
            handle.remove()
        dim = captured[0].shape[-1] // 3
        keys = captured[0][..., dim : 2 * dim]  # qkv is laid out [q | k | v], heads in order
        norms = keys.norm(dim=-1, keepdim=True)
        return (keys @ keys.transpose(1, 2)) / torch.clamp(norms @ norms.transpose(1, 2), min=1e-8)

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        return self.score_each([edited], reference)[0]

    def score_each(self, editeds, reference: Tensor) -> list[dict[str, Tensor]]:
        sim_source = self.key_self_similarity(to_uint8(reference).float())  # once for all methods
        out = []
        for edited in editeds:
            sim_edited = self.key_self_similarity(to_uint8(edited).float())
            out.append({self.name: (sim_edited - sim_source).pow(2).flatten(1).mean(1).double()})  # stays on the device
        return out


#: Name -> factory of every PIE-Bench metric (the names the Python API and the metric
#: registry accept).
PIEBENCH_METRICS: dict[str, Any] = {
    **{f"{cls.base}_{region}": functools.partial(cls, region=region)
       for region in REGIONS for cls in (PIEBenchPSNR, PIEBenchSSIM, PIEBenchMSE, PIEBenchLPIPS)},
    **{f"clip_similarity_{kind}": functools.partial(PIEBenchCLIPScore, kind=kind) for kind in CLIP_KINDS},
    "structure_distance": StructureDistance,
}

#: The official script's default metric set, in its order.
OFFICIAL_DEFAULT_METRICS = (
    "structure_distance",
    "psnr_unedit_part",
    "lpips_unedit_part",
    "mse_unedit_part",
    "ssim_unedit_part",
    "clip_similarity_source_image",
    "clip_similarity_target_image",
    "clip_similarity_target_image_edit_part",
)
