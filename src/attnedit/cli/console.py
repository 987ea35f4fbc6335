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
``__cause__`` chain to the project's own error. An error raised in the job itself is
printed by the job (Hydra's ``run_job`` would print "Error executing job with overrides"
first). An error nobody anticipated (a bug) keeps its traceback, followed by a last line
that says so.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from attnedit.errors import AttneditError, explain, one_line

PREFIX = "attnedit: error: "
EXIT_BAD_INPUT = 2  # argparse's code for a usage error
EXIT_BUG = 1


def report(err: BaseException, outputs: str = "choose paths you can write to", where: str = "") -> int:
    """Print the error's one line last (after a bug's traceback; ``where``: which job of a
    multirun); the exit code it calls for."""
    line = explain(err, outputs)
    sys.stdout.flush()
    if line is None:
        traceback.print_exception(err)
        line = (f"internal error {type(err).__name__}: {one_line(err)[:300]} (a bug in attnedit or a library "
                "it calls, not your input: the traceback above says where; please report it)")
        print(f"attnedit: {where}{line}", file=sys.stderr)
        return EXIT_BUG
    print(PREFIX + where + line, file=sys.stderr)
    return EXIT_BAD_INPUT


def fail(err: BaseException, outputs: str = "choose paths you can write to") -> NoReturn:
    """Print the error's one line last (after a bug's traceback) and exit."""
    sys.exit(report(err, outputs))


def guarded(fn: Callable[[], Any], outputs: str = "choose paths you can write to") -> Any:
    """fn() with every error ending in the one line (SystemExit and Ctrl-C pass through)."""
    try:
        return fn()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BrokenPipeError:  # the reader left (`--help | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as err:  # noqa: BLE001 - every error ends in its one line
        fail(err, outputs)


def hydra_app(task: Callable, config_dir: Callable[[], Any], config_name: str, outputs: str) -> None:
    """Run ``task`` as a Hydra app on ``config_name`` of ``config_dir()`` whose errors end
    in the one line (see module doc); finding the config folder is part of the guarded call.
    A job's error exits the process after every job of a multirun has run."""
    import hydra

    codes: list[int] = []
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own last line
    try:
        guarded(lambda: hydra.main(config_path=str(config_dir()), config_name=config_name,
                                   version_base="1.3")(_reported(task, outputs, codes))(), outputs)
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before
    if codes:
        sys.exit(codes[0])


def _reported(task: Callable, outputs: str, codes: list[int]) -> Callable:
    """``task`` as a Hydra job that prints its own error's one line and returns. Raised,
    the error would reach Hydra's run_job, which prints "Error executing job with
    overrides: [...]" before re-raising it. The codes are collected for :func:`hydra_app`.
    A job run by another process (a submitit worker) raises as before: its launcher
    reports the job as failed."""
    here = os.getpid()

    @functools.wraps(task)
    def job(cfg):
        if os.getpid() != here:
            return task(cfg)
        try:
            return task(cfg)
        except BrokenPipeError:
            raise
        except Exception as err:  # noqa: BLE001 - every error ends in its one line
            codes.append(report(err, outputs, _which_job()))
            return None

    return job


def _which_job() -> str:
    """``job #<n> (<its swept overrides>): `` in a multirun (whose jobs' errors would look
    alike), else ``""``. Swept: the job's overrides not written as such on the command line."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    from attnedit.run.secrets import redact_argv

    swept = redact_argv(["", *(o for o in HydraConfig.get().overrides.task if o not in sys.argv[1:])])[1:]
    return f"job #{HydraConfig.get().job.num}" + (f" ({' '.join(swept)})" if swept else "") + ": "


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
        found = re.match(r"argument (\S+): (?:expected (?:one|\d+) arguments?|invalid \w+ value: (.*))$", message)
        if found and found[1] in self.needs:
            return f"{found[1]} needs {self.needs[found[1]]}" + (f", got {found[2]}" if found[2] else "")
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            return f"unknown option {unknown[1]}"
        return message
