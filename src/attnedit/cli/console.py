"""What every console script does with its command line and its errors: the last line
of stderr is the project's own one line naming the thing and the fix (``attnedit:
error: ...``), never Hydra's wrapper ("Error in call to target ...", "Set the environment
variable HYDRA_FULL_ERROR=1 ...") or a bare traceback.

The commands that compose ``conf/`` are Hydra apps (:func:`hydra_app`); the tools that
take run directories parse their arguments with :class:`ArgumentParser`, argparse with
these one-line errors.

Hydra's ``run_and_report`` (hydra/_internal/utils.py, hydra-core 1.3.x) prints its own
last line and exits; with ``HYDRA_FULL_ERROR=1`` it re-raises instead, so ``hydra_app``
sets it for the call and turns the exception into the one line here. Errors raised in a
constructor reach us wrapped in ``InstantiationException``: ``explain`` follows the
``__cause__`` chain to the project's own error. An error nobody anticipated (a bug) keeps
its traceback, followed by a last line that says so.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from attnedit.errors import AttneditError

PREFIX = "attnedit: error: "
EXIT_BAD_INPUT = 2  # argparse's code for a usage error
EXIT_BUG = 1


def _chain(err: BaseException):
    """err, then what it wraps (__cause__, else __context__), outermost first."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _one_line(text: str) -> str:
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
        return _one_line(own)
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
    if isinstance(err, ConfigCompositionException):
        key = next((e for e in chain if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None)), None)
        if key is not None and "not in struct" in str(key):
            return _unknown_key(key)
        return _one_line(str(err).splitlines()[0])
    unwritable = next((e for e in chain if isinstance(e, OSError) and e.errno in UNWRITABLE and e.filename), None)
    if unwritable is not None:  # e.g. Hydra creating its output folder under a read-only paths.results_dir
        return f"cannot write {unwritable.filename} ({unwritable.strerror}); {outputs}"
    instantiation = next((e for e in chain if type(e).__name__ == "InstantiationException"), None)
    if instantiation is not None:  # a constructor refused its arguments (unknown or wrong-typed keys)
        cause = instantiation.__cause__
        where = next((ln.split(":", 1)[1].strip() for ln in str(instantiation).splitlines()
                      if ln.strip().startswith("full_key:")), "")
        what = f"{type(cause).__name__}: {_one_line(cause)}" if cause is not None else _one_line(instantiation)
        node = f"'{where}'" if where else "a config node"
        return (f"{node} could not be built ({what}); fix or remove the offending {where or 'config'} key "
                "(`--cfg job` prints the composed config)")
    return None


def _unknown_config(err) -> str:
    """model=nosuch: name the group's options."""
    missing = str(getattr(err, "missing_cfg_file", "") or "")
    group, _, name = missing.rpartition("/")
    options = list(getattr(err, "options", None) or [])
    if group and options:
        close = difflib.get_close_matches(name, options, n=1)
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return f"{group}={name} is not a config in conf/{group}/{hint}; choose one of: {', '.join(options)}"
    return f"config '{missing or err}' not found; the configs are the .yaml files under conf/"


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


def fail(err: BaseException, outputs: str = "choose paths you can write to") -> NoReturn:
    """Print the error's one line last (after a bug's traceback) and exit."""
    line = explain(err, outputs)
    sys.stdout.flush()
    if line is None:
        traceback.print_exception(err)
        line = (f"internal error {type(err).__name__}: {_one_line(err)[:300]} (a bug in attnedit or a library "
                "it calls, not your input: the traceback above says where; please report it)")
        print(f"attnedit: {line}", file=sys.stderr)
        sys.exit(EXIT_BUG)
    print(PREFIX + line, file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def guarded(fn: Callable[[], Any], outputs: str = "choose paths you can write to") -> Any:
    """fn() with every error ending in the one line (SystemExit and Ctrl-C pass through)."""
    try:
        return fn()
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - every error ends in its one line
        fail(err, outputs)


def hydra_app(task: Callable, config_dir: Callable[[], Any], config_name: str, outputs: str) -> None:
    """Run ``task`` as a Hydra app on ``config_name`` of ``config_dir()`` whose errors end
    in the one line (see module doc); finding the config folder is part of the guarded call."""
    import hydra

    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own last line
    try:
        guarded(lambda: hydra.main(config_path=str(config_dir()), config_name=config_name,
                                   version_base="1.3")(task)(), outputs)
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def usage_error(what: str, usage: str) -> NoReturn:
    """A command line a console script cannot read: one line, what is wrong and the usage, exit 2."""
    fail(AttneditError(f"{what}: {usage.removeprefix('usage: ')}"))


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the tools that take run directories. ``--help`` prints the usage and
    the module docstring after its first paragraph (exit 0); a command line it cannot read
    is one :func:`usage_error` line: ``missing`` when no positional argument is given, an
    option without a (valid) value as "<flag> needs <what>" (:meth:`option`)."""

    def __init__(self, prog: str, usage: str, doc: str | None, missing: str) -> None:
        rest = (doc or "").split("\n\n", 1)
        super().__init__(prog=prog, usage=usage.removeprefix("usage: "),
                         description=rest[1].strip() if len(rest) > 1 else None,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
        self.usage_line, self.missing = usage, missing
        self.needs: dict[str, str] = {}

    def option(self, flag: str, what: str, **kwargs: Any) -> None:
        """``add_argument(flag, **kwargs)``; ``what`` names its value in errors ("a folder")."""
        self.needs[flag] = what
        self.add_argument(flag, **kwargs)

    def error(self, message: str) -> NoReturn:
        usage_error(self._in_words(message), self.usage_line)

    def _in_words(self, message: str) -> str:
        if message.startswith("the following arguments are required"):
            return self.missing
        found = re.match(r"argument (\S+): (?:expected \d+ arguments?|invalid \w+ value: (.*))$", message)
        if found and found[1] in self.needs:
            return f"{found[1]} needs {self.needs[found[1]]}" + (f", got {found[2]}" if found[2] else "")
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            return f"unknown option {unknown[1]}"
        return message
