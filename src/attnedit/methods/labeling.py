"""Automatic direction labels: score every direction against a vocabulary of attribute
text pairs with Directional CLIP on probe samples, keep the best match.

For direction k and attribute (source, target), the score is the mean over probes of
cos(E(x_k(+alpha)) - E(x_k(-alpha)), T(target) - T(source)): how well moving along
+n changes the image the way the text changes. The label with the largest |score|
wins; a negative score means -n is the attribute, so source and target are swapped and
the label is prefixed with "-", keeping "+alpha moves source -> target" true in tables.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from attnedit.errors import ConfigError

# label, source text, target text (prompt templates wrap them: "a photo of {}.")
FACE_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("smiling", "a face", "a smiling face"),
    ("old", "a face", "an old face"),
    ("young", "a face", "a young face"),
    ("man", "a person", "a man"),
    ("woman", "a person", "a woman"),
    ("makeup", "a face", "a face with makeup"),
    ("beard", "a face", "a face with a beard"),
    ("bald", "a person", "a bald person"),
    ("blond hair", "a person", "a person with blond hair"),
    ("curly hair", "a person", "a person with curly hair"),
    ("eyeglasses", "a face", "a face with eyeglasses"),
    ("angry", "a face", "an angry face"),
    ("surprised", "a face", "a surprised face"),
    ("tanned", "a face", "a tanned face"),
    ("pale", "a face", "a pale face"),
)


def label_directions(
    render: Callable[[int, float], Tensor],
    directions: Sequence[int],
    alpha: float,
    embed_images: Callable[[Tensor], Tensor],
    embed_texts: Callable[[list[str]], Tensor],
    vocabulary: Sequence[Sequence[str]] = FACE_ATTRIBUTES,
) -> dict[int, dict]:
    """``render(k, a)`` returns the probe samples edited along direction k by a.

    Returns {k: {"label", "source", "target", "score", "scores"}} with every attribute's
    signed score kept for inspection.
    """
    if alpha <= 0:
        raise ConfigError(f"labeling alpha must be > 0 (it probes +alpha and -alpha), got {alpha}")
    if not vocabulary:
        raise ConfigError("the labeling vocabulary is empty; give at least one [label, source, target]")
    names = [entry[0] for entry in vocabulary]
    sources = embed_texts([entry[1] for entry in vocabulary]).float().cpu()
    targets = embed_texts([entry[2] for entry in vocabulary]).float().cpu()
    text_change = F.normalize(targets - sources, dim=-1)  # (V, D)
    labels = {}
    for k in directions:
        change = embed_images(render(k, alpha)).float().cpu() - embed_images(render(k, -alpha)).float().cpu()
        scores = (F.normalize(change, dim=-1) @ text_change.T).mean(dim=0)  # (V,)
        best = int(scores.abs().argmax())
        label, source, target = vocabulary[best][:3]
        score = float(scores[best])
        if score < 0:
            label, source, target = f"-{label}", target, source
        labels[int(k)] = {
            "label": label,
            "source": source,
            "target": target,
            "score": abs(score),
            "scores": {name: round(float(s), 6) for name, s in zip(names, scores)},
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

