"""The reply cache: every judge answer kept, keyed by what the judge was asked.

A key (:func:`attnedit.judge.base.request_key`) is the sha256 of the judge stack's hash,
the prompt text, the image bytes, the message order, the pass and the attempt, so a
stored reply is valid wherever the same key comes up again: in another run, another
shard, another study. Two places hold replies, either may be None:

- the shared folder, ``<shared_dir>/<key[:2]>/<key>.json``, one file per key, written
  to a temporary file of its own and renamed into place (``os.replace``), so a reader
  sees the old file or the new one, never half of one, while several processes write;
- the run's archive, ``<run dir>/judge_replies.jsonl``, one JSON line per reply the run
  used (``{"key", "reply", "meta", "time"}``), appended with ``O_APPEND`` under an
  ``flock`` of the file itself, so shards appending at once never interleave lines. A
  line cut short by a kill is skipped when read, and the next append starts a fresh line.

Only answers are kept (kinds ok and refusal); an error reply (timeout, HTTP error after
the retries) is not, so a rerun asks again. A damaged shared file counts as a miss and
is replaced by the next put.

The file lock is taken on the archive itself rather than with
:func:`attnedit.store.claims.locked`, which locks a separate file under ``<run>/claims/``:
the archive may live outside a run directory (a rescoring), and the descriptor that
appends is the one to lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from attnedit.judge.base import OK, REFUSAL, JudgeReply

#: The run archive's file name inside a run directory.
RUN_FILE_NAME = "judge_replies.jsonl"

_STORED_KINDS = (OK, REFUSAL)
_KEY = re.compile(r"[0-9a-f]{8,128}")  # a hex digest: also keeps keys from naming paths outside the folder


class ReplyCache:
    """Judge replies by key, from the run's archive first, then the shared folder.

    ``hits`` / ``misses`` count :meth:`get` calls, ``stored`` the replies :meth:`put` kept.
    Safe to share between threads of one process; processes share the files."""

    def __init__(self, shared_dir: str | Path | None, run_file: str | Path | None) -> None:
        self.shared_dir = None if shared_dir is None else Path(shared_dir)
        self.run_file = None if run_file is None else Path(run_file)
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self._index: dict[str, dict[str, Any]] = {}  # key -> reply JSON, from the archive
        self._offset = 0  # archive bytes read up to the end of the last whole line
        self._size = -1  # archive size at the last read: another shard's append changes it
        self._lock = threading.Lock()

    # -- the interface ---------------------------------------------------------------
    def get(self, key: str) -> JudgeReply | None:
        """The stored reply of ``key`` (``cached=True``), None when neither place has it.
        A reply found only in the shared folder is appended to the run's archive, so the
        archive holds every reply the run used."""
        _check(key)
        with self._lock:
            reply = self._from_archive(key)
            if reply is None:
                record = self._read_shared(key)
                if record is not None:
                    reply = record["reply"]
                    self._append({**record, "time": _now()})
            if reply is None:
                self.misses += 1
                return None
            self.hits += 1
            return JudgeReply.from_json(reply, cached=True)

    def put(self, key: str, reply: JudgeReply, meta: dict[str, Any] | None = None) -> bool:
        """Keep ``reply`` under ``key`` in both places; True if kept. An error reply is
        not an answer and is never kept."""
        _check(key)
        if reply.kind not in _STORED_KINDS:
            return False
        record = {"key": key, "reply": reply.to_json(), "meta": dict(meta or {}), "time": _now()}
        with self._lock:
            self._write_shared(key, record)
            self._append(record)
            self.stored += 1
        return True

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "stored": self.stored}

    # -- the run archive ---------------------------------------------------------------
    def _from_archive(self, key: str) -> dict[str, Any] | None:
        if self.run_file is None:
            return None
        if key not in self._index:
            self._refresh()
        return self._index.get(key)

    def _refresh(self) -> None:
        """Read what was appended since the last read (other shards append too). A last
        line without its newline is left for later: it is being written, or was cut short
        by a kill (the next append ends it, and it is then skipped as unreadable)."""
        try:
            size = self.run_file.stat().st_size
        except FileNotFoundError:
            return
        if size == self._size:
            return
        if size < self._offset:  # replaced or truncated: read it anew
            self._index.clear()
            self._offset = 0
        with open(self.run_file, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._size = self._offset + len(data)
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            record = _parse(line)
            if record is not None:
                self._index.setdefault(record["key"], record["reply"])  # the first answer archived stays
        self._offset += end

    def _append(self, record: dict[str, Any]) -> None:
        if self.run_file is None:
            return
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        self.run_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":  # a line cut short by a kill
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)  # closing releases the lock
        self._index.setdefault(record["key"], record["reply"])

    # -- the shared folder -------------------------------------------------------------
    def _shared_path(self, key: str) -> Path:
        return self.shared_dir / key[:2] / f"{key}.json"

    def _read_shared(self, key: str) -> dict[str, Any] | None:
        if self.shared_dir is None:
            return None
        try:
            data = self._shared_path(key).read_bytes()
        except FileNotFoundError:
            return None
        record = _parse(data)
        return record if record is not None and record["key"] == key else None

    def _write_shared(self, key: str, record: dict[str, Any]) -> None:
        if self.shared_dir is None:
            return
        path = self._shared_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temporary name of this writer's own: writers of one key at once must not share one.
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o644)  # other processes (and users of a group folder) read it
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle, sort_keys=True, default=str)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _parse(data: bytes) -> dict[str, Any] | None:
    """A stored record, or None when it is damaged or not a kept answer."""
    try:
        record = json.loads(data)
    except ValueError:  # bad JSON, or bytes cut inside a character
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return None
    reply = record.get("reply")
    if not isinstance(reply, dict) or reply.get("kind", OK) not in _STORED_KINDS:
        return None
    return record


def _check(key: str) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"a reply cache key is a lowercase hex digest (request_key), not {key!r}")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
