"""The label-shuffled null of Directional CLIP through a run and Table 2 (methods/labeling.py,
metrics/clip.py, report/label_null.py): each row's null scores recomputed from its saved
images and texts with numpy, Table 2's null cell from the rows, and a run whose labels were
chosen on one of its own samples stopping before any work."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from attnedit.backends.tiny import build_tiny_ddpm
from attnedit.config import compose
from attnedit.errors import ConfigError
from attnedit.metrics.clip import DirectionalCLIP
from attnedit.report.comparison import comparison_frames
from attnedit.report.label_null import probes_note
from attnedit.report.runs import load_runs
from attnedit.run.runner import Runner
from harness import run_overrides

# label_null: 3 over 3 directions, which have only USED distinct derangements (the two rotations)
USED = sum(all(p[i] != i for i in range(3)) for p in itertools.permutations(range(3)))
CLIP = {"model": "ViT-S-32-alt", "weights": "random", "seed": 0, "templates": ["a photo of a {}."]}
LABELS = ("{0: {label: smiling, source: face, target: smiling face}, 1: {label: old, source: face, target: old face, "
          "sign: -1}, 2: {label: bald, source: person, target: bald person, probe_seeds: %s}}")


def overrides(root, model_dir, probes="[1000, 1001]"):
    metric = ("+metrics.directional_clip={_target_: attnedit.metrics.clip.DirectionalCLIP, model: ViT-S-32-alt, "
              "weights: random, seed: 0, templates: ['a photo of a {}.'], label_null: 3, label_null_seed: 1}")
    return [*run_overrides(root, model_dir, "dataset.num_samples=1", "method.directions=3", "model.num_inference_steps=3",
                           "batch_size=6", "figures=false", "numerical_floor.samples=0"), metric, f"+method.labels={LABELS % probes}"]


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory):
    return build_tiny_ddpm(tmp_path_factory.mktemp("tiny32"), sample_size=32)  # a quarter of the pixels: fast


@pytest.fixture(scope="module")
def null_run(tiny32, tmp_path_factory):
    return Runner(compose("config", overrides(tmp_path_factory.mktemp("label_null"), tiny32))).run()


def _png(path):
    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(2, 0, 1)


def test_each_rows_null_is_the_change_scored_against_other_labels(null_run):
    rows = pd.read_parquet(null_run / "cases")
    rows = rows[rows.alpha != 0]
    assert len(rows) == 6 and (rows.label_probes.isin(["manual", "seeds 1000-1001"])).all()
    clip = DirectionalCLIP(**CLIP)  # the same seeded backbone, only its embeddings used
    for _, row in rows.iterrows():
        edited, reference = (_png(null_run / row[k]) for k in ("image_path", "reference_path"))
        change = clip.embed_images(torch.stack([edited, reference])).double().numpy()
        change = change[0] - change[1]
        pairs = json.loads(row.null_texts)
        assert len(pairs) == USED == 2 and len(set(map(tuple, pairs))) == 2, "each other direction's label once"
        assert [row.source_text, row.target_text] not in pairs, "other directions' labels"
        for p, (source, target) in enumerate(pairs):
            text = clip.embed_texts([target, source]).double().numpy()
            text = text[0] - text[1]
            expected = change @ text / np.linalg.norm(change) / np.linalg.norm(text)
            assert row[f"directional_clip_null_p{p}"] == pytest.approx(expected, abs=2e-5)
        assert row.directional_clip_null == pytest.approx(np.mean([row[f"directional_clip_null_p{p}"] for p in range(USED)]))


def test_table2_shows_the_null_per_method_beside_directional_clip(null_run):
    title, tables, _, notes = comparison_frames(load_runs([null_run]))
    table = tables["comparison"]
    columns = list(table.columns)
    assert columns[columns.index("directional_clip") + 1] == "directional_clip_null"
    rows = pd.read_parquet(null_run / "cases")
    rows = rows[rows.alpha != 0]  # no tables.table2_alpha: Table 2 holds every edit
    per_permutation = [np.nanmean(rows[f"directional_clip_null_p{p}"].to_numpy(float)) for p in range(USED)]
    cell = table["directional_clip_null"].iloc[0]
    assert cell.numbers["mean"] == pytest.approx(np.mean(per_permutation), abs=1e-12)
    assert cell.numbers["std"] == pytest.approx(np.std(per_permutation), abs=1e-12)
    assert cell.numbers["permutations"] == USED and f"({USED} permutations)" in cell.text
    assert "directional_clip_null_p2" not in rows, "no copy of a derangement drawn twice"
    assert "directional_clip_null: the same directional_clip" in notes["comparison"]
    assert "labels chosen on probes apart from the evaluated samples: sad: seeds 1000-1001]" in notes["comparison"]
    assert "disjointness from the evaluated samples not checked: sad: manual]" in notes["comparison"]


def test_labels_chosen_on_an_evaluated_sample_stop_the_run(tiny32, tmp_path):
    cfg = compose("config", overrides(tmp_path, tiny32, probes="[0, 1000]"))  # seed 0 is the run's sample
    with pytest.raises(ConfigError, match=r"direction 2's label was chosen on probe seeds \[0\]"):
        Runner(cfg).run()
    assert not list(tmp_path.glob("results/runs/*/*/cases/*.parquet"))


def test_only_labels_with_recorded_probe_seeds_are_said_to_be_apart_from_the_samples():
    """check_probes_disjoint can only check labels that carry probe seeds: manual and
    unrecorded labels are named as unchecked, never as chosen apart."""
    frames = [pd.DataFrame({"label_probes": ["seeds 1000-1003", "manual", None]}),
              pd.DataFrame({"label_probes": ["unrecorded"] * 2}), pd.DataFrame({"psnr": [1.0]})]
    note = probes_note(frames, ["sad", "pullback", "random"])
    checked, unchecked = note.split("] [")
    assert checked == "[labels chosen on probes apart from the evaluated samples: sad: seeds 1000-1003"
    assert unchecked.startswith("labels whose probes are not recorded") and unchecked.endswith(
        ": sad: manual; pullback: unrecorded]")
    assert "apart" not in probes_note(frames[1:], ["pullback", "random"])
    assert probes_note(frames[2:], ["random"]) == ""
