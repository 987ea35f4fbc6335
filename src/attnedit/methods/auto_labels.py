"""Automatic Directional-CLIP labels for a baseline's own directions, during setup.

Directional CLIP needs a (source, target) text per direction. A baseline's direction k
means nothing like SAD's direction k, so it gets its own labels, by the procedure
`attnedit-directions label=auto` applies to SAD's (methods/labeling.py): each
direction, applied at +alpha and at -alpha with the method's own edit to the same probe
samples, is scored per sign against the unedited probes and named after the
(attribute, sign) it moves the CLIP embedding toward most; the sign is part of the label.
For pullback, direction k is the k-th singular vector of each probe. Each label records
its ``probe_seeds``: the runner refuses a run that evaluates one of them
(labeling.check_probes_disjoint), as a label scored on its own probes is biased up.

``spec`` keys (as conf/directions.yaml's ``labeling``): num_probes, first_seed, alpha,
vocabulary (null = the built-in face attributes), clip (a Hydra node with
embed_images / embed_texts, e.g. attnedit.metrics.clip.DirectionalCLIP).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from hydra.utils import instantiate

from attnedit.data.seeds import SeedDataset
from attnedit.errors import ConfigError
from attnedit.methods.injected import DirectionMethod
from attnedit.methods.labeling import FACE_ATTRIBUTES, label_directions, sad_renderer
from attnedit.methods.sad import SAD

SPEC_KEYS = ("num_probes", "first_seed", "alpha", "clip")


def renderer(backend, method, probes):
    """render(k, a): the probes edited along direction k by a, the control handed to
    generate() (pullback edits through its latent hook, not through module hooks)."""

    def render(k: int, alpha: float):
        edit = next(e for e in method.edits() if e["direction"] == k)
        with method.control(backend, [{**edit, "alpha": alpha}] * len(probes)) as control:
            return backend.generate(probes, control)

    return render


def _probing(spec: Mapping[str, Any]) -> tuple[list, Any, list[tuple[str, ...]], str]:
    """(probe samples, the CLIP scorer, the vocabulary, who labeled) of a labeling spec."""
    probes = SeedDataset(int(spec["num_probes"]), int(spec["first_seed"]))
    probes = [probes.load(i) for i in probes.sample_ids()]
    clip = spec["clip"] if hasattr(spec["clip"], "embed_images") else instantiate(spec["clip"])  # Hydra may have built it
    vocabulary = [tuple(v) for v in spec["vocabulary"]] if spec.get("vocabulary") else FACE_ATTRIBUTES
    source = f"directional_clip {getattr(clip, 'model_name', type(clip).__name__)} weights={getattr(clip, 'weights', '?')}"
    return probes, clip, vocabulary, source


def auto_label(method, backend, spec: Mapping[str, Any]) -> float:
    """Fill ``method.labels`` for every requested direction not labeled in config.
    Returns the seconds spent (labeling is harness work, not the method's discovery)."""
    missing_keys = [k for k in SPEC_KEYS if k not in spec]
    if missing_keys:
        raise ConfigError(f"method.labeling lacks {missing_keys}; give {list(SPEC_KEYS)} (see conf/directions.yaml)")
    todo = [k for k in method.direction_ids if k not in method.labels]
    if not todo:
        return 0.0
    start = time.perf_counter()
    probes, clip, vocabulary, source = _probing(spec)
    labels = label_directions(renderer(backend, method, probes), todo, float(spec["alpha"]),
                              clip.embed_images, clip.embed_texts, vocabulary)
    seeds = [int(p.seed) for p in probes]
    for k, entry in labels.items():
        method.labels[int(k)] = {**entry, "labeled_by": source, "probe_seeds": seeds}
    return time.perf_counter() - start


def label_sad_directions(backend, layers: list[str], spec: Mapping[str, Any], cache_dir: str) -> dict[int, dict]:
    """``attnedit-directions label=auto``: the top ``spec["directions"]`` SAD directions of
    ``layers`` (from the same cache as the directions file), each named by Directional
    CLIP on probes edited at +-alpha with SAD's injection (``spec``: conf/directions.yaml's
    ``labeling``)."""
    method = SAD(layers=layers, directions=int(spec["directions"]), alphas=[spec["alpha"]],
                 alpha_scale=spec["alpha_scale"], position=spec["position"], window=list(spec["window"]))
    method.setup(backend, cache_dir)
    probes, clip, vocabulary, _ = _probing(spec)
    labels = label_directions(sad_renderer(backend, method, probes), method.direction_ids, float(spec["alpha"]),
                              clip.embed_images, clip.embed_texts, vocabulary)
    for entry in labels.values():
        entry["labeled_by"] = f"directional_clip {clip.model_name}/{clip.pretrained} weights={clip.weights}"
        entry["probe_seeds"] = [int(p.seed) for p in probes]
    return labels


class AutoLabeledDirections(DirectionMethod):
    """A DirectionMethod whose unlabeled directions are named in setup when given ``labeling``."""

    def __init__(self, labeling: Mapping[str, Any] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.labeling = labeling
        self.labeling_seconds = 0.0

    def setup(self, backend, cache_dir: str | None = None) -> None:
        super().setup(backend, cache_dir)  # times discover() alone
        if self.labeling:
            self.labeling_seconds = auto_label(self, backend, self.labeling)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labeling_seconds": self.labeling_seconds}
