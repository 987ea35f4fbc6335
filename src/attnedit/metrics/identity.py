"""Identity similarity: cosine of FaceNet (InceptionResnetV1, VGGFace2) face embeddings.

Each image is quantized to uint8 exactly as the runner saves it (round(x * 255)), so a
score computed in memory equals one computed from the saved PNGs. Faces are found and
cropped to 160x160 by facenet-pytorch's MTCNN (its weights ship in the package; the
largest face is kept, ``margin`` pixels added as in facenet-pytorch), the crop taken from
a PIL image as facenet-pytorch's README pipeline does (``mtcnn(Image.open(path))``). An image without
a detected face falls back to its largest centred square resized to 160x160 (bilinear,
antialiased): for face-centred data such as CelebA-HQ that is the whole aligned face.
The per-row column ``id_face_fallback`` is True when either image of the pair used the
fallback; with ``align="none"`` no detection runs and every row is marked True.

Crops are standardized as (x - 127.5) / 128 and embedded; the score is the cosine of
the L2-normalized embeddings of the reference and the edited image.
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
ALIGN_MODES = ("mtcnn", "none")


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


class IdentitySimilarity(PairMetric):
    """FaceNet identity cosine similarity, per image pair, with a no-face flag column.

    ``weights="random"`` gives the same network with seeded random weights (tests);
    ``align``: "mtcnn" (detect and crop the face) or "none" (fallback crop for all);
    ``margin``: MTCNN margin in pixels of the 160x160 crop.
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
    ) -> None:
        super().__init__()
        if align not in ALIGN_MODES:
            raise ConfigError(f"metric '{name}': align={align!r} is not one of {ALIGN_MODES}.")
        self.name = name
        self.fallback_column = "id_face_fallback" if name == "id_sim" else f"{name}_face_fallback"
        self.align = align
        self.weights = weights_label(check_weights_mode(weights, name), seed)
        self.embedder: nn.Module = load_facenet(weights, seed)
        self.mtcnn = None
        if align == "mtcnn":
            from facenet_pytorch import MTCNN

            with torch.random.fork_rng(devices=[]):  # its layers init randomly before loading
                self.mtcnn = MTCNN(image_size=FACE_SIZE, margin=margin, select_largest=True).eval()

    def align_faces(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """[0, 1] NCHW images -> (standardized face crops [N, 3, 160, 160], fallback flags [N])."""
        from facenet_pytorch import extract_face

        pixels = to_uint8_hwc(images)
        boxes = self._detect(pixels)
        crops, fallback = [], []
        for image, box in zip(pixels, boxes):
            if box is None:
                crops.append(center_square(image))
            else:  # a PIL image, as facenet-pytorch's README feeds MTCNN: its crop resize is PIL's bilinear
                # (a tensor takes another path: area resize, then truncation to uint8)
                face = extract_face(Image.fromarray(image.cpu().numpy()), box, FACE_SIZE, self.mtcnn.margin)
                crops.append(face.to(images.device))
            fallback.append(box is None)
        faces = (torch.stack(crops) - 127.5) / 128.0
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
        return {self.name: cosine, self.fallback_column: fallback[:n] | fallback[n:]}
