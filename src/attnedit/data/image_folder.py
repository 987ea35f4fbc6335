"""Real images from a folder, resized (short side) and center-cropped to the model size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from attnedit.data.base import Dataset, Sample
from attnedit.errors import ConfigError, DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_image(path: Path, size: int | None = None) -> torch.Tensor:
    """float 3xHxW in [0, 1]; with ``size``: bicubic resize of the short side, center crop."""
    try:
        with Image.open(path) as handle:
            image = handle.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read image {path}: {err}. Remove or replace the file.") from err
    if size is not None:
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class ImageFolder(Dataset):
    name = "image_folder"

    def __init__(self, root: str, size: int = 256, num_samples: int | None = None, name: str = "image_folder",
                 max_images: int | None = None) -> None:
        """``num_samples``: the first n images (sorted by path), null: all; the key every
        dataset has, so recipes that set dataset.num_samples (quickstart) take a folder too.
        ``max_images``: its former name."""
        self.name = name
        limit = num_samples if num_samples is not None else max_images
        if limit is not None and int(limit) < 1:
            raise ConfigError(f"dataset.num_samples must be >= 1 or null (all images), got {limit}")
        self.root = Path(root).expanduser()
        self.size = size
        if not self.root.is_dir():
            raise DataError(f"dataset.root={self.root} is not a directory; point it at a folder of images")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise DataError(f"dataset.root={self.root} holds no images ({', '.join(EXTENSIONS)})")
        self.files = {str(p.relative_to(self.root).with_suffix("")): p for p in files[:limit]}

    def sample_ids(self) -> list[str]:
        return list(self.files)

    def load(self, sample_id: str) -> Sample:
        path = self.files[sample_id]
        return Sample(id=sample_id, image=load_image(path, self.size), path=str(path))

    def describe(self):
        return {"name": self.name, "root": str(self.root), "size": self.size, "num_samples": len(self.files)}
