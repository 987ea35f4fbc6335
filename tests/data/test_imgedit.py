"""ImgEdit-Basic in its official layout (data/imgedit.py): numeric key order, sources
where the official script reads them, the older file's ``alter`` label, one-line errors.
Expected values come from the fixture's json and images (os.path.join, PIL)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hydra.utils import instantiate

from attnedit.config import compose
from attnedit.data.imgedit import EDIT_TYPES, TYPE_COUNTS, ImgEditBasic
from attnedit.errors import ConfigError, DataError
from attnedit.run.validate import validate_run_config
from judge_fixtures import IMGEDIT_TYPES, build_imgedit_copy


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    return build_imgedit_copy(tmp_path_factory.mktemp("imgedit"), n_per_type=2, seed=5)


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_samples_in_numeric_key_order_with_the_official_source_paths(copy):
    dataset = ImgEditBasic(copy.root)
    keys = sorted(copy.items, key=int)
    assert keys != sorted(copy.items) != list(copy.items)  # the fixture tells the orders apart
    assert dataset.sample_ids() == keys
    for key in keys:
        item = copy.items[key]
        sample = dataset.load(key)
        assert sample.path == os.path.join(str(copy.images_root), item["id"])  # basic_bench.py's join
        assert (sample.id, sample.category) == (key, item["edit_type"])
        assert sample.fields == {"instruction": item["prompt"], "edit_type": item["edit_type"],
                                 "edit_type_source": item["edit_type"], "image_id": item["id"]}
        np.testing.assert_array_equal(sample.image.numpy(),
                                      copy.pixels[item["id"]].transpose(2, 0, 1).astype(np.float32) / 255)


def test_selection_by_edit_type_then_first_n(copy):
    chosen = ["remove", "compose"]
    expected = [k for k in sorted(copy.items, key=int) if copy.items[k]["edit_type"] in chosen]
    assert ImgEditBasic(copy.root, edit_types=chosen).sample_ids() == expected and len(expected) == 4
    assert ImgEditBasic(copy.root, edit_types=chosen, first_n=3).sample_ids() == expected[:3]
    assert ImgEditBasic(copy.root, first_n=0).sample_ids() == []
    with pytest.raises(ConfigError, match=r"unknown edit_types \['alter'\] \('alter' items are read as 'adjust'\)"):
        ImgEditBasic(copy.root, edit_types=["alter"])


def test_an_older_file_with_alter_items(tmp_path):
    old = build_imgedit_copy(tmp_path, n_per_type=2, legacy_alter=True, seed=5)
    altered = sorted((k for k, v in old.items.items() if v["edit_type"] == "alter"), key=int)
    assert len(altered) == 2
    dataset = ImgEditBasic(old.root, edit_types=["adjust"])
    assert dataset.sample_ids() == altered
    sample = dataset.load(altered[0])
    assert (sample.category, sample.fields["edit_type"]) == ("adjust", "adjust")
    assert sample.fields["edit_type_source"] == "alter"
    assert dataset.describe()["alter_items"] == 2
    with pytest.raises(DataError) as err:
        ImgEditBasic(old.root, alter="error")
    assert f"labels 2 items (e.g. {altered[0]}) 'alter'" in one_line(err)
    assert str(old.root / "basic_edit.json") in str(err.value)


def test_images_root_elsewhere(copy, tmp_path):
    (tmp_path / "basic_edit.json").write_text(json.dumps(copy.items))
    with pytest.raises(DataError) as err:
        ImgEditBasic(tmp_path)
    assert "Benchmark/singleturn (images_root: null)" in one_line(err)
    dataset = ImgEditBasic(tmp_path, images_root=copy.images_root)
    key = dataset.sample_ids()[0]
    image = dataset.load_uint8(key).image.numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(image, copy.pixels[copy.items[key]["id"]])


@pytest.mark.parametrize("content, match", [
    (None, "basic_edit.json not found"),
    ("{", "is not valid JSON"),
    ({"12": {"id": "a.jpg", "edit_type": "add"}}, r"item 12 in .*basic_edit.json: \['prompt'\] missing or not text"),
    ({"x1": {"id": "a.jpg", "prompt": "p", "edit_type": "add"}}, r"key 'x1' in .*basic_edit.json is not a number"),
    ({"3": {"id": "a.jpg", "prompt": "p", "edit_type": "recolor"}}, r"item 3 in .*: edit_type 'recolor' is not one of"),
])
def test_malformed_files_name_the_item_and_file(tmp_path, content, match):
    (tmp_path / "Benchmark" / "singleturn").mkdir(parents=True)
    if content is not None:
        (tmp_path / "basic_edit.json").write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DataError, match=match) as err:
        ImgEditBasic(tmp_path)
    one_line(err)


def test_a_missing_image_names_the_item_and_file(copy, tmp_path):
    (tmp_path / "Benchmark" / "singleturn").mkdir(parents=True)
    (tmp_path / "basic_edit.json").write_text(json.dumps(copy.items))
    key = sorted(copy.items, key=int)[0]
    with pytest.raises(DataError) as err:
        ImgEditBasic(tmp_path).load(key)
    where = tmp_path / "Benchmark" / "singleturn" / copy.items[key]["id"]
    assert f"item {key}: image {where} is missing" in one_line(err)


def test_types_and_counts_agree():
    assert set(TYPE_COUNTS) == set(EDIT_TYPES) == set(IMGEDIT_TYPES) and sum(TYPE_COUNTS.values()) == 737


def test_config_registers_the_dataset_and_validate_checks_its_root(copy, tmp_path):
    cfg = compose("config", ["~experiment", "dataset=imgedit_basic", f"dataset.root={copy.root}"])
    validate_run_config(cfg)
    dataset = instantiate(cfg.dataset)
    assert isinstance(dataset, ImgEditBasic) and dataset.saved_size == "output"
    assert dataset.describe()["num_samples"] == len(copy.items)
    cfg.dataset.root = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="basic_edit.json"):
        validate_run_config(cfg)
