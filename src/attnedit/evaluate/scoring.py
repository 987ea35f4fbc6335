"""attnedit-evaluate's scoring: every metric on a batch of equal-sized images for every
method at once, queued on the device; the rows come back when the batch is written."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from attnedit.evaluate.inputs import Item, Staging, edited_batch
from attnedit.evaluate.output import format_value
from attnedit.metrics.base import PairMetric, check_image_shapes


def score_group(
    metrics: list[PairMetric], editeds: list[torch.Tensor], reference: torch.Tensor, context: dict[str, Any]
) -> torch.Tensor:
    """Every metric on one batch of equal-sized images, for every method: [n, methods x
    metrics] float64 on the device, method-major (the CSV's column order), without waiting
    for the device. The images' range is not checked: each is uint8 / 255 or a clamped
    resize of one, in [0, 1] by construction (a check would wait for the device)."""
    label = ", ".join(m.name for m in metrics)
    for edited in editeds:
        check_image_shapes(edited, reference, label)
    columns: list[list[torch.Tensor]] = [[] for _ in editeds]
    for m in metrics:
        needed = {k: context[k] for k in m.needs}
        for method, scores in zip(columns, m.score_each(editeds, reference, **needed)):
            method.append(torch.as_tensor(scores[m.name], dtype=torch.float64, device=reference.device))
    return torch.stack([value for method in columns for value in method], dim=1)


@dataclass
class Scored:
    """One batch's scores on their way to the host: ``values`` [n, methods x metrics] is
    complete once ``ready`` (a CUDA event; None elsewhere) has passed."""

    ids: list[str]
    failed: list[list[bool]]  # per entry, per method: not scored (NaN/inf pixels)
    values: torch.Tensor
    ready: Any = None

    def rows(self) -> list[list[str]]:
        """The batch's CSV rows (waits for the device)."""
        if self.ready is not None:
            self.ready.synchronize()
        values = self.values.tolist()
        per_method = len(values[0]) // len(self.failed[0]) if values and self.failed[0] else 0
        rows = []
        for entry, failed, cells in zip(self.ids, self.failed, values):
            row = [entry]
            for k, skip in enumerate(failed):
                row += ["" if skip else format_value(v) for v in cells[k * per_method : (k + 1) * per_method]]
            rows.append(row)
        return rows


def score_items(items: list[Item], cfg: Any, metrics: list[PairMetric], staging: Staging, fitted: Counter) -> Scored:
    """Queue the scoring of decoded entries for every method; :meth:`Scored.rows` gives
    their CSV rows (grouped by image size, sizes in order of first appearance)."""
    n_methods = len(items[0].edited)
    order, blocks = [], []
    for size in dict.fromkeys(tuple(it.sample.image.shape[-2:]) for it in items):  # a batch holds one size
        group = [it for it in items if tuple(it.sample.image.shape[-2:]) == size]
        reference = staging.to_float([it.sample.image for it in group])
        editeds = []
        for k in range(n_methods):
            # A failed image is scored as the source (in range, right size); its cells are blanked.
            images = [it.sample.image if it.edited[k] is None else it.edited[k] for it in group]
            editeds.append(edited_batch(images, size, cfg.edited_size, [it.paths[k] for it in group], staging,
                                        fitted))
        context = {
            "mask": staging.stack([it.sample.fields["mask"] for it in group]),
            "original_prompt": [it.sample.fields["original_prompt"] for it in group],
            "editing_prompt": [it.sample.fields["editing_prompt"] for it in group],
        }
        blocks.append(score_group(metrics, editeds, reference, context))
        order += group
    values, ready = torch.cat(blocks), None
    if staging.pinned:  # copied back without waiting; Scored.rows waits for this event only
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        values = host.copy_(values, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(staging.device))
    failed = [[edited is None for edited in it.edited] for it in order]
    return Scored([it.sample.id for it in order], failed, values, ready)
