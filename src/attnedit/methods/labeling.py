"""Direction labels: which texts Directional CLIP scores an edit against, and automatic
labels (score every direction against a vocabulary of attribute text pairs with
Directional CLIP on probe samples, keep the best match).

A label entry is {label, source, target, sign}: the edit along ``sign * n`` (alpha of
that sign) moves the image from ``source`` to ``target`` (sign defaults to +1). An edit
at alpha of the other sign is the opposite change, so its texts are swapped:
:func:`case_texts` gives every case the texts in the order its own edit moves, and a
Directional CLIP of a linear edit at -alpha then equals the +alpha one instead of
cancelling it in a mean. The SAD paper's Table 2 takes each direction at the label's sign.

Automatic labels score each sign on its own, as the study scores a case: for direction
k, sign s in {+1, -1} and attribute (source, target), the mean over probes of

    cos( E(x_k(s * alpha)) - E(x_unedited),  T(target) - T(source) )

(the Directional CLIP of that edit); the best (attribute, sign) wins. So a direction
whose -alpha edit best matches "smiling" gets label "smiling" with sign -1. Earlier
files (labels without ``sign``, "-label" with swapped texts, from the symmetric
E(x(+alpha)) - E(x(-alpha)) score) keep their meaning: sign +1, texts as stored.

The best of 15 attributes x 2 signs is a maximum over 30 correlated scores, so a label
scored on the samples it was chosen on is biased up (a random direction then scores
above chance). So labels are chosen on probe samples apart from the evaluated ones:
an entry records its ``probe_seeds``, every row says which (``label_probes``), and a run
whose samples include a probe seed stops (:func:`check_probes_disjoint`). What a label
is worth beyond a generic change is read against the label-shuffled null
(:func:`null_case_texts`): the same Directional CLIP of the same cases with the labels
permuted across the method's directions (distinct seeded derangements: no direction keeps
its own label), ``label_null`` permutations (0: off) or the !n that n directions have where
fewer (2 directions: one swap, so no spread), shown per method beside Table 2 with the
number used.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnedit.errors import ConfigError

# label, source text, target text. Class-name style without an article: the default
# Directional CLIP templates (StyleGAN-NADA's ImageNet ones) read "a bad photo of a {}.".
FACE_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("smiling", "face", "smiling face"),
    ("old", "face", "old face"),
    ("young", "face", "young face"),
    ("man", "person", "man"),
    ("woman", "person", "woman"),
    ("makeup", "face", "face with makeup"),
    ("beard", "face", "face with a beard"),
    ("bald", "person", "bald person"),
    ("blond hair", "person", "person with blond hair"),
    ("curly hair", "person", "person with curly hair"),
    ("eyeglasses", "face", "face with eyeglasses"),
    ("angry", "face", "angry face"),
    ("surprised", "face", "surprised face"),
    ("tanned", "face", "tanned face"),
    ("pale", "face", "pale face"),
)


def label_sign(entry: Mapping[str, Any] | None) -> int:
    """The alpha sign whose edit is the labeled change (source -> target): +1 unless set."""
    sign = (entry or {}).get("sign", 1)
    if sign not in (1, -1, 1.0, -1.0):
        raise ConfigError(f"a direction label's sign must be 1 or -1, got {sign!r} in {dict(entry)}")
    return int(sign)


def _ordered_texts(entry: Mapping[str, Any] | None, alpha: float) -> tuple[str | None, str | None]:
    source, target = (entry or {}).get("source"), (entry or {}).get("target")
    return (target, source) if label_sign(entry) * float(alpha) < 0 else (source, target)


def case_texts(entry: Mapping[str, Any] | None, alpha: float) -> dict[str, Any]:
    """Row fields of one edit of a labeled direction: the label's sign, the Directional
    CLIP texts in the order this edit moves (swapped when sign * alpha < 0) and the
    probes the label was chosen on (:func:`probes_text`)."""
    source, target = _ordered_texts(entry, alpha)
    return {"label_sign": label_sign(entry), "source_text": source, "target_text": target,
            "label_probes": probes_text(entry)}


def probes_text(entry: Mapping[str, Any] | None) -> str | None:
    """Which samples a label was chosen on, for rows: "seeds 1000-1003"; "manual" for a
    label given in config; "unrecorded" for an automatic label made before probes were
    recorded; None without a label."""
    if not entry:
        return None
    seeds = entry.get("probe_seeds")
    if seeds is None:
        return "unrecorded" if "labeled_by" in entry else "manual"
    seeds = sorted(int(s) for s in seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seeds {seeds[0]}"
    return "seeds " + ",".join(map(str, seeds))


def check_probes_disjoint(labels: Mapping[int, Mapping[str, Any]], evaluated_seeds: Sequence[int] | None) -> None:
    """A label chosen on a sample the run also scores is biased up on it: stop first."""
    evaluated = set(int(s) for s in evaluated_seeds or ())
    for k, entry in sorted(labels.items()):
        shared = sorted(evaluated.intersection(int(s) for s in (entry or {}).get("probe_seeds") or ()))
        if shared:
            raise ConfigError(
                f"direction {k}'s label was chosen on probe seeds {shared}, which this run also evaluates; "
                "give probes apart from the evaluated samples (labeling.first_seed beyond dataset.first_seed + "
                "dataset.num_samples), or labels chosen on other seeds")


def derangement_count(n: int) -> int:
    """!n, the number of permutations of n items that move every item:
    !0 = 1, !1 = 0, !n = (n - 1) (!(n - 1) + !(n - 2))."""
    before, count = 1, 0  # !0, !1
    if n == 0:
        return before
    for m in range(2, n + 1):
        before, count = count, (m - 1) * (count + before)
    return count


def label_permutations(direction_ids: Sequence[int], count: int, seed: int = 0) -> list[dict[int, int]]:
    """``count`` distinct seeded derangements of ``direction_ids``: {k: the direction whose
    label k takes}; at most the !n that n directions have (2 directions: the one swap, 3: two
    rotations), so the null's spread over permutations is never over copies of one."""
    ids = [int(k) for k in direction_ids]
    if count < 0:
        raise ConfigError(f"label_null={count} must be >= 0 (0: no label-shuffled null)")
    if count and len(ids) < 2:
        raise ConfigError(f"label_null={count} permutes labels across directions; the method has {len(ids)} "
                          "direction(s): give method.directions of at least 2, or label_null=0")
    wanted = min(count, derangement_count(len(ids)))
    rng = np.random.default_rng(seed)
    found: dict[tuple[int, ...], dict[int, int]] = {}
    while len(found) < wanted:
        order = rng.permutation(len(ids))
        # rejection sampling (about 1/e of draws are derangements); repeats are skipped, so
        # draws that were distinct anyway come out as before
        if (order != np.arange(len(ids))).all():
            found.setdefault(tuple(order.tolist()), {k: ids[j] for k, j in zip(ids, order)})
    return list(found.values())


def null_case_texts(labels: Mapping[int, Mapping[str, Any]], permutations: Sequence[Mapping[int, int]],
                    k: int, alpha: float) -> str:
    """The ``null_texts`` field of edit (k, alpha): JSON [[source, target], ...], one pair per
    permutation, the texts of the label direction k takes there, ordered as
    :func:`case_texts` orders them for this alpha."""
    return json.dumps([list(_ordered_texts(labels.get(perm[int(k)]), alpha)) for perm in permutations])


def with_null_texts(edits: list[dict[str, Any]], labels: Mapping[int, Mapping[str, Any]], count: int,
                    seed: int = 0) -> list[dict[str, Any]]:
    """``edits`` with their ``null_texts`` (``count`` permutations of the labels over the
    edits' directions); unchanged when count is 0."""
    if not count:
        return edits
    if any("direction" not in e or "alpha" not in e for e in edits):
        raise ConfigError(f"label_null={count} permutes direction labels, but this method's edits have no "
                          "(direction, alpha); set label_null=0")
    ids = list(dict.fromkeys(int(e["direction"]) for e in edits))
    permutations = label_permutations(ids, count, seed)
    return [{**e, "null_texts": null_case_texts(labels, permutations, e["direction"], e["alpha"])} for e in edits]


class LabeledEdits:
    """Label lookups of a method whose ``labels`` map a direction index to {label, source,
    target}, and whose edits scale with ``alpha`` (alpha = 0 changes nothing)."""

    labels: dict

    def label(self, k: int) -> str:
        return str(self.labels.get(k, {}).get("label", f"dir{k}"))

    def texts(self, k: int) -> tuple[str | None, str | None]:
        entry = self.labels.get(k, {})
        return entry.get("source"), entry.get("target")

    def is_identity(self, edit: dict[str, Any]) -> bool:
        return float(edit["alpha"]) == 0.0


def label_directions(
    render: Callable[[int, float], Tensor],
    directions: Sequence[int],
    alpha: float,
    embed_images: Callable[[Tensor], Tensor],
    embed_texts: Callable[[list[str]], Tensor],
    vocabulary: Sequence[Sequence[str]] = FACE_ATTRIBUTES,
    reference: Tensor | None = None,
) -> dict[int, dict]:
    """``render(k, a)`` returns the probe samples edited along direction k by a;
    ``reference``: the unedited probes (default ``render(directions[0], 0.0)``).

    Returns {k: {"label", "source", "target", "sign", "score", "scores"}}; ``scores``
    keeps every (sign, attribute) score, keyed "+smiling" / "-smiling".
    """
    if alpha <= 0:
        raise ConfigError(f"labeling alpha must be > 0 (it probes +alpha and -alpha), got {alpha}")
    if not vocabulary:
        raise ConfigError("the labeling vocabulary is empty; give at least one [label, source, target]")
    directions = [int(k) for k in directions]
    names = [entry[0] for entry in vocabulary]
    sources = embed_texts([entry[1] for entry in vocabulary]).float().cpu()
    targets = embed_texts([entry[2] for entry in vocabulary]).float().cpu()
    text_change = F.normalize(targets - sources, dim=-1)  # (V, D)
    unedited = embed_images(render(directions[0], 0.0) if reference is None else reference).float().cpu()
    labels = {}
    for k in directions:
        per_sign = []
        for sign in (1, -1):
            change = embed_images(render(k, sign * alpha)).float().cpu() - unedited
            per_sign.append((F.normalize(change, dim=-1) @ text_change.T).mean(dim=0))  # (V,)
        scores = torch.stack(per_sign)  # (2, V): row 0 is +alpha, row 1 is -alpha
        row, best = divmod(int(scores.argmax()), len(vocabulary))
        label, source, target = vocabulary[best][:3]
        labels[k] = {
            "label": label,
            "source": source,
            "target": target,
            "sign": 1 if row == 0 else -1,
            "score": float(scores[row, best]),
            "scores": {f"{mark}{name}": round(float(s), 6)
                       for mark, values in zip("+-", scores) for name, s in zip(names, values)},
        }
    return labels


def sad_renderer(backend, method, probes) -> Callable[[int, float], Tensor]:
    """render(k, a) for a set-up SAD-like method: probes edited along direction k by a."""

    def render(k: int, alpha: float) -> Tensor:
        edit = next(e for e in method.edits() if e["direction"] == k)
        edits = [{**edit, "alpha": alpha}] * len(probes)
        with method.control(backend, edits):
            return backend.generate(probes)

    return render

