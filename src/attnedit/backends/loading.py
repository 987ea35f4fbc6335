"""Resolve a model `path` (hub id or local directory) to a local directory, hash its
weights, and fail loudly, never silently, when weights are not available."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from attnedit.errors import ConfigError, WeightsNotFoundError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
#: The installed huggingface_hub's download command (its console script ``hf``;
#: huggingface_hub >= 1.0 ships no ``huggingface-cli``). tests/cli/test_console.py checks it.
DOWNLOAD_COMMAND = "hf download"


def download_command(repo_id: str, local_dir: str | None = "<dir>") -> str:
    """The shell command that puts a hub repository's files in ``local_dir`` (None: the HF cache)."""
    return f"{DOWNLOAD_COMMAND} {repo_id}" + (f" --local-dir {local_dir}" if local_dir else "")


def pick_device(device: str, key: str = "device") -> torch.device:
    """auto | cpu | cuda | cuda:N; ``key`` names the config key in errors."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"{key}={device!r} is not a device; use auto, cpu, cuda or cuda:<N>") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={device!r} was asked for but CUDA is not available here; use {key}=cpu or auto.")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ConfigError(f"{key}={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                          f"use {key}=cuda:<0..{torch.cuda.device_count() - 1}> or auto.")
    return chosen


def pick_dtype(dtype: str, device: torch.device, gpu_default: str = "float32") -> torch.dtype:
    if dtype == "auto":
        dtype = gpu_default if device.type == "cuda" else "float32"
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise ConfigError(f"dtype={dtype!r} is not one of auto, float32, float16, bfloat16") from None


def resolve_model_dir(path: str, what: str, allow_patterns: list[str] | None = None, hub_id: str | None = None) -> Path:
    """A local directory as is; otherwise a hub id fetched into (or found in) the HF cache.

    Offline (HF_HUB_OFFLINE=1 or no network) and not cached -> WeightsNotFoundError that
    says exactly what to download and where to point ``model.path``; a folder that does
    not exist names the download of ``hub_id`` (the model's published weights) into it.
    """
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1
    if looks_local:
        fetch = (f"put the weights there with `{download_command(hub_id, path)}`, or point" if hub_id else "Point")
        raise WeightsNotFoundError(
            f"{what}: model.path={path!r} is not an existing directory. {fetch} model.path at a directory "
            "saved with save_pretrained, or at a hub id such as google/ddpm-ema-celebahq-256."
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        return Path(snapshot_download(path, allow_patterns=allow_patterns))
    except Exception as err:  # offline, unreachable hub, gated repo: all end the same way
        raise WeightsNotFoundError(
            f"{what}: could not load '{path}' ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            f"It is not in the Hugging Face cache ({HF_HUB_CACHE}) and could not be downloaded. "
            f"On a machine with internet run `{download_command(path)}` "
            "and pass model.path=<dir> (or copy the cache there)."
        ) from err


def weight_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def hash_files(files: list[Path], root: Path) -> str:
    """sha256 over (relative name, content) of every file: identifies the exact weights."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
