"""Where the configs are and how they are composed: the checkout's ``conf/``, the study
folders beside it, and the OmegaConf resolvers the configs use.

A study owns a folder (``experiments/<study>/``, or one under a folder named in
``$ATTNEDIT_STUDIES``): its config groups (``experiment/<name>.yaml`` and groups only it
uses), ``reproduce/<name>.yaml`` for ``attnedit-reproduce``, ``reference/*.csv`` (published
numbers) and its README. Every study folder that holds a config group is on Hydra's
search path after ``conf/`` (``src/hydra_plugins/attnedit_studies``), so
``experiment=<name>`` finds it without any edit of ``conf/``.

Resolvers, registered once on import (importing again replaces nothing):

- ``${repo:}``: the attnedit checkout;
- ``${asset:<name>}``: a folder shipped inside the package (the trained shapes DDPM);
- ``${study:<name>}``: a study's folder (its reference CSVs);
- ``${when:<a>,<b>,<value>}``: value if a == b, else null (published numbers only beside
  the model they are for).
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from attnedit.assets import ASSETS_DIR
from attnedit.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
STUDIES_ENV = "ATTNEDIT_STUDIES"
CONF_ENV = "ATTNEDIT_CONF_DIR"


def conf_dir() -> Path:
    """The checkout's conf/ (or $ATTNEDIT_CONF_DIR): configs are edited by users, not shipped."""
    env = os.environ.get(CONF_ENV)
    path = Path(env) if env else REPO_ROOT / "conf"
    if not (path / "config.yaml").exists():
        raise ConfigError(f"no config.yaml in {path}; install attnedit editable from its checkout "
                          f"(pip install -e .) or set {CONF_ENV} to its conf/ folder")
    return path


def studies_dirs() -> list[Path]:
    """Folders whose sub-folders are studies: those in $ATTNEDIT_STUDIES (os.pathsep
    separated), then the checkout's experiments/."""
    extra = [Path(p) for p in os.environ.get(STUDIES_ENV, "").split(os.pathsep) if p]
    return [*extra, REPO_ROOT / "experiments"]


def studies() -> dict[str, Path]:
    """Study name -> folder; a name found twice is the first one's (as on the search path)."""
    found: dict[str, Path] = {}
    for parent in studies_dirs():
        if parent.is_dir():
            for folder in sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
                found.setdefault(folder.name, folder.resolve())
    return found


def study_dir(name: str) -> Path:
    known = studies()
    if name not in known:
        raise ConfigError(f"no study folder '{name}' in {', '.join(map(str, studies_dirs()))}; "
                          f"studies: {', '.join(sorted(known))}")
    return known[name]


def reproductions() -> dict[str, Path]:
    """``attnedit-reproduce`` names -> their configs: every study's ``reproduce/<name>.yaml``."""
    found: dict[str, Path] = {}
    for folder in studies().values():
        for path in sorted((folder / "reproduce").glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def config_search_path() -> list[Path]:
    """Study folders holding at least one config group (a folder of .yaml files)."""
    return [folder for folder in studies().values()
            if any(group.is_dir() and any(group.glob("*.yaml")) for group in folder.iterdir())]


def register_resolvers() -> None:
    """The resolvers of the module docstring; safe to call any number of times."""
    resolvers = {
        "repo": lambda: str(REPO_ROOT),
        "asset": lambda name: str(ASSETS_DIR / name),
        "study": lambda name: str(study_dir(str(name))),
        "when": lambda a, b, value: value if str(a) == str(b) else None,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def compose(config_name: str = "config", overrides: list[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """``config_name`` of ``config_dir`` (default :func:`conf_dir`) with ``overrides``, as
    the Hydra apps compose it (study folders on the search path), outside any app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir or conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


register_resolvers()


def without_hydra(cfg):
    """A composed config without Hydra's own ``hydra`` node (in place; returned): what an
    app's job reads and records."""
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg
