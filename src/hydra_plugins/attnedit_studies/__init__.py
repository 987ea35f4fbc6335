"""Puts attnedit's study folders on Hydra's config search path, after conf/, for
attnedit's own apps only (those whose primary config folder is attnedit's conf/):
``experiment=<name>`` then finds ``experiments/<study>/experiment/<name>.yaml``.
Hydra discovers this module in the ``hydra_plugins`` namespace package."""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class AttneditStudies(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from attnedit.config import REPO_ROOT, conf_dir, config_search_path

        try:
            ours = {str(conf_dir().resolve()), str((REPO_ROOT / "conf").resolve())}
        except Exception:  # noqa: BLE001 - no attnedit checkout: nothing to add, never break another app
            return
        if not any(_local(entry.path) in ours for entry in search_path.get_path() if entry.path):
            return
        for folder in config_search_path():
            search_path.append(provider="attnedit-studies", path=f"file://{folder}")


def _local(path) -> str:
    path = str(path)  # initialize_config_dir passes what it was given, a Path included
    return "" if path.startswith(("pkg://", "structured://")) else str(Path(path.removeprefix("file://")).resolve())
