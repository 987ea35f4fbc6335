"""Secrets never land on disk or in W&B: one rule for what a secret is, one redaction.

A config key or environment variable named like a secret (:func:`is_secret_key`: api_key,
token, secret, password) keeps its name and has its value written as ``***``; that value,
and the value of every secret environment variable, is masked wherever else it appears
(a ``key=value`` override, Hydra's ``job.override_dirname``, a note). The run
directory's config.yaml and manifest.json, Hydra's own files and console log
(run.hydra_callbacks), W&B's config and recorded command line all go through it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

MASK = "***"
#: Shorter values ("1", "true") are masked as a secret key's own value, never inside other text.
MIN_SECRET_CHARS = 8


def is_secret_key(name: Any) -> bool:
    """Whether a config key or env var name holds a secret (api_key, token, secret, password).

    Matched word by word (snake, kebab, dotted, camelCase) so `hf_token`, `accessToken` and
    `WANDB_API_KEY` count while parameters such as `max_tokens` or `tokenizer` stay visible.
    """
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name)).lower()
    parts = [p for p in re.split(r"[^a-z0-9]+", words) if p]
    if parts and parts[-1] == "env":  # api_key_env: the NAME of the variable holding the key, kept readable
        return False
    if any(a == "api" and b == "key" for a, b in zip(parts, parts[1:])):
        return True
    return any(p.endswith(("token", "apikey")) or "secret" in p or "passw" in p for p in parts)


def env_secret_values() -> set[str]:
    """Values of secret environment variables."""
    return {v for k, v in os.environ.items() if is_secret_key(k) and len(v) >= MIN_SECRET_CHARS}


def secret_values(tree: Any, found: set[str] | None = None) -> set[str]:
    """Values of secret keys anywhere in a nested config, and of ``key=value`` strings
    (Hydra overrides such as ``+secret_token=...``) whose key is a secret."""
    found = set() if found is None else found
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if is_secret_key(key) and value is not None and not isinstance(value, (Mapping, list, tuple)):
                found.add(str(value))
            secret_values(value, found)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            secret_values(value, found)
    elif isinstance(tree, str):
        for part in tree.split(","):  # Hydra's job.override_dirname joins overrides with ","
            key, eq, value = part.partition("=")
            if eq and is_secret_key(key.lstrip("+~")) and value:
                found.add(value)
    return {v for v in found if len(v) >= MIN_SECRET_CHARS and v != MASK}


def mask(text: str, values: Iterable[str]) -> str:
    """``text`` with every secret value masked; one ``key=value`` override whose key is a secret as ``key=***``."""
    for value in sorted(values, key=len, reverse=True):  # longest first: one secret may hold another
        text = text.replace(value, MASK)
    key, eq, _ = text.partition("=")
    if eq and "," not in text and is_secret_key(key.lstrip("+~")):  # one override, not a joined list
        return f"{key}={MASK}"
    return text


def redact(tree: Any, values: Iterable[str] | None = None) -> Any:
    """A copy of a nested config with secret keys' values as ``***`` and secret values
    (the tree's own and the environment's) masked in every string; keys stay, so the
    config's shape is unchanged."""
    values = secret_values(tree) | env_secret_values() if values is None else set(values)
    if isinstance(tree, Mapping):
        return {k: (MASK if is_secret_key(k) and v is not None and not isinstance(v, (Mapping, list, tuple))
                    else redact(v, values)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [redact(v, values) for v in tree]
    if isinstance(tree, str):
        return mask(tree, values)
    return tree


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with secrets masked: ``key=value`` overrides, the value after a
    secret-named flag (``--hf-token <value>``) and secret environment values."""
    values = env_secret_values() | secret_values(argv[1:])
    out = list(argv[:1])
    for prev, arg in zip(argv, argv[1:]):
        flag_takes_secret = prev.startswith("-") and "=" not in prev and is_secret_key(prev)
        out.append(MASK if flag_takes_secret else mask(arg, values))
    return out


def redact_yaml_file(path: Path, values: Iterable[str]) -> None:
    """Rewrite a YAML file with its secrets masked (atomically: a kill leaves old or new)."""
    if not path.is_file():
        return
    data = yaml.safe_load(path.read_text())
    clean = redact(data, set(values) | secret_values(data) | env_secret_values())
    if clean == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(clean, sort_keys=False, default_flow_style=False))
    os.replace(tmp, path)
