"""Metric settings per column: a hash without where the metric's module lives, and a
resumed run's new rows carrying the hash its earlier rows carry."""

from __future__ import annotations

import copy

from attnedit.metrics.fidelity import SSIM
from attnedit.metrics.settings import keep_recorded, metric_settings, settings_hash


def test_a_moved_metric_module_keeps_the_settings_and_new_rows_keep_the_recorded_hash():
    current = {"ssim": metric_settings(SSIM(), {"_target_": "attnedit.metrics.fidelity.SSIM"})}
    moved = copy.deepcopy(current["ssim"])
    moved["metric"] = "attnedit.old_place.SSIM"
    moved["hash"] = "0123456789ab"  # what that run's rows carry
    assert settings_hash(moved) == settings_hash(current["ssim"])
    assert keep_recorded({"ssim": moved}, current) == {"ssim": moved}
    other = copy.deepcopy(moved)
    other["convention"] = "pad"  # another setting: its rows must not pool with these
    assert keep_recorded({"ssim": other}, current) == current
    assert keep_recorded({}, current) == current


def test_a_key_added_at_its_earlier_behaviour_keeps_the_hash_of_the_columns_scored_before():
    before = {"metric": "attnedit.metrics.identity.IdentitySimilarity", "weights": "pretrained",
              "config": {"weights": "pretrained", "align": "mtcnn"}, "images": "uint8"}
    now = copy.deepcopy(before)
    now["config"].update(backbone="facenet", arcface_file=None)  # id_sim keys added later, at FaceNet's values
    assert settings_hash(now) == settings_hash(before)
    arcface = copy.deepcopy(now)
    arcface["config"]["backbone"] = "arcface_ir_se50"
    assert settings_hash(arcface) != settings_hash(before)
