"""States of the unedited DDIM trajectory, per sample, so edits start where they diverge.

An edit that cannot change the computation before timestep t0 (its control's
``first_edit_timestep``) gives, up to t0, exactly the unedited trajectory: the backend
stores each sample's state x_t0 (and, with eta > 0, its noise generator's state) while it
computes the unedited reference, and every edit of that sample continues from there.

Which steps to keep is learnt from the edits: until the first edit asks, every step of
a reference is kept; from then on only the steps edits started from (none, for methods
that always run from x_T). Memory is bounded: beyond ``max_bytes`` the least recently
used samples are dropped, and a dropped sample's prefix is recomputed when asked for
(correct, only slower).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class State:
    x: Tensor  # x_t entering the UNet at that step (CPU, the backend's dtype)
    rng: Tensor | None  # torch.Generator.get_state() before the step's noise, if eta > 0

    @property
    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size() + (0 if self.rng is None else self.rng.numel())


class PrefixStore:
    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = int(max_bytes)
        self.keep: set[int] | None = None  # None: no edit seen yet, keep every step
        self._states: OrderedDict[str, dict[int, State]] = OrderedDict()
        self.nbytes = 0

    def wants(self, t: int) -> bool:
        return self.keep is None or t in self.keep

    def put(self, key: str, t: int, state: State) -> None:
        if not self.wants(t):
            return
        steps = self._states.setdefault(key, {})
        if t in steps:
            self.nbytes -= steps[t].nbytes
        steps[t] = state
        self.nbytes += state.nbytes
        self._states.move_to_end(key)
        while self.nbytes > self.max_bytes and len(self._states) > 1:
            _, dropped = self._states.popitem(last=False)
            self.nbytes -= sum(s.nbytes for s in dropped.values())

    def get(self, key: str, t: int) -> State | None:
        steps = self._states.get(key)
        if steps is None or t not in steps:
            return None
        self._states.move_to_end(key)
        return steps[t]

    def settle(self, start: int | None) -> None:
        """An edit starting at ``start`` (None: from x_T) was asked for: from now on keep
        only the steps edits start from, and drop the others."""
        if self.keep is None:
            self.keep = set()
        if start is not None:
            self.keep.add(int(start))
        for key in list(self._states):
            steps = self._states[key]
            for t in [t for t in steps if t not in self.keep]:
                self.nbytes -= steps.pop(t).nbytes
            if not steps:
                del self._states[key]

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        """Forget every state and which steps edits start from."""
        self._states.clear()
        self.nbytes = 0
        self.keep = None
