"""FLUX.1 Kontext backend: diffusers' FluxKontextPipeline with the model card's
settings (28 steps, distilled guidance 2.5, no true CFG, seed 42, prompt = the sample's
editing instruction).

The pipeline appends the condition image's latent tokens after the noisy latent's and
marks them in ``img_ids``; bias-delta guidance (GRAG / DCAG) finds them there. The
output has the source's aspect ratio at about ``max_area`` pixels and is resized back to
the source size; ``auto_resize`` gives the condition image one of Kontext's trained
resolutions, as the pipeline does by default.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from attnedit.backends.pipeline_edit import PipelineEditBackend
from attnedit.errors import ConfigError


class FluxKontextBackend(PipelineEditBackend):
    """Load FLUX.1 Kontext [dev] (hub id or local diffusers directory) and edit images."""

    pipeline_class = "FluxKontextPipeline"
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
        name: str = "flux_kontext",
        **common: Any,
    ) -> None:
        if max_area < 1:
            raise ConfigError(f"model.max_area={max_area} must be a positive number of pixels (default 1024*1024)")
        if true_cfg_scale > 1 and negative_prompt is None:
            raise ConfigError("model.true_cfg_scale > 1 needs model.negative_prompt (the pipeline ignores it otherwise)")
        self.guidance_scale = float(guidance_scale)
        self.true_cfg_scale = float(true_cfg_scale)
        self.negative_prompt = negative_prompt
        self.max_area = int(max_area)
        self.auto_resize = bool(auto_resize)
        self.max_sequence_length = int(max_sequence_length)
        super().__init__(path, num_inference_steps=num_inference_steps, name=name, **common)

    def pipeline_kwargs(self, sources: Tensor) -> dict[str, Any]:
        height, width = sources.shape[-2:]
        negative = None if self.negative_prompt is None else [self.negative_prompt] * len(sources)
        return {
            "height": int(height),  # the output's aspect ratio; its size follows max_area
            "width": int(width),
            "guidance_scale": self.guidance_scale,
            "true_cfg_scale": self.true_cfg_scale,
            "negative_prompt": negative,
            "max_area": self.max_area,
            "_auto_resize": self.auto_resize,
            "max_sequence_length": self.max_sequence_length,
        }

    def settings(self) -> dict[str, Any]:
        return {
            "guidance_scale": self.guidance_scale,
            "true_cfg_scale": self.true_cfg_scale,
            "negative_prompt": self.negative_prompt,
            "max_area": self.max_area,
            "auto_resize": self.auto_resize,
            "max_sequence_length": self.max_sequence_length,
        }
