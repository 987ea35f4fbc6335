"""What the measurement scripts of this folder share: how a result leaves them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], out: str | None) -> None:
    """Print ``result`` as JSON and, with ``--out``, write the same text to that file (the
    committed ``*.json`` beside the scripts, which the README's figures quote)."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
