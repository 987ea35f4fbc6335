"""Provenance of a run: resolved config, package versions, git revision, model weights."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "attnedit", "torch", "torchvision", "diffusers", "transformers", "hydra-core", "omegaconf",
    "torchmetrics", "lpips", "facenet-pytorch", "open-clip-torch", "numpy", "pandas", "wandb",
)


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision(start: Path | None = None) -> dict[str, Any]:
    """Revision of the attnedit checkout (not of the user's working directory)."""
    where = start or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, check=True)
        return {"revision": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"revision": None, "dirty": None}


def build_manifest(config: dict, signature: str, **components: Any) -> dict[str, Any]:
    return {
        "signature": signature,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "versions": package_versions(),
        "git": git_revision(),
        "host": {"hostname": socket.gethostname(), "platform": platform.platform()},
        **components,
    }
