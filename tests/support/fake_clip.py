"""A stand-in for the CLIP model of automatic direction labels, named in configs as
``fake_clip.FakeClip`` (tests/support is on sys.path)."""

from __future__ import annotations

import torch


class FakeClip:
    """Deterministic stand-ins for CLIP embeddings: the mean colour, and fixed text vectors."""

    weights = "fake"

    def __init__(self, **_) -> None:  # configs hand it the CLIP node's keys (weights)
        pass

    def embed_images(self, images):
        return images.mean(dim=(2, 3))

    def embed_texts(self, texts):
        table = {"x": [0.0, 0.0, 0.0], "red": [1.0, 0.0, 0.0], "blue": [0.0, 0.0, 1.0]}
        return torch.tensor([table[t] for t in texts])
