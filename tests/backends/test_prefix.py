"""The store of unedited trajectory states the edits of a sample start from (backends/prefix.py)."""

from __future__ import annotations

import torch

from attnedit.backends.prefix import PrefixStore, State


def test_prefix_store_is_bounded_and_keeps_only_the_steps_edits_start_from():
    state = State(torch.zeros(3, 8, 8), None)  # 768 bytes
    store = PrefixStore(max_bytes=5 * state.nbytes)
    for key in "abc":
        for t in (900, 800):
            store.put(key, t, state)
    assert store.nbytes <= 5 * state.nbytes and store.get("a", 900) is None and store.get("c", 800) is not None
    store.settle(800)
    assert store.nbytes == 2 * state.nbytes and store.get("c", 900) is None and store.get("c", 800) is not None
    store.put("d", 700, state)  # not a step edits start from: not kept
    assert store.get("d", 700) is None and store.nbytes == 2 * state.nbytes
