"""The pending cases of a run as batches drawn only from work units (samples) this
process has claimed (attnedit.store.claims), so writers sharing a run directory split it.

Batches follow one fixed grid over the run's full case list: block ``k`` is cases
``k * batch_size`` to ``(k + 1) * batch_size - 1`` (crossing sample boundaries), and a
batch is the still-missing cases of one block. A block's rows are stored together, so a
run resumed after a kill computes exactly the batches the uninterrupted run computed:
the same batch composition, the same float rounding, the same rows to the last bit.
Only when another writer holds part of a block is the rest computed as a smaller batch. A unit is re-checked
against the rows on disk right after it is claimed (another writer may have finished
it since the pending list was made); a unit held by a live writer is skipped and
looked at again once the rest is done.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any, Callable, Iterator

from attnedit.store.claims import Claims
from attnedit.store.run_store import RunStore

Case = tuple[str, dict[str, Any]]


class WorkUnits:
    def __init__(self, pending: list[Case], batch_size: int, claims: Claims, store: RunStore,
                 key: Callable[[str, dict[str, Any]], str], on_complete: Callable[[str, bool], None],
                 figure_only: list[str] = (), position: Callable[[str], int] | None = None) -> None:
        self.by_unit: dict[str, list[Case]] = {}
        for case in pending:
            self.by_unit.setdefault(case[0], []).append(case)
        self.batch_size = batch_size
        order = {key(*c): i for i, c in enumerate(pending)}
        self.position = position or order.__getitem__  # case id -> index in the run's full case list
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
        block = lambda case: self.position(self.key(*case)) // self.batch_size  # noqa: E731
        while True:
            # claim units until the queue holds the head's whole block (or nothing is left)
            while order and (not queue or block(queue[-1]) == block(queue[0])):
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
            head = block(queue[0])
            batch = []
            while queue and block(queue[0]) == head:
                batch.append(queue.popleft())
            yield batch
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
