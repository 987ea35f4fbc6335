"""Run signature and the append-only parquet store."""

from __future__ import annotations

import pandas as pd
import pytest

from attnedit.errors import DataError
from attnedit.store.signature import config_signature
from attnedit.store.run_store import RunStore

BASE = {"name": "x", "model": {"path": "m", "device": "cpu", "allow_tf32": False}, "method": {"alphas": [0.2]},
        "device": "cpu", "batch_size": 4, "paths": {"root_dir": "/a"}, "logger": {"project": "p"},
        "group": None, "numerical_floor": {"samples": 2}, "tables": {"reference": None},
        "metric_weights": "pretrained"}


def changed(**updates):
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for dotted, value in updates.items():
        node, *path = cfg, *dotted.split("__")
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return cfg


def test_signature_ignores_keys_that_cannot_change_results():
    base = config_signature(BASE)
    for key, value in {"device": "cuda", "batch_size": 64, "paths__root_dir": "/b", "logger__project": "q",
                       "model__device": "cuda", "group": "x/multirun_2026-01-01_00-00-00",  # a rerun of a -m sweep
                       "numerical_floor__samples": 4, "tables__reference": "published.csv"}.items():
        assert config_signature(changed(**{key: value})) == base, key


def test_signature_changes_with_result_keys():
    base = config_signature(BASE)
    assert config_signature(changed(method__alphas=[0.4])) != base
    assert config_signature(changed(model__path="other")) != base
    assert config_signature(changed(metric_weights="random")) != base  # other metric backbones, other numbers
    assert config_signature(changed(model__allow_tf32=True)) != base  # other GPU numerics


def test_append_and_read_back(tmp_path):
    store = RunStore(tmp_path)
    store.append([{"case_id": "a", "v": 1.0}, {"case_id": "b", "v": 2.0}])
    store.append([{"case_id": "c", "v": 3.0}])
    (store.cases_dir / ".part-unfinished.parquet.tmp").write_bytes(b"half written")
    frame = pd.read_parquet(tmp_path / "cases")  # the documented way to read a run
    assert sorted(frame.case_id) == ["a", "b", "c"]
    assert store.done_case_ids() == {"a", "b", "c"}
    assert list(store.read().v) == [1.0, 2.0, 3.0]


def test_malformed_manifest_is_named(tmp_path):
    store = RunStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json is not valid JSON"):
        store.read_json("manifest.json")
    with pytest.raises(DataError, match="does not exist"):
        store.read_json("other.json")
