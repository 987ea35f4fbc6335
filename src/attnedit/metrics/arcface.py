"""ArcFace IR-SE50: the identity network of pSp's ID loss and of the diffusion-editing code
built on it, written here so that the published ``model_ir_se50.pth`` loads into it.

What the references use (read at eladrich/pixel2style2pixel @ 5cfff38 and
renhaa/semantic-diffusion @ 91f0a15):

- pSp ``criteria/id_loss.py`` L11-13: ``Backbone(input_size=112, num_layers=50,
  drop_ratio=0.6, mode='ir_se')`` (affine batch norm at the end), the weights
  ``model_paths['ir_se50']`` = ``pretrained_models/model_ir_se50.pth``
  (``configs/paths_config.py`` L13; pSp's README, "IR-SE50 Model", links the file,
  taken from TreB1eN/InsightFace_Pytorch). semantic-diffusion ``criteria/id_loss.py``
  L14-19 holds the same network under the attribute name ``facenet``.
- The architecture (pSp ``models/encoders/model_irse.py`` L20-48, ``helpers.py`` L25-35,
  L56-72, L97-119): a 3x3 conv, BN, PReLU stem at 64 channels; four stages of 3, 4, 14
  and 3 IR-SE units of depth 64, 128, 256, 512, the first unit of each stage with stride
  2; a unit is BN, 3x3 conv, PReLU, 3x3 conv (the stride), BN, squeeze-excitation
  (reduction 16, bias-free 1x1 convs, ReLU, sigmoid), plus a shortcut that subsamples
  (same width) or is a strided 1x1 conv + BN (new width); the head is BN, dropout,
  flatten, linear 512*7*7 -> 512, BN1d; the output is L2-normalized.
- Input: 112x112 RGB in [-1, 1] (pSp normalizes its images with mean 0.5, std 0.5,
  ``configs/transforms_config.py`` L27, L32, L36; diffusion samples are in [-1, 1]).

The module names below mirror the published state dict (``input_layer.0.weight``,
``body.<i>.res_layer.5.fc1.weight``, ``output_layer.3.weight`` ...), nothing else is
taken from that code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from attnedit.errors import ConfigError, WeightsNotFoundError

ARCFACE_SIZE = 112
ARCFACE_FILE = "model_ir_se50.pth"
#: Where the file is published (pSp's README, "IR-SE50 Model"; TreB1eN's weights).
ARCFACE_SOURCE = ("pSp's README (github.com/eladrich/pixel2style2pixel, 'IR-SE50 Model': "
                  "https://drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn/view)")
#: (units, depth) per stage of IR-SE50; each stage starts with a stride-2 unit.
STAGES = ((3, 64), (4, 128), (14, 256), (3, 512))
SE_REDUCTION = 16
EMBEDDING = 512


class Subsample(nn.Module):
    """The parameter-free shortcut of a unit that keeps its width: every ``stride``-th pixel."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :: self.stride, :: self.stride]


class SqueezeExcite(nn.Module):
    """Channel gates from the spatial mean (two bias-free 1x1 convs, ReLU, sigmoid)."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class IRSEUnit(nn.Module):
    """One improved-residual unit with squeeze-excitation (the stride is on its second conv)."""

    def __init__(self, width_in: int, width: int, stride: int) -> None:
        super().__init__()
        if width_in == width:
            self.shortcut_layer = Subsample(stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(width_in, width, 1, stride, bias=False),
                                                nn.BatchNorm2d(width))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(width_in),
            nn.Conv2d(width_in, width, 3, 1, 1, bias=False),
            nn.PReLU(width),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            SqueezeExcite(width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE50 for 112x112 inputs in [-1, 1]; returns L2-normalized 512-d embeddings."""

    def __init__(self, dropout: float = 0.6) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, width_in = [], 64
        for count, width in STAGES:
            for i in range(count):
                units.append(IRSEUnit(width_in, width, 2 if i == 0 else 1))
                width_in = width
        self.body = nn.Sequential(*units)
        side = ARCFACE_SIZE // 16  # four stride-2 stages
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(width_in),
            nn.Dropout(dropout),  # inactive in eval mode; kept so the indices match the state dict
            nn.Flatten(),
            nn.Linear(width_in * side * side, EMBEDDING),
            nn.BatchNorm1d(EMBEDDING),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (ARCFACE_SIZE, ARCFACE_SIZE):
            raise ValueError(f"IR-SE50 takes {ARCFACE_SIZE}x{ARCFACE_SIZE} crops, got {tuple(x.shape[-2:])}")
        embedding = self.output_layer(self.body(self.input_layer(x)))
        return nn.functional.normalize(embedding, dim=1)


def default_arcface_path() -> Path:
    """$TORCH_HOME/checkpoints/model_ir_se50.pth: beside facenet-pytorch's VGGFace2 file
    (the folder facenet-pytorch reads, attnedit.metrics.identity.facenet_checkpoint_dir)."""
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    return Path(get_torch_home()) / "checkpoints" / ARCFACE_FILE


def load_arcface(weights: str = "pretrained", seed: int = 0, path: str | Path | None = None) -> IRSE50:
    """IR-SE50 in eval mode: the published weights from ``path`` (default
    :func:`default_arcface_path`), or seeded random weights (``weights="random"``, tests).

    The file is never downloaded (it is published on Google Drive); without it, one
    error naming the file and where to get it, never random weights in its place."""
    with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG
        if weights == "random":
            torch.manual_seed(seed)
            return IRSE50().eval().requires_grad_(False)
        net = IRSE50()
    file = Path(path).expanduser() if path else default_arcface_path()
    if not file.is_file():
        raise WeightsNotFoundError(
            f"metric 'id_sim' (backbone=arcface_ir_se50): the weights file {file} does not exist. Download "
            f"{ARCFACE_FILE} from {ARCFACE_SOURCE} and put it there, or name it with "
            "metrics.id_sim.arcface_file=<path>; or use backbone=facenet.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(f"metric 'id_sim': {file} is not a readable PyTorch state dict ({first}); "
                          f"it should be {ARCFACE_FILE} from {ARCFACE_SOURCE}.") from None
    load_state(net, state, file)
    return net.eval().requires_grad_(False)


def load_state(net: IRSE50, state, file: Path) -> None:
    """Strict loading, except the batch norms' ``num_batches_tracked`` (absent from files
    written by old PyTorch; unused in eval mode)."""
    if not isinstance(state, dict):
        raise ConfigError(f"metric 'id_sim': {file} holds a {type(state).__name__}, not a state dict; "
                          f"it should be {ARCFACE_FILE} from {ARCFACE_SOURCE}.")
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise ConfigError(f"metric 'id_sim': {file} does not fit IR-SE50 ({' '.join(str(err).split())[:300]}); "
                          f"it should be {ARCFACE_FILE} from {ARCFACE_SOURCE}.") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = result.unexpected_keys
    if missing or unexpected:
        raise ConfigError(
            f"metric 'id_sim': {file} is not an IR-SE50 state dict ({len(missing)} keys missing, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}); "
            f"it should be {ARCFACE_FILE} from {ARCFACE_SOURCE}.")
