"""Files shipped inside the package (the trained shapes DDPM and its factor regressor)."""

from __future__ import annotations

from pathlib import Path

from attnedit.errors import WeightsNotFoundError

ASSETS_DIR = Path(__file__).resolve().parent


def asset_path(name: str) -> str:
    """The folder of a shipped asset; ``${asset:shapes_ddpm}`` in configs."""
    path = ASSETS_DIR / name
    if not path.exists():
        shipped = sorted(p.name for p in ASSETS_DIR.iterdir()) if ASSETS_DIR.is_dir() else []
        raise WeightsNotFoundError(
            f"asset '{name}' is not in {ASSETS_DIR} (shipped: {shipped}); reinstall attnedit from its "
            "checkout, or rebuild it with the script under experiments/shapes_ddpm/."
        )
    return str(path)
