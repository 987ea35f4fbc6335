"""attnedit-evaluate's loop: decode ahead, score in batches, write each batch's rows, then
the per-category summary."""

from __future__ import annotations

import warnings
from collections import Counter, deque
from contextlib import closing
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

from attnedit.data.piebench import PIEBench
from attnedit.errors import DataError
from attnedit.evaluate.config import build_metrics, check_config, method_folders, resolve_device, resolve_workers
from attnedit.evaluate.inputs import Item, Staging, ahead, read_item
from attnedit.evaluate.output import CsvLog, check_meta, meta_path, prepare_output, run_settings, ssim_convention
from attnedit.evaluate.scoring import Scored, score_items
from attnedit.report.piebench_summary import summarize, write_summary


def evaluate(cfg: DictConfig) -> int:
    """Score, write the CSV and its summaries; ``cfg``: conf/evaluate/evaluate.yaml composed."""
    cfg = check_config(cfg)
    device = resolve_device(cfg.device)  # before any work
    out = Path(cfg.out)
    prepare_output(out)
    dataset = PIEBench(cfg.dataset.root, cfg.dataset.categories, cfg.dataset.ids, cfg.dataset.first_n)
    methods = method_folders(cfg)
    for name, folder in methods.items():
        if not folder.is_dir():
            raise DataError(
                f"edited folder {folder} of method '{name}' is not a folder; it must mirror "
                "<PIE-Bench root>/annotation_images/."
            )
    metrics = build_metrics(cfg)
    names = [m.name for m in metrics]
    check_meta(meta_path(out), run_settings(cfg, dataset, metrics), out)
    log = CsvLog(out, ["file_id"] + [f"{method}|{n}" for method in methods for n in names])
    todo = [i for i in dataset.sample_ids() if i not in log.done]
    batch_size, workers = int(cfg.batch_size), resolve_workers(cfg.workers)
    bar = tqdm(total=len(todo), desc=f"PIE-Bench {', '.join(methods)}", unit="img", disable=not cfg.progress)
    fitted: Counter = Counter()
    staging = Staging(device)
    decoded = ahead(lambda i: read_item(dataset, i, methods, cfg), todo, workers, max(2 * batch_size, 2 * workers))
    # On a GPU, batch N's rows are written once batch N+1 is queued (Staging.ahead).
    queued: deque[Scored] = deque()

    def write(scored: Scored) -> None:
        log.append(scored.rows())
        bar.update(len(scored.ids))

    try:
        with closing(decoded):
            batch: list[Item] = []
            for item in decoded:
                for message in item.failed:
                    warnings.warn(message, stacklevel=2)
                if item.skipped:
                    warnings.warn(item.skipped, stacklevel=2)
                    bar.update(1)
                    continue
                batch.append(item)
                if len(batch) == batch_size:
                    queued.append(score_items(batch, cfg, metrics, staging, fitted))
                    batch = []
                    while len(queued) > staging.ahead:
                        write(queued.popleft())
            if batch:
                queued.append(score_items(batch, cfg, metrics, staging, fitted))
    except BaseException:
        # Whatever stopped the loop, the rows already scored are written; the first error is the one reported.
        try:
            while queued:
                write(queued.popleft())
        except Exception as err:
            warnings.warn(f"rows of {len(queued) + 1} scored batch(es) could not be written to {out} ({err}); "
                          "a rerun scores them again", stacklevel=2)
        raise
    while queued:
        write(queued.popleft())
    bar.close()
    random_weights = sorted({m.weights for m in metrics if m.uses_random_weights})
    table = summarize(out, dataset, list(methods), names)
    text = write_summary(table, out, list(methods), names, random_weights, ssim_convention(cfg, metrics))
    print(text)
    for action, count in sorted(fitted.items()):
        how = "cropped to the bottom-right corner" if action == "crop" else "resized (bicubic, antialiased)"
        print(f"{count} edited image(s) of another size than the source {how} (edited_size={cfg.edited_size})")
    print(f"per-image scores: {out}\nsummary: {out.with_name(out.stem + '_summary.md')} and .csv")
    return 0
