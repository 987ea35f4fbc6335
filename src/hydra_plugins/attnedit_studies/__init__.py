"""Puts attnedit's study folders on Hydra's config search path, after conf/, for
attnedit's own apps only (those whose primary config folder is attnedit's conf/):
``experiment=<name>`` then finds ``experiments/<study>/experiment/<name>.yaml``.
Hydra discovers this module in the ``hydra_plugins`` namespace package."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

#: attnedit's conf/ (this file is src/hydra_plugins/attnedit_studies/__init__.py of the checkout).
CONF = Path(__file__).resolve().parents[3] / "conf"


class AttneditStudies(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        ours = {str(CONF)} | ({str(Path(os.environ["ATTNEDIT_CONF_DIR"]).resolve())}
                              if os.environ.get("ATTNEDIT_CONF_DIR") else set())
        if not any(_local(entry.path) in ours for entry in search_path.get_path() if entry.path):
            return  # another app: attnedit (and its resolvers) stay out of it
        from attnedit.config import config_search_path

        for folder in config_search_path():
            search_path.append(provider="attnedit-studies", path=f"file://{folder}")


def _local(path) -> str:
    path = str(path)  # initialize_config_dir passes what it was given, a Path included
    return "" if path.startswith(("pkg://", "structured://")) else str(Path(path.removeprefix("file://")).resolve())
