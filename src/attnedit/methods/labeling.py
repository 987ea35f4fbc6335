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
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

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


def case_texts(entry: Mapping[str, Any] | None, alpha: float) -> dict[str, Any]:
    """Row fields of one edit of a labeled direction: the label's sign and the
    Directional CLIP texts in the order this edit moves (swapped when sign * alpha < 0)."""
    sign = label_sign(entry)
    source, target = (entry or {}).get("source"), (entry or {}).get("target")
    if sign * float(alpha) < 0:
        source, target = target, source
    return {"label_sign": sign, "source_text": source, "target_text": target}


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

