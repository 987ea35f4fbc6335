"""Run directories planted as the runner writes them, for the report's tests."""

from __future__ import annotations

from pathlib import Path

from attnedit.store.run_store import RunStore


def sad_run(root: Path, name: str, values: dict, method="sad", config=None, failed=(), seconds=None) -> Path:
    """A run like the runner writes one: one case per (sample, direction) at alpha 0.4;
    ``values[metric]``: an array (samples x 2 directions); ``failed``: (sample, direction)
    cases that raised (NaN metrics, failed=True, an error text)."""
    store = RunStore(root / name)
    config = {"name": "planted", "method": {"name": method, "position": "after_norm"}, "dataset": {"first_seed": 0},
              **(config or {})}
    store.write_json("manifest.json", {"config": config, "metric_order": list(values),
                                       "model": {"name": "tiny", "device": "cpu", "weights_sha256_16": "w"},
                                       "host": {"hostname": "h"}, "method": {"name": method},
                                       "cost": {"sessions": [{"load_average": [1.5, 1.25, 1.0]}]}})
    rows = []
    samples = len(next(iter(values.values())))
    for s in range(samples):
        for d in range(2):
            broken = (s, d) in failed
            rows.append({"case_id": f"s{s}|{method}|{d}", "sample_id": f"s{s}", "method": method, "direction": d,
                         "label": f"dir{d}", "alpha": 0.4, "alpha_scale": "token_norm", "model": "tiny",
                         **{m: float("nan") if broken else float(v[s][d]) for m, v in values.items()},
                         "seconds_per_case": float(seconds[s][d]) if seconds is not None else 1.0,
                         "failed": broken, "error": "OutOfMemoryError: CUDA out of memory" if broken else None,
                         "random_backbone": False, "model_random_weights": False})
    store.append(rows)
    return store.run_dir
