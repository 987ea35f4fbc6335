"""MagicBrush's CLIP-I, CLIP-T and DINO: cheap embedding similarities beside the VLM judges.

The reference is MagicBrush's official evaluation (OSU-NLP-Group/MagicBrush at fcfc892,
evaluation/image_eval.py):

- CLIP-I (``eval_clip_i``, lines 72-95; model loaded at line 391): ``clip.load("ViT-B/32")``
  and its preprocessing; the value is ``1 - scipy.spatial.distance.cosine`` of the raw
  (unnormalized) ``encode_image`` features of the generated and the ground-truth image
  (lines 87-90), averaged over the pairs (line 95).
- DINO (lines 399-414): torch.hub ``facebookresearch/dino:main`` ``dino_vits16`` on
  Resize(256, bicubic), CenterCrop(224), ToTensor, ImageNet Normalize (lines 403-408);
  the model's output, the CLS token after the final LayerNorm, is compared as CLIP-I is
  (``eval_clip_i(..., metric='dino')``, lines 81-82).
- CLIP-T (``eval_clip_t``, lines 127-161): the cosine of the generated image's
  ``encode_image`` features with ``encode_text(clip.tokenize(caption))`` (lines 149-157),
  the caption describing the ground-truth output image (line 147), averaged over pairs.

Here every metric gives one value per image; tables take their mean, MagicBrush's average.
Preprocessing is MagicBrush's exactly: each image as the 8-bit PIL image its file holds,
through the same torchvision transforms (CLIP: open_clip's eval transform, identical to
``clip.load``'s), on the CPU image by image: torch's bicubic resize of float tensors
differs from PIL's by up to 15 levels at sharp edges.

Named deviations:

- CLIP-I and DINO compare the edited image with the SOURCE image: GEdit, ImgEdit and
  PIE-Bench hold no ground-truth edited image. They measure how much of the source an
  edit keeps, not closeness to a target; the columns read "vs source" and the settings
  record ``convention`` :data:`SOURCE_REFERENCE`.
- CLIP-T's text is the sample field ``text_field``: ``editing_prompt`` (default,
  PIE-Bench's target prompt with brackets stripped: a description of the wanted image, as
  MagicBrush's caption is) or another field such as ``instruction`` (GEdit, ImgEdit): an
  instruction is not a caption, so those values measure something else; the settings
  record the field (``convention``).
- Backbones: open_clip's ViT-B-32-quickgelu ``openai``, the checkpoint ``clip.load("ViT-B/32")``
  loads, and timm's ``vit_small_patch16_224.dino``, the checkpoint ``dino_vits16`` loads
  (dino_deitsmall16_pretrain.pth; the same ViT-S/16, LayerNorm eps 1e-6, output the
  normalized CLS token: facebookresearch/dino at 7c446df, vision_transformer.py lines
  209-214). Everything runs in float32; ``clip.load`` keeps half-precision weights on CUDA
  (openai/CLIP at d05afc4, clip/clip.py lines 139-141), so MagicBrush's GPU numbers carry
  fp16 rounding.
- Texts longer than CLIP's 77 tokens are cut (open_clip's tokenizer); ``clip.tokenize``
  raises on them.
"""

from __future__ import annotations

import abc
import json
from typing import Any, Sequence

import torch
from torch import Tensor

from attnedit.backends.loading import download_command
from attnedit.errors import ConfigError, DataError
from attnedit.metrics.base import PairMetric
from attnedit.metrics.clip import DEFAULT_MODEL as CLIP_MODEL
from attnedit.metrics.clip import DEFAULT_PRETRAINED as CLIP_PRETRAINED
from attnedit.metrics.clip import clip_network
from attnedit.metrics.weights import check_weights_mode, hf_hub_cache, missing_weights, offline, weights_label

DINO_MODEL = "vit_small_patch16_224.dino"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DINO_RESIZE, DINO_CROP = 256, 224  # MagicBrush's (timm's crop_pct 0.9 for this model would resize to 248)
#: The ``convention`` CLIP-I and DINO record: their reference is the source, not a ground truth.
SOURCE_REFERENCE = "reference=source (MagicBrush: ground-truth target)"

_MODELS: dict[str, Any] = {}  # one backbone for CLIP-I and CLIP-T


def _shared(key: tuple, build):
    name = json.dumps(key, default=str)
    if name not in _MODELS:
        _MODELS[name] = build()
    return _MODELS[name]


def embedding_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine of float32 embeddings in float64 (scipy's ``1 - cosine distance``)."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


# Backbones --------------------------------------------------------------------------------
def load_clip(model: str, pretrained: str, weights: str, seed: int, cache_dir: str | None, metric: str):
    """An open_clip model in eval mode (metrics.clip.clip_network), one per setting in this process."""
    return _shared(("clip", model, pretrained if weights == "pretrained" else None, weights, seed, cache_dir),
                   lambda: clip_network(model, pretrained, weights, seed, cache_dir, metric))


def load_dino(model: str, weights: str, seed: int, overrides: dict | None, cache_dir: str | None, metric: str):
    """A timm VisionTransformer whose output is DINO's: the normalized CLS token."""
    import timm

    if not timm.is_model(model):
        raise ConfigError(f"metric '{metric}': unknown timm model {model!r}; MagicBrush's DINO is {DINO_MODEL!r}.")
    if overrides and weights != "random":
        raise ConfigError(f"metric '{metric}': config_overrides {sorted(overrides)} only apply to weights=random; "
                          "pretrained weights fix the architecture.")
    kwargs = {"num_classes": 0, **(overrides or {})}

    def build():
        if weights == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = timm.create_model(model, pretrained=False, **kwargs)
        else:
            net = _pretrained_dino(model, kwargs, cache_dir, metric)
        if getattr(net, "global_pool", "token") != "token":
            raise ConfigError(f"metric '{metric}': timm model {model!r} pools {net.global_pool!r}; DINO's output "
                              "is the CLS token (global_pool='token').")
        return net.eval().requires_grad_(False)

    key = ("dino", model, weights, seed, sorted((overrides or {}).items()), cache_dir)
    return _shared(key, build)


def _pretrained_dino(model: str, kwargs: dict, cache_dir: str | None, metric: str):
    import timm
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    repo = getattr(get_pretrained_cfg(model), "hf_hub_id", None)
    if not repo:
        raise ConfigError(f"metric '{metric}': timm model {model!r} names no pretrained tag with hub weights; "
                          f"give one such as {DINO_MODEL!r}.")
    folder = cache_dir or hf_hub_cache()
    cached = any(isinstance(try_to_load_from_cache(repo, f, cache_dir=cache_dir), str)
                 for f in ("model.safetensors", "pytorch_model.bin"))
    missing = missing_weights(f"metric '{metric}' (DINO, timm {model!r})", f"{repo} (model.safetensors)", folder,
                              f"Run `{download_command(repo, None)}` where there is network (it fills HF_HUB_CACHE) "
                              "and copy that cache here, or pass cache_dir=<the hub cache holding it>.")
    if not cached and offline():
        raise missing  # no network attempt at all
    try:
        return timm.create_model(model, pretrained=True, cache_dir=cache_dir, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        if cached:
            raise
        raise missing from err


def as_pil(images: Tensor) -> list:
    """[0, 1] NCHW -> the 8-bit RGB PIL images MagicBrush opens from its files."""
    from PIL import Image

    arrays = images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arrays]


def clip_transform(model):
    """open_clip's eval transform of ``model``: for MagicBrush's ViT-B/32 ``clip.load``'s own
    (Resize(224, bicubic), CenterCrop(224), ToTensor, CLIP's Normalize: openai/CLIP at d05afc4,
    clip/clip.py lines 79-86)."""
    import open_clip

    cfg = model.visual.preprocess_cfg
    return open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                     resize_mode=cfg.get("resize_mode"), interpolation=cfg.get("interpolation"),
                                     fill_color=cfg.get("fill_color", 0))


def dino_transform():
    """MagicBrush's DINO transform (image_eval.py lines 403-408)."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(DINO_RESIZE, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(DINO_CROP),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def pixels(transform, images: Tensor) -> Tensor:
    """The model input of [0, 1] NCHW images: each as its 8-bit PIL image through ``transform``."""
    return torch.stack([transform(image) for image in as_pil(images)]).to(images.device)


@torch.no_grad()
def clip_image_features(model, transform, images: Tensor) -> Tensor:
    """Raw ``encode_image`` features (float32), as MagicBrush compares them."""
    model.to(images.device)
    return model.encode_image(pixels(transform, images)).float()


# Metrics ----------------------------------------------------------------------------------
class EmbeddingSimilarity(PairMetric):
    """The cosine of an edited image's embedding with the source image's (CLIP-I, DINO)."""

    higher_is_better = True
    unit = "cosine"
    convention = SOURCE_REFERENCE

    @abc.abstractmethod
    def embed(self, images: Tensor) -> Tensor:
        """[0, 1] NCHW -> one float32 embedding per image."""

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        return self.score_each([edited], reference)[0]

    def score_each(self, editeds, reference: Tensor) -> list[dict[str, Tensor]]:
        source = self.embed(reference)  # once for all methods
        return [{self.name: embedding_cosine(self.embed(edited), source)} for edited in editeds]


class CLIPImageSimilarity(EmbeddingSimilarity):
    """CLIP-I: cosine of the CLIP image features of the edited and the source image.

    ``model`` / ``pretrained``: open_clip model and tag (default MagicBrush's ViT-B/32);
    ``weights="random"``: the same architecture, open_clip's init under ``seed`` (tests)."""

    name = "clip_i"
    display_name = "CLIP-I vs source"

    def __init__(self, model: str = CLIP_MODEL, pretrained: str = CLIP_PRETRAINED, weights: str = "pretrained",
                 seed: int = 0, cache_dir: str | None = None, name: str = "clip_i") -> None:
        super().__init__()
        self.name, self.model_name = name, model
        self.weights = weights_label(check_weights_mode(weights, name), seed)
        self.model = load_clip(model, pretrained, weights, seed, cache_dir, name)
        self.transform = clip_transform(self.model)

    def embed(self, images: Tensor) -> Tensor:
        return clip_image_features(self.model, self.transform, images)


class DINOSimilarity(EmbeddingSimilarity):
    """DINO: cosine of the DINO ViT-S/16 CLS features of the edited and the source image.

    ``weights="random"`` builds the timm model under ``seed``; ``config_overrides`` (random
    weights only) shrink it for tests."""

    name = "dino"
    display_name = "DINO vs source"

    def __init__(self, model: str = DINO_MODEL, weights: str = "pretrained", seed: int = 0,
                 config_overrides: dict | None = None, cache_dir: str | None = None, name: str = "dino") -> None:
        super().__init__()
        self.name, self.model_name = name, model
        self.weights = weights_label(check_weights_mode(weights, name), seed)
        self.model = load_dino(model, weights, seed, config_overrides, cache_dir, name)
        self.transform = dino_transform()

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """[0, 1] NCHW -> DINO's output, the CLS token after the final LayerNorm (float32)."""
        self.model.to(images.device)
        return self.model(pixels(self.transform, images)).float()


class CLIPTextSimilarity(PairMetric):
    """CLIP-T: cosine of the edited image's CLIP image features with the text features of
    the sample field ``text_field`` (default ``editing_prompt``; module docstring)."""

    name = "clip_t"
    higher_is_better = True
    display_name = "CLIP-T"
    unit = "cosine"

    def __init__(self, text_field: str = "editing_prompt", model: str = CLIP_MODEL, pretrained: str = CLIP_PRETRAINED,
                 weights: str = "pretrained", seed: int = 0, cache_dir: str | None = None,
                 name: str = "clip_t") -> None:
        import open_clip

        super().__init__()
        if not isinstance(text_field, str) or not text_field:
            raise ConfigError(f"metric '{name}': text_field={text_field!r} must name a sample field, e.g. "
                              "'editing_prompt' (PIE-Bench's target prompt) or 'instruction'.")
        self.name, self.model_name, self.text_field = name, model, text_field
        self.needs = (text_field,)
        self.convention = f"text_field={text_field}"
        self.weights = weights_label(check_weights_mode(weights, name), seed)
        self.model = load_clip(model, pretrained, weights, seed, cache_dir, name)  # CLIP-I's, when both run
        self.transform = clip_transform(self.model)
        try:
            self.tokenizer = open_clip.get_tokenizer(model, cache_dir=cache_dir)
        except OSError as err:  # hub tokenizers (HF text towers) do not ship in the package
            raise missing_weights(f"metric '{name}' (open_clip model {model!r})", f"tokenizer of {model}",
                                  cache_dir or hf_hub_cache(), "Create the metric once with network.") from err

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Raw ``encode_text`` features (float32); open_clip cuts texts at 77 tokens."""
        device = next(self.model.parameters()).device
        return self.model.encode_text(self.tokenizer(list(texts)).to(device)).float()

    def score(self, edited: Tensor, reference: Tensor, **context) -> dict[str, Tensor]:
        return self.score_each([edited], reference, **context)[0]

    def score_each(self, editeds, reference: Tensor, **context) -> list[dict[str, Tensor]]:
        texts = context.get(self.text_field)
        n = len(reference)
        if isinstance(texts, str) or texts is None or len(texts) != n or not all(isinstance(t, str) for t in texts):
            raise DataError(f"metric '{self.name}': {self.text_field} must be a list of {n} strings (one per image).")
        self.model.to(reference.device)
        text = self.embed_texts(texts)  # once for all methods
        return [{self.name: embedding_cosine(clip_image_features(self.model, self.transform, edited), text)}
                for edited in editeds]
