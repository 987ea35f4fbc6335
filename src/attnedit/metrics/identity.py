"""Identity similarity: cosine of face embeddings, FaceNet by default, ArcFace IR-SE50 as
the pSp/e4e family and the diffusion-editing code built on it use.

Each image is quantized to uint8 exactly as the runner saves it (round(x * 255)), so a
score computed in memory equals one computed from the saved PNGs. Then a backbone
(``backbone``) and a face crop (``align``):

- ``backbone="facenet"`` (default; the SAD paper names FaceNet): facenet-pytorch's
  InceptionResnetV1 with VGGFace2 weights, 160x160 crops standardized as (x - 127.5) / 128.
- ``backbone="arcface_ir_se50"``: ArcFace IR-SE50 (:mod:`attnedit.metrics.arcface`), the
  network of pSp's ID loss (eladrich/pixel2style2pixel @ 5cfff38, criteria/id_loss.py L11)
  and of semantic-diffusion's (renhaa/semantic-diffusion @ 91f0a15, criteria/id_loss.py
  L17, held in an attribute named ``facenet``), 112x112 crops in [-1, 1]; its weights file
  ``model_ir_se50.pth`` must be on disk (``arcface_file``), else one error naming it.
- ``align="mtcnn"`` (default): faces found and cropped by facenet-pytorch's MTCNN (its
  weights ship in the package; the largest face is kept, ``margin`` pixels added as in
  facenet-pytorch), the crop taken from a PIL image as facenet-pytorch's README pipeline
  does (``mtcnn(Image.open(path))``). An image without a detected face falls back to its
  largest centred square resized (bilinear, antialiased): for face-centred data such as
  CelebA-HQ that is the whole aligned face.
- ``align="none"``: that centred square for every image (no detection).
- ``align="fixed_crop"``: the literature's fixed crop, rows 35:223 and columns 32:220 of the
  256x256 image (pSp criteria/id_loss.py L17; semantic-diffusion criteria/id_loss.py L26),
  average-pooled to the network's input (``AdaptiveAvgPool2d``, pSp L13 and L18: 112 for
  ArcFace, 160 here for FaceNet). Images of another size are first resized to 256x256
  (semantic-diffusion L59-60: torchvision's ``Resize((256, 256))``, bilinear and, in its
  pinned torchvision 0.17, antialiased). No detection: the crop assumes aligned faces.

The per-row column ``id_face_fallback`` is True when either image of the pair used the
centred-square fallback (always with ``align="none"``, never with ``fixed_crop``). Rows
record the backbone in ``id_sim_backbone`` and the crop in ``id_sim_align``
(``mtcnn(margin=0)``, ``none``, ``fixed_crop``); tables state both in their titles
(``attnedit.report.marks``). The score is the cosine of the L2-normalized embeddings of
the reference and the edited image.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from attnedit.errors import ConfigError, DataError
from attnedit.metrics.base import PairMetric
from attnedit.metrics.weights import check_weights_mode, from_torch_hub, weights_label

FACE_SIZE = 160
VGGFACE2_FILE = "20180402-114759-vggface2.pt"
# Where facenet-pytorch's load_weights downloads it from (facenet_pytorch/models/inception_resnet_v1.py).
VGGFACE2_URL = f"https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/{VGGFACE2_FILE}"
ALIGN_MODES = ("mtcnn", "none", "fixed_crop")
#: backbone -> (input side, what (pixel - 127.5) is divided by: 128 for FaceNet, 127.5 for [-1, 1])
BACKBONES = {"facenet": (FACE_SIZE, 128.0), "arcface_ir_se50": (112, 127.5)}
#: pSp's crop of the 256x256 face image (criteria/id_loss.py L17): rows 35:223, columns 32:220.
CROP_FRAME = 256
CROP_ROWS, CROP_COLS = (35, 223), (32, 220)
#: How table titles name each backbone and crop (attnedit.report.marks).
BACKBONE_TEXT = {
    "facenet": "FaceNet (facenet-pytorch InceptionResnetV1, VGGFace2, 160x160)",
    "arcface_ir_se50": "ArcFace IR-SE50 (pSp's model_ir_se50.pth, 112x112)",
}
ALIGN_TEXT = {
    "mtcnn": "on MTCNN face crops (margin {margin} px; no face: the centred square)",
    "none": "on the whole image (largest centred square, resized)",
    "fixed_crop": "on pSp's fixed crop (rows 35:223, columns 32:220 of the 256x256 image, average-pooled)",
}


def identity_title(backbone: str, align: str) -> str:
    """'FaceNet (...) on MTCNN face crops (margin 0 px ...)' from a row's recorded labels."""
    mode, _, margin = align.partition("(margin=")
    text = ALIGN_TEXT.get(mode, f"on {align} crops").format(margin=margin.rstrip(")"))
    return f"{BACKBONE_TEXT.get(backbone, backbone)} {text}"


def facenet_checkpoint_dir() -> Path:
    """$TORCH_HOME/checkpoints, the directory facenet-pytorch itself reads.

    Not torch.hub's $TORCH_HOME/hub/checkpoints: facenet-pytorch has its own lookup.
    """
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    return Path(get_torch_home()) / "checkpoints"


def load_facenet(weights: str = "pretrained", seed: int = 0) -> nn.Module:
    """InceptionResnetV1 in eval mode, VGGFace2 weights or seeded random weights
    (``torch.manual_seed(seed); InceptionResnetV1()``, reproducible outside attnedit)."""
    from facenet_pytorch import InceptionResnetV1

    # Construction draws from the global RNG before any weights are loaded; keep it untouched.
    with torch.random.fork_rng(devices=[]):
        if weights == "random":  # the library's own init under the seed, as the LPIPS and CLIP metrics do
            torch.manual_seed(seed)
            return InceptionResnetV1(pretrained=None).eval().requires_grad_(False)
        net = from_torch_hub(lambda: InceptionResnetV1(pretrained="vggface2"), VGGFACE2_URL,
                             "metric 'id_sim' (facenet-pytorch InceptionResnetV1, vggface2)", facenet_checkpoint_dir())
    return net.eval().requires_grad_(False)


def load_backbone(backbone: str, weights: str, seed: int, arcface_file: str | None) -> nn.Module:
    if backbone == "facenet":
        return load_facenet(weights, seed)
    from attnedit.metrics.arcface import load_arcface

    return load_arcface(weights, seed, arcface_file)


def to_uint8_hwc(images: Tensor) -> Tensor:
    """[0, 1] NCHW floats -> NHWC uint8, rounded like the runner's PNG writer."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)


def center_square(image_hwc: Tensor, size: int = FACE_SIZE) -> Tensor:
    """Fallback crop: the largest centred square of an HWC image, resized to size x size.

    Returns CHW float pixels in [0, 255] (the same scale as facenet-pytorch's crops).
    """
    h, w = image_hwc.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image_hwc[top : top + side, left : left + side].permute(2, 0, 1).float()
    if side == size:
        return crop
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def fixed_crop(pixels: Tensor, size: int) -> Tensor:
    """pSp's face crop of NCHW float pixels, average-pooled to size x size (module docstring)."""
    if pixels.shape[-2:] != (CROP_FRAME, CROP_FRAME):
        pixels = F.interpolate(pixels, size=(CROP_FRAME, CROP_FRAME), mode="bilinear", antialias=True,
                               align_corners=False)
    crop = pixels[:, :, CROP_ROWS[0] : CROP_ROWS[1], CROP_COLS[0] : CROP_COLS[1]]
    return F.adaptive_avg_pool2d(crop, size)


class IdentitySimilarity(PairMetric):
    """Identity cosine similarity, per image pair, with a no-face flag column.

    ``weights="random"`` gives the same network with seeded random weights (tests);
    ``backbone``: "facenet" or "arcface_ir_se50" (``arcface_file``: its weights file,
    None: $TORCH_HOME/checkpoints/model_ir_se50.pth); ``align``: "mtcnn" (detect and crop
    the face), "none" (the centred square for all) or "fixed_crop" (pSp's crop);
    ``margin``: MTCNN margin in pixels of the crop.
    """

    name = "id_sim"
    higher_is_better = True
    display_name = "identity similarity"

    def __init__(
        self,
        weights: str = "pretrained",
        seed: int = 0,
        align: str = "mtcnn",
        margin: int = 0,
        name: str = "id_sim",
        backbone: str = "facenet",
        arcface_file: str | None = None,
    ) -> None:
        super().__init__()
        if align not in ALIGN_MODES:
            raise ConfigError(f"metric '{name}': align={align!r} is not one of {ALIGN_MODES}.")
        if backbone not in BACKBONES:
            raise ConfigError(f"metric '{name}': backbone={backbone!r} is not one of {tuple(BACKBONES)}.")
        self.name = name
        self.fallback_column = "id_face_fallback" if name == "id_sim" else f"{name}_face_fallback"
        self.backbone = backbone
        self.face_size, self.divisor = BACKBONES[backbone]
        self.align = align
        self.align_label = f"mtcnn(margin={margin})" if align == "mtcnn" else align
        self.weights = weights_label(check_weights_mode(weights, name), seed)
        self.embedder: nn.Module = load_backbone(backbone, weights, seed, arcface_file)
        self.mtcnn = None
        if align == "mtcnn":
            from facenet_pytorch import MTCNN

            with torch.random.fork_rng(devices=[]):  # its layers init randomly before loading
                self.mtcnn = MTCNN(image_size=self.face_size, margin=margin, select_largest=True).eval()

    def align_faces(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """[0, 1] NCHW images -> (standardized face crops [N, 3, S, S], fallback flags [N])."""
        pixels = to_uint8_hwc(images)
        if self.align == "fixed_crop":
            crops = fixed_crop(pixels.permute(0, 3, 1, 2).float(), self.face_size)
            return (crops - 127.5) / self.divisor, torch.zeros(len(images), dtype=torch.bool)
        from facenet_pytorch import extract_face

        boxes = self._detect(pixels)
        crops, fallback = [], []
        for image, box in zip(pixels, boxes):
            if box is None:
                crops.append(center_square(image, self.face_size))
            else:  # a PIL image, as facenet-pytorch's README feeds MTCNN: its crop resize is PIL's bilinear
                # (a tensor takes another path: area resize, then truncation to uint8)
                face = extract_face(Image.fromarray(image.cpu().numpy()), box, self.face_size, self.mtcnn.margin)
                crops.append(face.to(images.device))
            fallback.append(box is None)
        faces = (torch.stack(crops) - 127.5) / self.divisor
        return faces, torch.tensor(fallback, dtype=torch.bool)

    def _detect(self, pixels: Tensor) -> list:
        """Largest face box per image, or None (always None when align='none')."""
        if self.mtcnn is None:
            return [None] * len(pixels)
        self.mtcnn.to(pixels.device)
        self.mtcnn.device = pixels.device  # detect_face puts its work tensors there
        # MTCNN.forward's box selection breaks on mixed found/not-found batches under
        # numpy 2, so use detect() (boxes sorted largest first) and crop ourselves.
        boxes, _ = self.mtcnn.detect(pixels)
        return [None if b is None else [float(v) for v in b[0]] for b in boxes]

    @torch.no_grad()
    def embed(self, faces: Tensor) -> Tensor:
        """Standardized crops -> L2-normalized embeddings [N, D]."""
        self.embedder.to(faces.device)
        return F.normalize(self.embedder(faces).float(), dim=1)

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        if edited.shape[1] != 3:
            raise DataError(f"metric '{self.name}' needs RGB images, got {edited.shape[1]} channels.")
        n = len(edited)
        faces, fallback = self.align_faces(torch.cat([edited, reference]))
        emb = self.embed(faces).double()
        cosine = (emb[:n] * emb[n:]).sum(dim=1)
        return {self.name: cosine, self.fallback_column: fallback[:n] | fallback[n:],
                f"{self.name}_backbone": [self.backbone] * n, f"{self.name}_align": [self.align_label] * n}
