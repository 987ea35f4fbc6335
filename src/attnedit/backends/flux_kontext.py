"""FLUX.1 Kontext backend: diffusers' FluxKontextPipeline with the model card's settings
(28 steps, distilled guidance 2.5, no true CFG, seed 42, prompt = the sample's editing
instruction).

The documented call (the FLUX.1-Kontext-dev model card and diffusers 0.42.1
pipeline_flux_kontext.py L56-79): ``pipe(image=<one PIL image>, prompt=<str>,
guidance_scale=2.5, generator=torch.Generator().manual_seed(42))``, everything else at
the pipeline's defaults (max_area 1024^2, ``_auto_resize``: the condition image at one
of Kontext's trained resolutions, T5 max_sequence_length 512). The text encoders (CLIP,
T5) see only the prompt; the VAE encodes the condition image as the pipeline resizes it
(L932-946). Here the prompt embeddings are computed once per (image, prompt) by the
pipeline's own ``encode_prompt`` and handed to it; the rest is the pipeline's.

One reading differs between references, for non-square sources only: the model card's
call passes no height/width, so the output is the pipeline's default 1024 x 1024
whatever the source (L841-842); Black Forest Labs' own sampler (black-forest-labs/flux
@ 802fb47, src/flux/sampling.py L227-259, prepare_kontext) makes the output the
condition's aspect ratio. ``output_aspect="source"`` (default)
passes the source's height/width, so the output keeps its aspect ratio at ~max_area;
``output_aspect="square"`` is the model card's call. For square sources (PIE-Bench) both
are the same call.

The pipeline appends the condition image's latent tokens after the noisy latent's and
marks them in ``img_ids``; bias-delta guidance (GRAG / DCAG) finds them there. The
output is resized back to the source size (a PIE-Bench run saves it at its own size and
resizes it when scoring, as attnedit-evaluate: attnedit.run.saved_edits).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FluxKontextPipeline
from PIL import Image
from torch import Tensor

from attnedit.backends.pipeline_edit import PipelineEditBackend, ReusedConditionLatents
from attnedit.errors import ConfigError

OUTPUT_ASPECTS = ("source", "square")


class FluxKontextPipelineReusing(ReusedConditionLatents, FluxKontextPipeline):
    """FluxKontextPipeline that can reuse the condition image's VAE latents."""


class FluxKontextBackend(PipelineEditBackend):
    """Load FLUX.1 Kontext [dev] (hub id or local diffusers directory) and edit images."""

    pipeline_class = "FluxKontextPipeline"
    pipeline_type = FluxKontextPipelineReusing
    display_name = "FLUX.1 Kontext"
    hub_id = "black-forest-labs/FLUX.1-Kontext-dev"

    def __init__(
        self,
        path: str,
        num_inference_steps: int = 28,
        guidance_scale: float = 2.5,
        true_cfg_scale: float = 1.0,
        negative_prompt: str | None = None,
        max_area: int = 1024**2,
        auto_resize: bool = True,
        max_sequence_length: int = 512,
        output_aspect: str = "source",
        name: str = "flux_kontext",
        **common: Any,
    ) -> None:
        if max_area < 1:
            raise ConfigError(f"model.max_area={max_area} must be a positive number of pixels (default 1024*1024)")
        if true_cfg_scale > 1 and negative_prompt is None:
            raise ConfigError("model.true_cfg_scale > 1 needs model.negative_prompt (the pipeline ignores it otherwise)")
        if output_aspect not in OUTPUT_ASPECTS:
            raise ConfigError(f"model.output_aspect={output_aspect!r} is not one of {OUTPUT_ASPECTS} (source: the "
                              "source's aspect ratio; square: the model card's call, 1024x1024 output)")
        self.guidance_scale = float(guidance_scale)
        self.true_cfg_scale = float(true_cfg_scale)
        self.negative_prompt = negative_prompt
        self.max_area = int(max_area)
        self.auto_resize = bool(auto_resize)
        self.max_sequence_length = int(max_sequence_length)
        self.output_aspect = output_aspect
        super().__init__(path, num_inference_steps=num_inference_steps, name=name, **common)

    def pipeline_kwargs(self, sources: Tensor) -> dict[str, Any]:
        height, width = sources.shape[-2:]
        size = {"height": int(height), "width": int(width)} if self.output_aspect == "source" else {}
        return {
            **size,  # the output's aspect ratio; its size follows max_area
            "guidance_scale": self.guidance_scale,
            "true_cfg_scale": self.true_cfg_scale,
            "max_area": self.max_area,
            "_auto_resize": self.auto_resize,
        }

    def settings(self) -> dict[str, Any]:
        return {
            "guidance_scale": self.guidance_scale,
            "true_cfg_scale": self.true_cfg_scale,
            "negative_prompt": self.negative_prompt,
            "max_area": self.max_area,
            "auto_resize": self.auto_resize,
            "max_sequence_length": self.max_sequence_length,
            "output_aspect": self.output_aspect,
        }

    def encode_text(self, image: Image.Image, prompt: str) -> dict[str, Any]:
        branches = {"prompt": prompt}
        if self.true_cfg_scale > 1:  # the pipeline's do_true_cfg (a negative prompt is required above)
            branches["negative"] = self.negative_prompt
        encoded = {}
        for branch, text in branches.items():
            embeds, pooled, _ = self.pipe.encode_prompt(prompt=[text], prompt_2=None,
                                                        device=self.pipe._execution_device,
                                                        max_sequence_length=self.max_sequence_length)
            encoded[branch] = (embeds, pooled)
        return encoded

    def text_kwargs(self, conditions: list[dict[str, Any]]) -> dict[str, Any]:
        # T5 pads every prompt to max_sequence_length: the embeddings stack as they are
        kwargs = {"prompt": None,
                  "prompt_embeds": torch.cat([c["prompt"][0] for c in conditions]),
                  "pooled_prompt_embeds": torch.cat([c["prompt"][1] for c in conditions])}
        if "negative" in conditions[0]:
            kwargs.update(negative_prompt_embeds=torch.cat([c["negative"][0] for c in conditions]),
                          negative_pooled_prompt_embeds=torch.cat([c["negative"][1] for c in conditions]))
        return kwargs
