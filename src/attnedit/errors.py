"""Errors with messages that name the offending thing and the fix, and :func:`explain`:
the one line for an error caused by the input, whoever raised it (the project, Hydra,
OmegaConf, the file system)."""

from __future__ import annotations

import difflib
import errno
import os
import re
import signal

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException


class AttneditError(Exception):
    """Base class: every error the harness raises on bad input or missing resources."""


class WeightsNotFoundError(AttneditError, FileNotFoundError):
    """Pretrained weights are not on disk and cannot be downloaded (offline)."""


class DataError(AttneditError, ValueError):
    """A dataset file or entry is missing or malformed."""


class ConfigError(AttneditError, ValueError):
    """A configuration value is unknown or out of range."""


class NonFiniteOutputError(AttneditError, FloatingPointError):
    """A model or metric produced NaN/inf where a finite value is required."""


class ResultsFolderError(AttneditError):
    """The operating system refused a write to a run's folder mid-run (a full disk, its
    permissions changed, the folder removed): neither a bug nor bad input. The rows stored
    before stay, and the same command resumes once the folder can be written."""

    def __init__(self, path, reason: str, kept: str, resume: str | None = None) -> None:
        self.path, self.reason, self.kept = path, reason, kept
        then = f"resume with: {resume}" if resume else "the same command resumes"
        super().__init__(f"cannot write {path} ({reason}); {kept}; once it can be written, {then}")


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM (what SLURM sends before it preempts a job), raised where
    the run is: it stops there, every stored case kept. A KeyboardInterrupt, so what lets
    Ctrl-C through lets both through."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _chain(err: BaseException):
    """err, then what it wraps (__cause__, else __context__), outermost first."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def one_line(text: str) -> str:
    return " ".join(str(text).split())


#: errno values of a folder that cannot be written (permissions, read-only file system,
#: a path component that is a file, a full disk).
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOSPC, errno.EDQUOT)


def explain(err: BaseException, outputs: str = "choose paths you can write to") -> str | None:
    """The one line for an error caused by the input (config, data, weights, device);
    None for anything else (a bug: its traceback is what helps). ``outputs``: the fix
    for an output path that cannot be written (which keys choose them)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    chain = list(_chain(err))
    own = next((e for e in chain if isinstance(e, AttneditError)), None)
    if own is not None:
        return one_line(own)
    missing = next((e for e in chain if isinstance(e, MissingMandatoryValue)), None)
    if missing is not None:  # a `???` key left unset, e.g. dataset.root
        return f"the config key '{missing.full_key}' has no value; pass {missing.full_key}=<value> on the command line"
    config = next((e for e in chain if isinstance(e, MissingConfigException)), None)
    if config is not None:
        return _unknown_config(config)
    if isinstance(err, OverrideParseException):
        first = str(err).splitlines()[0]
        return (f"cannot read an override ({first}); write key=value, lists as key=[a,b], and quote "
                "values holding spaces or brackets for the shell")
    if isinstance(err, ConfigCompositionException) and "--multirun" in str(err):
        return _needs_multirun(str(err))
    if isinstance(err, ConfigCompositionException):
        key = next((e for e in chain if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None)), None)
        if key is not None and "not in struct" in str(key):
            return _unknown_key(key)
        return one_line(str(err).splitlines()[0])
    unwritable = next((e for e in chain if isinstance(e, OSError) and e.errno in UNWRITABLE and e.filename), None)
    if unwritable is not None:  # e.g. Hydra creating its output folder under a read-only paths.results_dir
        return f"cannot write {unwritable.filename} ({unwritable.strerror}); {outputs}"
    unnamed = next((e for e in chain if isinstance(e, OSError) and e.errno in UNWRITABLE), None)
    if unnamed is not None:  # pyarrow's write errors name no file
        return f"cannot write an output file ({os.strerror(unnamed.errno)}); {outputs}"
    instantiation = next((e for e in chain if type(e).__name__ == "InstantiationException"), None)
    if instantiation is not None:  # a constructor refused its arguments (unknown or wrong-typed keys)
        cause = instantiation.__cause__
        where = next((ln.split(":", 1)[1].strip() for ln in str(instantiation).splitlines()
                      if ln.strip().startswith("full_key:")), "")
        what = f"{type(cause).__name__}: {one_line(cause)}" if cause is not None else one_line(instantiation)
        node = f"'{where}'" if where else "a config node"
        return (f"{node} could not be built ({what}); fix or remove the offending {where or 'config'} key "
                "(`--cfg job` prints the composed config)")
    return None


def _needs_multirun(message: str) -> str:
    """key=a,b without -m: Hydra's hints, the sweep first (what a comma usually means)."""
    quoted = re.search(r"argument '([^']*)'|parameters '([^']*)'", message)
    override = next((g for g in quoted.groups() if g), "") if quoted else ""
    key, _, value = override.partition("=")
    if "Ambiguous value" in message:
        return (f"{override} is a sweep: add -m (--multirun) to run one job per value; or write a list as "
                f"{key}=[{value}], or a string as {key}=\\'{value}\\' (quoted for the shell)")
    return f"{override} is a sweep: add -m (--multirun) to run one job per value"


def _unknown_config(err) -> str:
    """model=nosuch: name the group's options."""
    missing = str(getattr(err, "missing_cfg_file", "") or "")
    group, _, name = missing.rpartition("/")
    options = list(getattr(err, "options", None) or [])
    if group and options:
        close = difflib.get_close_matches(name, options, n=1)
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return (f"{group}={name} is not a config in conf/{group}/ or a study's {group}/ folder "
                f"(experiments/<study>/{group}/){hint}; choose one of: {', '.join(options)}")
    return (f"config '{missing or err}' not found; the configs are the .yaml files under conf/ and the study "
            "folders (experiments/<study>/)")


def _unknown_key(err: OmegaConfBaseException) -> str:
    """method.layerz=3: a typo, or a new key that needs '+'."""
    full_key = str(err.full_key)
    parent = getattr(err, "parent_node", None)
    known = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
    close = difflib.get_close_matches(str(err.key), known, n=1)
    prefix = full_key.rpartition(".")[0]
    hint = f"did you mean {prefix + '.' if prefix else ''}{close[0]}? " if close else ""
    return (f"{full_key} is not a key of the config (a typo?); {hint}`--cfg job` lists the keys, "
            f"or write +{full_key}=<value> to add a new one")
