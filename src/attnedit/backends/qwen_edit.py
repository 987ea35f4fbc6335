"""Qwen-Image-Edit backend: diffusers' QwenImageEditPipeline with the DCAG paper's
settings (24 steps, true_cfg_scale 4.0, negative prompt " ", seed 42, prompt = the
sample's editing instruction)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from attnedit.backends.pipeline_edit import PipelineEditBackend


class QwenImageEditBackend(PipelineEditBackend):
    """Load Qwen-Image-Edit (hub id or local diffusers directory) and edit images."""

    pipeline_class = "QwenImageEditPipeline"
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
        negative = None if self.negative_prompt is None else [self.negative_prompt] * len(sources)
        return {"negative_prompt": negative, "true_cfg_scale": self.true_cfg_scale}

    def settings(self) -> dict[str, Any]:
        return {"true_cfg_scale": self.true_cfg_scale, "negative_prompt": self.negative_prompt}
