"""Directional CLIP similarity (StyleGAN-NADA, Gal et al. 2022), with open_clip.

    score = cos( E_img(edited) - E_img(reference),  T(target) - T(source) )

The reference implementation is StyleGAN-NADA's CLIPLoss (rinongal/StyleGAN-nada at
dc8406ae, ZSSGAN/criteria/clip_loss.py): image embeddings are L2-normalized before the
difference (get_image_features, lines 107-113; clip_directional_loss, lines 176-190);
the text direction is the mean over prompt templates of the differences of the
L2-normalized template embeddings, normalized (get_text_features, lines 95-105;
compute_text_direction, lines 115-121). So T(text) here is the mean of the normalized
template embeddings, not normalized again: T(target) - T(source) is that mean difference.
Templates default to the reference's ``imagenet_templates`` (ZSSGAN/utils/text_templates.py,
lines 1-81): CLIP's 80 ImageNet templates, which open_clip ships as
OPENAI_IMAGENET_TEMPLATES, without "a photo of many {}.". They read "a bad photo of a {}.",
so texts are class names without an article: ("face", "smiling face"). Other templates
are a named deviation (``templates``), recorded per row in ``<name>_templates``.

Texts come per image, in the order of that image's edit: for an edit at the other sign
of its direction's label the method hands over (target, source), see methods/labeling.py.
When either difference is zero (norm below 1e-6, the float32 noise of unit vectors:
identical images or texts) the cosine is undefined and the score is NaN; aggregates skip
NaN (the reference instead re-encodes the edited image + 1e-6, a training-loss device).

``label_null`` > 0 adds the label-shuffled null (methods/labeling.py): the runner hands each
case ``null_texts``, the texts of the labels of other directions under ``label_null``
distinct seeded permutations (``label_null_seed``; fewer where the method's directions have
fewer derangements), and the metric scores the same image change
against each: columns ``<name>_null_p<i>`` and their mean ``<name>_null``. The
comparison's Table 2 shows the mean and spread over permutations of the per-permutation
means beside the chosen labels' score.

Images are preprocessed in torch on the [0, 1] tensors with the model's own settings
(``model.visual.preprocess_cfg``: resolution, resize mode, interpolation, mean, std),
the same operations as the reference's tensor preprocessing (CLIP's Resize, CenterCrop
and Normalize, lines 41-43), with an antialiased resize as CLIP's PIL pipeline does.

Default model: ViT-B-32-quickgelu with the "openai" weights, the reference's ViT-B/32
(the OpenAI checkpoints were trained with QuickGELU; the plain ViT-B-32 config would
run them with GELU, and open_clip only warns).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from attnedit.errors import ConfigError, DataError
from attnedit.metrics.base import PairMetric
from attnedit.metrics.weights import check_weights_mode, hf_hub_cache, missing_weights, offline, weights_label

DEFAULT_MODEL = "ViT-B-32-quickgelu"
DEFAULT_PRETRAINED = "openai"
REFERENCE_TEMPLATES = "stylegan_nada"  # the reference's imagenet_templates (79)
# open_clip's messages when a tag's or a hub model's weights cannot be fetched.
_DOWNLOAD_FAILURES = ("Failed to download", "Failed initial config/weights load from HF Hub")
_ZERO = 1e-6


def stylegan_nada_templates() -> tuple[str, ...]:
    """StyleGAN-NADA's imagenet_templates: open_clip's OPENAI_IMAGENET_TEMPLATES (CLIP's
    80) less "a photo of many {}.", which the reference's list omits; order kept."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t for t in (f("{}") for f in OPENAI_IMAGENET_TEMPLATES) if t != "a photo of many {}.")


def resolve_templates(templates, metric: str) -> tuple[tuple[str, ...], str]:
    """(templates, the label rows record): the reference set by name, or a custom list."""
    if isinstance(templates, str):
        if templates != REFERENCE_TEMPLATES:
            raise ConfigError(f"metric '{metric}': templates={templates!r}; give {REFERENCE_TEMPLATES!r} "
                              "(the reference's) or a list of strings with one '{{}}' each.")
        found = stylegan_nada_templates()
        return found, f"{REFERENCE_TEMPLATES}({len(found)})"
    found = tuple(templates)
    if not found or any(not isinstance(t, str) or t.count("{}") != 1 for t in found):
        raise ConfigError(f"metric '{metric}': every template needs exactly one '{{}}', got {found}.")
    return found, f"custom({len(found)})"


def directional_cosine(image_delta: Tensor, text_delta: Tensor) -> Tensor:
    """Row-wise cosine in float64; NaN where either vector is zero (norm below 1e-6)."""
    a, b = image_delta.double(), text_delta.double()
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    cos = (a * b).sum(dim=-1) / (na * nb)
    return torch.where((na > _ZERO) & (nb > _ZERO), cos, torch.full_like(cos, float("nan")))


def _tag_source(model: str, pretrained: str, cache_dir: str | None) -> tuple[bool, str, Path, str]:
    """Where open_clip fetches a tag's weights from: (cached?, file, folder, how to fetch)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if cfg.get("hf_hub"):  # open_clip prefers the hub copy when a tag has one
        # Same split and .safetensors-first order as open_clip.pretrained.download_pretrained.
        repo, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        names = [filename]
        if filename == HF_WEIGHTS_NAME:
            names.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        cached = any(isinstance(try_to_load_from_cache(repo, n, cache_dir=cache_dir), str) for n in names)
        folder = Path(cache_dir or hf_hub_cache())
        how = (
            f"On a machine with network run `hf download {repo} {filename}` (or create the metric once there) "
            f"and copy its hub cache to {folder} (HF_HUB_CACHE, or the metric's cache_dir), "
            "or pass pretrained=<path to the checkpoint file>."
        )
        return cached, f"{repo}/{filename}", folder, how
    folder = Path(cache_dir or Path("~/.cache/clip").expanduser())
    how = f"Download {cfg['url']} into {folder}, or pass pretrained=<path to the checkpoint file>."
    return (folder / Path(cfg["url"]).name).is_file(), Path(cfg["url"]).name, folder, how


def clip_network(model: str, pretrained: str, weights: str, seed: int, cache_dir: str | None,
                 metric: str = "directional_clip"):
    """An open_clip model in eval mode: pretrained (offline from the cache, or the one-line
    missing-weights error) or seeded random (test-only)."""
    import open_clip

    has_schema = model.startswith(("hf-hub:", "local-dir:"))  # open_clip then ignores `pretrained`
    if model not in open_clip.list_models() and not has_schema:
        raise ConfigError(f"metric '{metric}': unknown open_clip model {model!r}; see open_clip.list_models().")
    what = f"metric '{metric}' (open_clip model {model!r}, pretrained={pretrained!r})"
    with torch.random.fork_rng(devices=[]):  # model init draws from the global RNG
        if weights == "random":
            torch.manual_seed(seed)
            net = open_clip.create_model(model, pretrained=None, load_weights=False, pretrained_text=False)
        else:
            net = _create_pretrained(model, pretrained, cache_dir, what, has_schema)
    return net.eval().requires_grad_(False)


def load_clip(model: str, pretrained: str, weights: str, seed: int, cache_dir: str | None):
    """(open_clip model in eval mode, its tokenizer); the tokenizer must load offline."""
    import open_clip

    net = clip_network(model, pretrained, weights, seed, cache_dir)
    what = f"metric 'directional_clip' (open_clip model {model!r}, pretrained={pretrained!r})"
    try:
        tokenizer = open_clip.get_tokenizer(model, cache_dir=cache_dir)
    except OSError as err:  # hub tokenizers (HF text towers) do not ship in the package
        folder = cache_dir or hf_hub_cache()
        raise missing_weights(what, f"tokenizer of {model}", folder, "Create the metric once with network.") from err
    return net, tokenizer


def _create_pretrained(model: str, pretrained: str, cache_dir: str | None, what: str, has_schema: bool):
    import open_clip

    if has_schema or Path(pretrained).is_file():
        file, folder, how = model, Path(cache_dir or hf_hub_cache()), "Create the metric once with network access."
    elif open_clip.get_pretrained_cfg(model, pretrained):
        cached, file, folder, how = _tag_source(model, pretrained, cache_dir)
        if not cached and offline():
            raise missing_weights(what, file, folder, how)  # no network attempt at all
    else:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ConfigError(f"{what}: {pretrained!r} is neither a known tag (known: {tags}) nor a checkpoint file.")
    try:
        return open_clip.create_model(model, pretrained=pretrained, cache_dir=cache_dir, require_pretrained=True)
    except RuntimeError as err:
        if not str(err).startswith(_DOWNLOAD_FAILURES):
            raise
        raise missing_weights(what, file, folder, how) from err


def preprocess(images: Tensor, cfg: dict) -> Tensor:
    """[0, 1] NCHW -> the model's input: resize (per resize_mode), center crop, normalize."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    size = cfg["size"]
    th, tw = (size, size) if isinstance(size, int) else tuple(size)
    mode = InterpolationMode.BILINEAR if cfg.get("interpolation") == "bilinear" else InterpolationMode.BICUBIC
    resize_mode = cfg.get("resize_mode", "shortest")
    h, w = images.shape[-2:]
    if resize_mode == "squash":
        target = [th, tw]
    elif resize_mode in ("shortest", "longest"):
        scale = (max if resize_mode == "shortest" else min)(th / h, tw / w)
        target = [round(h * scale), round(w * scale)]
        if resize_mode == "shortest" and th == tw:
            target = [th]  # torchvision's shortest-edge resize, as open_clip uses for square inputs
    else:
        raise ConfigError(f"metric 'directional_clip': unsupported open_clip resize_mode {resize_mode!r}.")
    x = TF.resize(images.float(), target, interpolation=mode, antialias=True)
    x = TF.center_crop(x, [th, tw])  # pads with 0 (open_clip's fill_color) when 'longest'
    return TF.normalize(x, mean=list(cfg["mean"]), std=list(cfg["std"]))


class DirectionalCLIP(PairMetric):
    """Directional CLIP similarity; needs per-image ``source_text`` and ``target_text``.

    ``model`` / ``pretrained``: an open_clip model name and tag (or checkpoint path);
    ``weights="random"`` builds the same architecture with open_clip's own init under
    ``torch.manual_seed(seed)`` (tests); ``templates``: "stylegan_nada" (the reference's)
    or a list, each with one ``{}`` (a deviation: rows record ``<name>_templates``);
    ``cache_dir`` overrides open_clip's download cache (default: the HF hub cache);
    ``label_null`` / ``label_null_seed``: the label-shuffled null's permutations (0: off)
    and their seed (module docstring).
    ``embed_images`` / ``embed_texts`` are public for direction labeling.
    """

    name = "directional_clip"
    higher_is_better = True
    display_name = "Directional CLIP"
    needs = ("source_text", "target_text")

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pretrained: str = DEFAULT_PRETRAINED,
        weights: str = "pretrained",
        seed: int = 0,
        templates: str | Sequence[str] = REFERENCE_TEMPLATES,
        cache_dir: str | None = None,
        name: str = "directional_clip",
        label_null: int = 0,
        label_null_seed: int = 0,
    ) -> None:
        super().__init__()
        self.name = name
        if int(label_null) < 0:
            raise ConfigError(f"metric '{name}': label_null={label_null} must be >= 0 (0: no label-shuffled null)")
        self.label_null, self.label_null_seed = int(label_null), int(label_null_seed)
        if self.label_null:
            self.needs = (*type(self).needs, "null_texts")
        self.templates, self.templates_label = resolve_templates(templates, name)
        self.model_name, self.pretrained = model, pretrained
        self.weights = weights_label(check_weights_mode(weights, name), seed)
        self.model, self.tokenizer = load_clip(model, pretrained, weights, seed, cache_dir)
        self._text_cache: dict[str, Tensor] = {}  # text -> template-averaged embedding (CPU)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_images(self, images: Tensor) -> Tensor:
        """[0, 1] NCHW images -> L2-normalized image embeddings [N, D] (float32, images' device)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"metric '{self.name}': images must be N x 3 x H x W, got {tuple(images.shape)}.")
        self.model.to(images.device)
        pixels = preprocess(images, self.model.visual.preprocess_cfg)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Texts -> the mean over templates of L2-normalized embeddings [N, D] (float32, model
        device); not normalized again, so T(target) - T(source) is the reference's direction."""
        if isinstance(texts, str) or len(texts) == 0:
            raise DataError(f"metric '{self.name}': embed_texts takes a non-empty list of strings, got {texts!r}.")
        new = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if new:
            prompts = [template.format(text) for text in new for template in self.templates]
            tokens = self.tokenizer(prompts).to(self.device)
            emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            emb = emb.view(len(new), len(self.templates), -1).mean(dim=1)
            self._text_cache.update(zip(new, emb.cpu()))
        return torch.stack([self._text_cache[t] for t in texts]).to(self.device)

    def score(self, edited: Tensor, reference: Tensor, source_text, target_text, null_texts=None) -> dict[str, Tensor]:
        n = len(edited)
        for key, texts in (("source_text", source_text), ("target_text", target_text)):
            if isinstance(texts, str) or len(texts) != n or not all(isinstance(t, str) for t in texts):
                raise DataError(f"metric '{self.name}': {key} must be a list of {n} strings (one per image).")
        images = self.embed_images(torch.cat([edited, reference]))
        change = images[:n] - images[n:]
        texts = self.embed_texts(list(target_text) + list(source_text))
        out = {self.name: directional_cosine(change, texts[:n] - texts[n:]),
               f"{self.name}_templates": [self.templates_label] * n}
        if null_texts is not None:
            out.update(self._null(change, null_texts))
        return out

    def _null(self, change: Tensor, null_texts) -> dict[str, Tensor]:
        """The same cosine against each permutation's texts (``null_texts``: per image, JSON
        [[source, target], ...]): ``<name>_null_p<i>`` and their mean ``<name>_null``."""
        pairs = [json.loads(t) if isinstance(t, str) else t for t in null_texts]
        counts = {len(p) for p in pairs}  # label_null, or the fewer distinct derangements n directions have
        if len(pairs) != len(change) or len(counts) != 1 or not 0 < min(counts) <= self.label_null:
            raise DataError(f"metric '{self.name}': null_texts must hold one number (1 to {self.label_null}) of "
                            f"[source, target] pairs per image (label_null={self.label_null}), "
                            f"got {[len(p) for p in pairs]}.")
        columns = {}
        for i in range(counts.pop()):
            source, target = [p[i][0] for p in pairs], [p[i][1] for p in pairs]
            texts = self.embed_texts(target + source)
            columns[f"{self.name}_null_p{i}"] = directional_cosine(change, texts[:len(change)] - texts[len(change):])
        columns[f"{self.name}_null"] = torch.stack(list(columns.values())).nanmean(dim=0)
        return columns
