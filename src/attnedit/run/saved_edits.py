"""How the runner saves an edited image, and what it scores of it: the saved file as
``attnedit-evaluate`` reads it.

PIE-Bench (``dataset.saved_size``; the file format is ``dataset.edited_format``):

- ``output`` (default, the official scripts' order): the file holds the pipeline's own
  output at its own size (Qwen-Image-Edit: 1024 x 1024 for PIE-Bench's 512 x 512),
  converted to 8 bits as the pipeline's PIL output is; leeguandong/DCAG @ 2b0782e
  ``test.py`` L79-83 and little-misfit/GRAG-Image-Editing @ d0ab2e9
  ``Qwen-Edit-GRAG/test.py`` L91-95 save ``image[0]`` (PIL) as ``<id>.jpg``, PIL's default
  quality 75. The scored image is that file decoded (``read_rgb_uint8``) and brought to the
  source size by attnedit-evaluate's own ``edited_batch`` (bicubic, antialiased; the
  authors' resize is not published, and PnPInversion's evaluator asserts equal sizes,
  cure-lab/PnPInversion @ 07f97f4 evaluation/matrics_calculator.py L307): a run's row
  equals attnedit-evaluate on the run's own file.
- ``source`` (the order before the key existed): the backend resizes the float output to
  the source size and the file is written at that size, so the JPEG's error is made at
  512 x 512 instead of 1024 x 1024 and the resize sees float pixels instead of 8-bit
  ones. Measured (benchmarks/bench_saved_size.py: 5 photographs at 512 x 512, each
  "edited" at 1024 x 1024 as a bicubic upsample with a recoloured ellipse): an exact
  reconstruction scores 3.8-4.7 dB more background PSNR saved at 1024; with a model error
  that puts background PSNR near 30 dB, 0.02-1.17 dB less (SSIM 0.024-0.051 less), as
  the JPEG at 512 smooths that error away. The sign depends on the image.

Other datasets save lossless PNGs of outputs at the source size (``source``).
"""

from __future__ import annotations

import io
from collections import Counter

import torch
from torch import Tensor

from attnedit.data.piebench import read_rgb_uint8
from attnedit.evaluate.inputs import Staging, edited_batch
from attnedit.metrics.settings import encode_saved

#: How attnedit-evaluate brings an edit of another size to the source's here: a resize
#: (its ``edited_size=auto`` crops a non-square image, which is for side-by-side outputs).
FIT = "resize"


def saved_edit(output: Tensor, size: tuple[int, int], image_format: str, quality: int,
               saved_size: str, where: str = "edit") -> tuple[bytes, Tensor]:
    """One edited image (float CHW in [0, 1]) as the bytes of the file the run saves and the
    float CHW image at ``size`` (H, W) that is scored. ``saved_size="source"`` expects
    ``output`` at ``size`` already; ``"output"`` takes it at the model's own size."""
    data, decoded = encode_saved(output, image_format, quality)
    if saved_size == "source":
        return data, decoded
    pixels = torch.from_numpy(read_rgb_uint8(io.BytesIO(data), where))  # attnedit-evaluate's decoder
    return data, fit_saved(pixels, size, where).to(output.device)


def fit_saved(pixels: Tensor, size: tuple[int, int], where: str = "edit") -> Tensor:
    """A decoded uint8 CHW image as float CHW at ``size``: attnedit-evaluate's ``edited_batch``."""
    return edited_batch([pixels], size, FIT, [where], Staging(torch.device("cpu")), Counter())[0]
