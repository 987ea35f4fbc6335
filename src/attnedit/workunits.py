"""The pending cases of a run as batches drawn only from work units (samples) this
process has claimed (attnedit.claims), so writers sharing a run directory split it.

The batches are those of the plain case list (consecutive cases, ``batch_size`` at a
time, crossing sample boundaries) whenever every claim succeeds, as for a single
writer: the numbers do not depend on whether claims exist. A unit is re-checked
against the rows on disk right after it is claimed (another writer may have finished
it since the pending list was made); a unit held by a live writer is skipped and
looked at again once the rest is done.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any, Callable, Iterator

from attnedit.claims import Claims
from attnedit.store import RunStore

Case = tuple[str, dict[str, Any]]


class WorkUnits:
    def __init__(self, pending: list[Case], batch_size: int, claims: Claims, store: RunStore,
                 key: Callable[[str, dict[str, Any]], str], on_complete: Callable[[str, bool], None],
                 figure_only: list[str] = ()) -> None:
        self.by_unit: dict[str, list[Case]] = {}
        for case in pending:
            self.by_unit.setdefault(case[0], []).append(case)
        self.batch_size = batch_size
        self.claims = claims
        self.store = store
        self.key = key
        self.on_complete = on_complete  # (unit, computed here) -> draw its figure, free memory
        self.figure_only = list(figure_only)  # complete units whose figure is missing
        self.remaining: dict[str, int] = {}
        self.left_to_others: list[str] = []

    def _complete(self, unit: str, computed: bool) -> None:
        try:
            self.on_complete(unit, computed)
        finally:
            self.claims.release(unit)

    def _take(self, unit: str, queue: deque) -> bool:
        """Claim ``unit`` and queue what is still missing of it; False if another writer holds it."""
        if not self.claims.acquire(unit):
            return False
        done = self.store.done_case_ids()
        todo = [c for c in self.by_unit[unit] if self.key(*c) not in done]
        if not todo:  # finished by another writer meanwhile
            self._complete(unit, computed=False)
            return True
        self.remaining[unit] = len(todo)
        queue.extend(todo)
        return True

    def batches(self) -> Iterator[list[Case]]:
        for unit in self.figure_only:
            if self.claims.acquire(unit):
                self._complete(unit, computed=False)
        order, queue, skipped = deque(self.by_unit), deque(), []
        while True:
            while len(queue) < self.batch_size and order:
                unit = order.popleft()
                if not self._take(unit, queue):
                    skipped.append(unit)
            if not queue:
                # the rest is held by others: look once more (finished? holder died?)
                retry = [u for u in skipped if not self._take(u, queue)]
                if not queue:
                    self.left_to_others = retry
                    break
                skipped = retry
            yield [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
        if self.left_to_others:
            holders = sorted({f"pid {h['pid']} on {h['host']}" for u in self.left_to_others
                              if (h := self.claims.holder_of(u)) is not None})
            print(f"{len(self.left_to_others)} sample(s) of this run are being computed by another writer "
                  f"({', '.join(holders) or 'finished meanwhile'}); not waiting for them", file=sys.stderr)

    def stored(self, batch: list[Case]) -> None:
        """``batch``'s rows are on disk: complete (figure, release) every unit it finished."""
        self.claims.touch()
        for unit, _ in batch:
            self.remaining[unit] -= 1
            if self.remaining[unit] == 0:
                del self.remaining[unit]
                self._complete(unit, computed=True)
