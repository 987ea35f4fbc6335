"""Claims: how several writers of one run directory (a double launch, a SLURM requeue
while the old job still runs, shards) split the work instead of each computing it.

A writer claims a work unit (a sample: a SAD seed, a PIE-Bench source image) before
computing it by creating ``<run>/claims/<unit>.<generation>.claim`` with
``O_CREAT | O_EXCL`` (atomic on local filesystems and NFSv3+), holding its pid, host,
process start time and SLURM job. A claim whose holder is gone is taken over by
creating the next generation, again with O_EXCL, so of several writers that found the
same stale claim exactly one wins. A claim is stale when

- its host is this host and its pid is gone (or belongs to a process started at
  another time: a reused pid);
- it comes from an earlier incarnation of this SLURM job (same ``SLURM_JOB_ID``, lower
  ``SLURM_RESTART_COUNT``: a requeue after preemption or timeout);
- its file was not touched for ``stale_seconds`` (other hosts, whose pids cannot be
  checked). The holder touches it after every batch it stores, so ``stale_seconds``
  must exceed the longest batch (a batch of 8 Qwen-Image-Edit edits is about 3 min on
  an H200: the default 1800 s leaves room).

Claims are removed once the unit's rows are on disk (and its figure drawn).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from hashlib import sha1
from pathlib import Path
from typing import Any, Iterator

DEFAULT_STALE_SECONDS = 1800.0


def _boot_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder() -> dict[str, Any]:
    """Who this process is, as written into its claims."""
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "process_start": _boot_ticks(pid),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
    }


def unit_key(unit: str) -> str:
    """File-name-safe and unique per unit (sample ids may hold '/')."""
    keep = "".join(c if c.isalnum() or c in "-_=" else "_" for c in unit)[:80]
    return f"{keep}-{sha1(unit.encode()).hexdigest()[:8]}"


class Claims:
    """The claims of one run directory, seen from one process."""

    def __init__(self, run_dir: str | Path, stale_seconds: float = DEFAULT_STALE_SECONDS, create: bool = True) -> None:
        self.dir = Path(run_dir) / "claims"
        if create:  # attnedit-status only looks
            self.dir.mkdir(parents=True, exist_ok=True)
        self.stale_seconds = float(stale_seconds)
        self.me = holder()
        self.held: dict[str, Path] = {}  # unit -> this process's claim file

    # -- one unit --------------------------------------------------------------------
    def _files(self, unit: str) -> list[tuple[int, Path]]:
        key = unit_key(unit)
        found = []
        for path in self.dir.glob(f"{key}.*.claim"):
            generation = path.name[len(key) + 1 : -len(".claim")]
            if generation.isdigit():
                found.append((int(generation), path))
        return sorted(found)

    def _create(self, unit: str, generation: int) -> bool:
        path = self.dir / f"{unit_key(unit)}.{generation}.claim"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump({**self.me, "unit": unit, "generation": generation}, handle)
        self.held[unit] = path
        return True

    def is_stale(self, info: dict[str, Any] | None, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        if info is None:  # empty or cut short: a writer died between create and write
            return age > 5.0
        if info.get("host") == self.me["host"]:
            pid = int(info.get("pid", -1))
            if pid == self.me["pid"]:  # a reused pid, or an earlier Runner of this process
                return True
            if not _alive(pid):
                return True
            started = info.get("process_start")
            return started is not None and _boot_ticks(pid) not in (None, started)
        if self.me["slurm_job"] is not None and info.get("slurm_job") == self.me["slurm_job"]:
            return int(info.get("slurm_restart") or 0) < self.me["slurm_restart"]
        return age > self.stale_seconds

    def holder_of(self, unit: str) -> dict[str, Any] | None:
        files = self._files(unit)
        return _read(files[-1][1]) if files else None

    def acquire(self, unit: str) -> bool:
        """True if this process now holds ``unit`` (fresh, or taken over from a dead holder)."""
        if unit in self.held:
            return True
        while True:
            files = self._files(unit)
            if not files:
                if self._create(unit, 0):
                    return True
                continue  # another writer created it first: look at theirs
            generation, path = files[-1]
            if not self.is_stale(_read(path), path):
                return False
            if self._create(unit, generation + 1):
                for _, old in files:  # the dead holders' files
                    old.unlink(missing_ok=True)
                return True

    def touch(self) -> None:
        """Heartbeat: this process is still working on what it holds."""
        for path in self.held.values():
            try:
                os.utime(path)
            except FileNotFoundError:
                pass

    def release(self, unit: str) -> None:
        path = self.held.pop(unit, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def release_all(self) -> None:
        for unit in list(self.held):
            self.release(unit)

    def active(self) -> list[dict[str, Any]]:
        """The live claims of the run (stale ones left out), for attnedit-status."""
        out = []
        for path in sorted(self.dir.glob("*.claim")):
            info = _read(path)
            if info is not None and not self.is_stale(info, path):
                out.append(info)
        return out


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def locked(run_dir: str | Path, name: str, timeout: float = 120.0) -> Iterator[None]:
    """A short exclusive section between the writers of a run (a manifest update):
    an flock on ``<run>/claims/<name>.lock`` (released by the kernel when its holder
    dies; on NFS the client maps it to a POSIX lock). The file itself stays."""
    path = Path(run_dir) / "claims" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout:.0f} s")
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
