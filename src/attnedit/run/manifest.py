"""Provenance of a run: resolved config, package versions, git revision, model weights;
what it cost (wall time per case, peak GPU memory, the GPU) and the sessions that made it."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

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


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def resumed_manifest(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a run continued in another process: the first run's facts kept
    (``created``, versions, git, host, model and method descriptions), the config
    replaced by the current one (the same results by signature; non-result keys such as
    tables.reference may differ) and this session appended to ``resumes``, with the
    config keys it changed as ``{key: [before, now]}``."""
    merged = dict(previous)
    merged["config"], merged["signature"] = current["config"], current["signature"]
    before, now = _flat(previous.get("config", {})), _flat(current["config"])
    entry: dict[str, Any] = {
        "started": current["created"],
        "git": current["git"],
        "host": current["host"],
        "device_name": (current.get("model") or {}).get("device_name"),
    }
    changed = {k: [before.get(k), now.get(k)] for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)}
    if changed:
        entry["config_changed"] = changed
    versions = {k: v for k, v in current["versions"].items() if (previous.get("versions") or {}).get(k) != v}
    if versions:
        entry["versions_changed"] = versions
    merged["resumes"] = [*previous.get("resumes", []), entry]
    return merged


def _cuda_device(device: Any) -> torch.device | None:
    device = torch.device(str(device)) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return None
    return device


class SessionCost:
    """Wall time and peak GPU memory of one attnedit-run process on a run."""

    def __init__(self, device: Any, device_name: str | None) -> None:
        self.cuda = _cuda_device(device)
        self.device_name = device_name
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if self.cuda is not None:
            torch.cuda.reset_peak_memory_stats(self.cuda)
        self._start = time.perf_counter()

    def finish(self, cases: int) -> dict[str, Any]:
        peak = int(torch.cuda.max_memory_allocated(self.cuda)) if self.cuda is not None else None
        return {
            "started": self.started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(time.perf_counter() - self._start, 3),
            "cases": int(cases),
            "peak_gpu_memory_bytes": peak,
            "device_name": self.device_name,
            # 1/5/15-minute load of the host: a loaded machine slows every case (timing.py states it)
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        }


def run_cost(previous: dict[str, Any] | None, session: dict[str, Any], seconds_per_case) -> dict[str, Any]:
    """manifest['cost']: the sessions so far plus this one; peak GPU memory (None on CPU),
    device name(s), and the mean/median ``seconds_per_case`` over the run's generated
    cases (``seconds_per_case``: a pandas Series; identity edits, NaN, are left out)."""
    sessions = [*((previous or {}).get("sessions") or []), session]
    peaks = [s["peak_gpu_memory_bytes"] for s in sessions if s.get("peak_gpu_memory_bytes") is not None]
    names = list(dict.fromkeys(str(s.get("device_name")) for s in sessions))
    timed = seconds_per_case.dropna().astype(float)
    return {
        "device_name": names[0] if len(names) == 1 else names,
        "peak_gpu_memory_bytes": max(peaks) if peaks else None,
        "seconds_per_case_mean": float(timed.mean()) if len(timed) else None,
        "seconds_per_case_median": float(timed.median()) if len(timed) else None,
        "cases_timed": int(len(timed)),
        "wall_seconds": round(sum(float(s["wall_seconds"]) for s in sessions), 3),
        "sessions": sessions,
    }
