"""A test-only backend with failures planted by sample id, for real-process runs.

The plants come from environment variables, not the config, so a rerun of the same
command without them (the "fix") has the same run signature and resumes the same run:
- ``ATTNEDIT_PLANT_NAN=<id>[,<id>]``: the generated image of those samples holds NaN
  (a diverged sampler);
- ``ATTNEDIT_PLANT_OOM=<id>``: a batch of more than one case that holds the sample raises
  ``torch.OutOfMemoryError``; the sample alone passes;
- ``ATTNEDIT_PLANT_CONFIG=<id>``: a batch holding the sample raises ConfigError.
"""

from __future__ import annotations

import os

import torch

from attnedit.backends.ddpm import DDPMBackend
from attnedit.errors import ConfigError


def _planted(name: str) -> set[str]:
    return {s for s in os.environ.get(name, "").split(",") if s}


class PlantedFailures(DDPMBackend):
    def generate(self, samples, control=None):
        ids = [s.id for s in samples]
        if _planted("ATTNEDIT_PLANT_CONFIG") & set(ids):
            raise ConfigError("planted config error: model.planted=<bad>; fix the config")
        if len(samples) > 1 and _planted("ATTNEDIT_PLANT_OOM") & set(ids):
            raise torch.OutOfMemoryError(f"CUDA out of memory (planted: a batch of {len(samples)})\nsecond line")
        images = super().generate(samples, control)
        for i, sid in enumerate(ids):
            if sid in _planted("ATTNEDIT_PLANT_NAN"):
                images[i, :, 0, 0] = float("nan")
        return images
