"""Commands as processes forked from one interpreter that imported the heavy modules once.

Each console-script command (``attnedit-run ...``) or ``python script.py ...`` still runs
in a process of its own, with its own working folder, argv, environment, stdout/stderr
and exit code, calling what the installed console script calls (``sys.exit(main())``),
exit handlers included; only the imports of torch, diffusers, torchmetrics and attnedit
(~5 s of a ~9 s tiny run on this 2-core machine) are made once, before the fork. What
modules read from the environment at import time is the server's environment. The server
never runs a torch operation, so no thread pool exists when it forks. Commands may run
concurrently (threads calling :meth:`Zygote.run`).

Test-only: tests that run many short commands use it (the ``zygote`` fixture); tests of
process behaviour (kills, signals, concurrent writers, dropped privileges) start real
processes.

    done = zygote.run(["attnedit-run", "model=tiny_ddpm"], cwd=folder)  # a CompletedProcess
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PRELOAD = (
    "torch", "pandas", "hydra", "diffusers", "torchmetrics", "safetensors.torch",
    "attnedit.cli.run", "attnedit.cli.tables", "attnedit.run.runner", "attnedit.evaluate.evaluator",
    "attnedit.report.studies",
    "attnedit.backends.ddpm",  # diffusers' UNet modules, imported lazily: ~1-5 s per command otherwise
)


class Zygote:
    """The client: starts the server (this file run as a script) and sends it commands."""

    def __init__(self, env: dict[str, str], start_timeout: float = 300) -> None:
        self.env = dict(env)
        # A session of its own: closing kills the server and every command still running.
        self.process = subprocess.Popen([sys.executable, __file__], env=self.env, text=True, start_new_session=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready, _, _ = select.select([self.process.stdout], [], [], start_timeout)
        if not ready or json.loads(self.process.stdout.readline() or "{}") != {"ready": True}:
            self.close()
            raise RuntimeError("the zygote server did not start")
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._done: dict[int, tuple[threading.Event, list[int | None]]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            reply = json.loads(line)
            event, code = self._done[reply["id"]]
            code.append(reply["returncode"])
            event.set()
        for event, _ in list(self._done.values()):  # the server is gone: nobody waits forever
            event.set()

    def run(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 1200) -> subprocess.CompletedProcess:
        """Run one command to its end; ``env``: the command's whole environment (default the server's)."""
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            event, code = threading.Event(), []
            with self._lock:
                request_id = next(self._ids)
                self._done[request_id] = (event, code)
                request = {"id": request_id, "argv": [str(a) for a in argv], "cwd": str(cwd), "env": env,
                           "stdout": str(out), "stderr": str(err)}
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
            if not event.wait(timeout):
                self.close()
                raise subprocess.TimeoutExpired(argv, timeout)
            if not code:
                raise RuntimeError(f"the zygote server exited ({self.process.poll()}) while running {argv}")
            return subprocess.CompletedProcess(argv, code[0], out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=60)  # the server ends when its last command has
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> "Zygote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the server side ----------------------------------------------------------------
def _exit_code(exit: SystemExit) -> int:
    """What the interpreter makes of an uncaught SystemExit."""
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    print(exit.code, file=sys.stderr)
    return 1


def _main_of(argv: list[str]):
    """The function the command's process runs: a console script's entry point, or a script file."""
    import runpy
    from importlib.metadata import entry_points

    if Path(argv[0]).name.startswith("python"):
        if len(argv) < 2 or argv[1].startswith("-"):
            raise SystemExit(f"zygote: only 'python <script> ...' is supported, not {argv}")
        sys.argv = argv[1:]
        sys.path.insert(0, str(Path(argv[1]).resolve().parent))

        def script() -> None:  # a script that ends normally exits 0, as python would (run_path returns its globals)
            runpy.run_path(argv[1], run_name="__main__")

        return script
    scripts = entry_points(group="console_scripts", name=Path(argv[0]).name)
    if not scripts:
        raise SystemExit(f"zygote: {argv[0]} is not a console script of this environment")
    sys.argv = [Path(argv[0]).name, *argv[1:]]
    return next(iter(scripts)).load()


def _child(request: dict) -> None:
    """In the forked child: become the command, then exit with its code (never returns)."""
    import atexit
    import traceback

    code = 1
    try:
        os.chdir(request["cwd"])
        if request["env"] is not None:
            os.environ.clear()
            os.environ.update(request["env"])
        for fd, key, flags in ((0, None, os.O_RDONLY), (1, "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                               (2, "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            target = os.open(request[key] if key else os.devnull, flags, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdin = open(os.devnull)
        try:
            sys.exit(_main_of(request["argv"])())
        except SystemExit as exit:
            code = _exit_code(exit)
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve() -> None:
    for module in PRELOAD:
        importlib.import_module(module)

    def reply(message: dict) -> None:
        os.write(1, (json.dumps(message) + "\n").encode())

    reply({"ready": True})
    children: dict[int, int] = {}  # pid -> request id
    pending, reading = b"", True
    while reading or children:
        if reading and select.select([0], [], [], 0.02)[0]:
            chunk = os.read(0, 1 << 16)
            reading = bool(chunk)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request)
                children[pid] = request["id"]
        elif not reading:
            time.sleep(0.02)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            reply({"id": children.pop(pid), "returncode": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve()
