"""Automatic labels for a baseline's own directions (methods/auto_labels.py): the winning
(attribute, sign) recomputed from the probes' colour changes under a stand-in CLIP."""

from __future__ import annotations

import pytest
import torch

from attnedit.data.base import Sample
from attnedit.errors import ConfigError
from attnedit.methods.auto_labels import auto_label
from attnedit.methods.random_directions import RandomDirections


def test_baselines_label_their_own_directions(short_backend):
    backend = short_backend
    method = RandomDirections(directions=[0, 1], labels={1: {"label": "kept", "source": "a", "target": "b"}},
                              window=[0.0, 1.0], alphas=[0.4],
                              labeling={"num_probes": 1, "first_seed": 7, "alpha": 0.4,
                                        "vocabulary": [["redder", "x", "red"], ["bluer", "x", "blue"]],
                                        "clip": {"_target_": "fake_clip.FakeClip"}})
    method.setup(backend)
    assert method.labels[1]["label"] == "kept", "labels given in config win"
    entry = method.labels[0]
    assert entry["label"] in ("redder", "bluer") and entry["labeled_by"].endswith("weights=fake")
    assert entry["probe_seeds"] == [7] and method.edits()[0]["label_probes"] == "seeds 7", "the probes are recorded"
    # recompute the winning (attribute, sign) independently: each sign's colour change from the unedited probe
    probe = [Sample(id="p", seed=7)]
    unedited = backend.generate(probe).mean(dim=(2, 3))[0].double()
    scores = {}
    for sign in (1, -1):
        with method.control(backend, [{**method.edits()[0], "alpha": 0.4 * sign}]) as control:
            colour = backend.generate(probe, control).mean(dim=(2, 3))[0].double()
        change = torch.nn.functional.normalize(colour - unedited, dim=0)
        scores.update({("redder", sign): float(change[0]), ("bluer", sign): float(change[2])})
    best, sign = max(scores, key=scores.get)
    assert (entry["label"], entry["sign"]) == (best, sign)
    assert entry["score"] == pytest.approx(scores[best, sign], abs=1e-5)
    edit = method.edits()[0]  # alpha +0.4: the label's texts if its sign is +, else reversed
    texts = (entry["source"], entry["target"])
    assert (edit["source_text"], edit["target_text"]) == (texts if sign > 0 else texts[::-1])
    with pytest.raises(ConfigError, match="lacks"):
        auto_label(method, backend, {"alpha": 0.4})
