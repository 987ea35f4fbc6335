"""Qwen-Image-Edit backend: diffusers' QwenImageEditPipeline called as the official GRAG
and DCAG PIE-Bench scripts call it.

The official call, per image (GRAG: little-misfit/GRAG-Image-Editing @ d0ab2e9,
Qwen-Edit-GRAG/test.py L72 and L80-89; DCAG: leeguandong/DCAG @ 2b0782e, test.py L59 and
L68-77): ``pipeline(image=<one PIL image as read>, prompt=<editing_instruction>,
generator=torch.manual_seed(42), true_cfg_scale=4.0, negative_prompt=" ",
num_inference_steps=24)``. Their pipeline (GRAG Qwen-Edit-GRAG/hacked_models/pipeline.py
L639-640 and L677-681 and L697-715; DCAG dcag/pipeline.py L640-641, L679-681, L698-716)
is diffusers' (0.42.1 pipeline_qwenimage_edit.py L623-624, L661-664, L679-697): the one
PIL image is resized to about 1 MP (1024 x 1024 for PIE-Bench's 512 x 512), and that
resized image is what the Qwen2.5-VL text encoder sees, with the instruction and with
the negative prompt, and what the VAE encodes as the condition image.

Here :meth:`encode_text` runs the pipeline's ``encode_prompt`` on exactly that resized
image (same resize, ``calculate_dimensions`` and the pipeline's image processor), once per
(image, instruction), and the pipeline gets the embeddings. A list of images would not
do: the image processor passes lists through unresized (``VaeImageProcessor.resize``,
image_processor.py L463-522, has no branch for lists), so the text encoder would see the
512 x 512 source (~324 vision tokens instead of ~1369), and a batch of one image with
several prompts cannot go to the processor at all.
``torch.manual_seed(42)`` and a fresh ``torch.Generator("cpu").manual_seed(42)`` give the
same noise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import QwenImageEditPipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
from PIL import Image
from torch import Tensor

from attnedit.backends.pipeline_edit import PipelineEditBackend, ReusedConditionLatents


class QwenImageEditPipelineReusing(ReusedConditionLatents, QwenImageEditPipeline):
    """QwenImageEditPipeline that can reuse the condition image's VAE latents."""


class QwenImageEditBackend(PipelineEditBackend):
    """Load Qwen-Image-Edit (hub id or local diffusers directory) and edit images."""

    pipeline_class = "QwenImageEditPipeline"
    pipeline_type = QwenImageEditPipelineReusing
    display_name = "Qwen-Image-Edit"
    hub_id = "Qwen/Qwen-Image-Edit"

    def __init__(
        self,
        path: str,
        num_inference_steps: int = 24,
        true_cfg_scale: float = 4.0,
        negative_prompt: str | None = " ",
        name: str = "qwen_image_edit",
        **common: Any,
    ) -> None:
        self.true_cfg_scale = float(true_cfg_scale)
        self.negative_prompt = negative_prompt
        super().__init__(path, num_inference_steps=num_inference_steps, name=name, **common)

    def pipeline_kwargs(self, sources: Tensor) -> dict[str, Any]:
        return {"true_cfg_scale": self.true_cfg_scale}

    def settings(self) -> dict[str, Any]:
        return {"true_cfg_scale": self.true_cfg_scale, "negative_prompt": self.negative_prompt}

    def prompt_image(self, image: Image.Image) -> Image.Image:
        """The image the text encoder sees in the official call: the source resized to ~1 MP
        (pipeline_qwenimage_edit.py L623-624, L661-663)."""
        width, height, _ = calculate_dimensions(1024 * 1024, image.width / image.height)
        return self.pipe.image_processor.resize(image, height, width)

    def encode_text(self, image: Image.Image, prompt: str) -> dict[str, Any]:
        shown = self.prompt_image(image)
        device = self.pipe._execution_device
        branches = {"prompt": prompt}
        if self.true_cfg_scale > 1 and self.negative_prompt is not None:  # the pipeline's do_true_cfg
            branches["negative"] = self.negative_prompt
        encoded = {}
        for branch, text in branches.items():
            embeds, mask = self.pipe.encode_prompt(prompt=[text], image=shown, device=device)
            # encode_prompt drops an all-ones mask; keep it for padding across a batch
            encoded[branch] = (embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
                               if mask is None else mask)
        return encoded

    def text_kwargs(self, conditions: list[dict[str, Any]]) -> dict[str, Any]:
        embeds, mask = _pad([c["prompt"] for c in conditions])
        kwargs = {"prompt": None, "prompt_embeds": embeds, "prompt_embeds_mask": mask}
        if "negative" in conditions[0]:
            negative, negative_mask = _pad([c["negative"] for c in conditions])
            kwargs.update(negative_prompt_embeds=negative, negative_prompt_embeds_mask=negative_mask)
        return kwargs


def _pad(encoded: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Stack per-sample (embeds [1, T_i, D], mask [1, T_i]) with zeros after each, as the
    pipeline pads a list of prompts (_get_qwen_prompt_embeds, L261-267)."""
    length = max(embeds.shape[1] for embeds, _ in encoded)
    embeds = torch.cat([F.pad(e, (0, 0, 0, length - e.shape[1])) for e, _ in encoded])
    mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for _, m in encoded])
    return embeds, mask
