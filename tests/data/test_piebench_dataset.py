"""The PIE-Bench dataset (data/piebench.py): official layout, exact mask decoding, selection
and clear errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from attnedit.data.piebench import (
    CATEGORY_NAMES,
    NonFinitePixelsError,
    PIEBench,
    RLEClippedWarning,
    decode_rle_mask,
    read_rgb_uint8,
)
from attnedit.errors import DataError
from piebench_fixture import (
    ENTRIES,
    encode_rle,
    official_mask_decode,
    one_thread,  # noqa: F401 (an autouse fixture: one torch thread)
    write_piebench_fixture,
)


@pytest.fixture()
def root(tmp_path):
    write_piebench_fixture(tmp_path / "pie", size=32)
    return tmp_path / "pie"


def random_rle(rng: np.random.Generator, total: int) -> list[int]:
    """Unsorted, overlapping runs; some reach past the end or start beyond it."""
    runs = []
    for _ in range(rng.integers(0, 12)):
        start = int(rng.integers(0, total + 20))
        runs += [start, int(rng.integers(0, total // 3))]
    return runs


def test_decoder_equals_official_loop_on_random_rles():
    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = int(rng.integers(2, 40)), int(rng.integers(2, 40))
        rle = random_rle(rng, h * w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RLEClippedWarning)
            ours = decode_rle_mask(rle, h, w)
        expected = official_mask_decode(rle, (h, w))
        assert ours.shape == (h, w) and ours.dtype == torch.float32
        np.testing.assert_array_equal(ours.numpy(), expected, err_msg=f"trial {trial}: {rle}")


def test_decoder_at_official_size_with_a_real_mask():
    yy, xx = np.mgrid[:512, :512]
    mask = ((yy - 260) / 90.0) ** 2 + ((xx - 200) / 140.0) ** 2 <= 1
    rle = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle_mask(rle).numpy(), official_mask_decode(rle))


def test_runs_past_the_end_are_clipped_with_a_warning_naming_the_entry():
    rle = [10, 5, 95, 50, 300, 4]  # second run overflows a 10x10 image, third starts beyond it
    with pytest.warns(RLEClippedWarning, match="entry 123456789012"):
        ours = decode_rle_mask(rle, 10, 10, entry_id="123456789012")
    np.testing.assert_array_equal(ours.numpy(), official_mask_decode(rle, (10, 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decode_rle_mask([0, 100], 10, 10)  # exactly filling the image is no overflow


@pytest.mark.parametrize(
    "rle, words",
    [([1, 2, 3], "odd length"), ([4, -1], "negative"), ([1.5, 2], "integers"), ("0 4", "must be a list")],
)
def test_malformed_rle_names_the_entry(rle, words):
    with pytest.raises(DataError, match=f"entry 000000000042.*{words}"):
        decode_rle_mask(rle, 8, 8, entry_id="000000000042")


def test_load_fields(root):
    data = PIEBench(root)
    assert data.sample_ids() == sorted(ENTRIES)
    mapping = json.loads((root / "mapping_file.json").read_text())
    sample = data.load("111000000000")
    assert sample.category == "1" and sample.fields["category_name"] == CATEGORY_NAMES["1"] == "change object"
    assert sample.image.shape == (3, 32, 32) and sample.image.dtype == torch.float32
    assert 0 <= float(sample.image.min()) and float(sample.image.max()) <= 1
    src = np.asarray(Image.open(root / "annotation_images" / mapping["111000000000"]["image_path"]).convert("RGB"))
    np.testing.assert_array_equal((sample.image * 255).round().byte().permute(1, 2, 0).numpy(), src)
    np.testing.assert_array_equal(
        sample.fields["mask"].numpy(), official_mask_decode(mapping["111000000000"]["mask"], (32, 32))
    )
    assert sample.fields["original_prompt"] == "a cat sitting on a mat number 00"
    assert sample.fields["editing_prompt"] == "a dog sitting on a mat number 00"
    assert sample.fields["editing_prompt_raw"] == "a [dog] sitting on a mat number 00"
    assert sample.fields["editing_instruction"] == "Change the cat to a dog"
    assert sample.fields["blended_word"] == "cat dog"
    assert sample.fields["image_path"] == ENTRIES["111000000000"][1]
    assert len(CATEGORY_NAMES) == 10


def test_selection(root):
    assert PIEBench(root, categories=[1, "0"]).sample_ids() == [
        "000000000000",
        "000000000001",
        "111000000000",
        "111000000001",
    ]
    assert PIEBench(root, categories=[1], first_n=1).sample_ids() == ["111000000000"]
    assert PIEBench(root, ids=["911000000000", "000000000001"]).sample_ids() == ["000000000001", "911000000000"]
    assert PIEBench(root, first_n=0).sample_ids() == []
    with pytest.raises(DataError, match="unknown categories"):
        PIEBench(root, categories=[10])
    with pytest.raises(DataError, match="999"):
        PIEBench(root, ids=["999"])


def _rewrite(root, key, **changes):
    mapping = json.loads((root / "mapping_file.json").read_text())
    for field, value in changes.items():
        if value is None:
            del mapping[key][field]
        else:
            mapping[key][field] = value
    (root / "mapping_file.json").write_text(json.dumps(mapping))


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"mask": None}, "missing keys \\['mask'\\]"),
        ({"editing_prompt": None}, "missing keys"),
        ({"mask": [0, 3, 5]}, "odd length"),
        ({"mask": [0, -3]}, "negative"),
        ({"editing_type_id": "12"}, "not one of 0-9"),
        ({"image_path": "nowhere/x.jpg"}, "missing"),
    ],
)
def test_malformed_entries_name_the_id(root, changes, words):
    _rewrite(root, "211000000000", **changes)
    with pytest.raises(DataError, match=f"211000000000.*{words}"):
        PIEBench(root).load("211000000000")


def test_unreadable_image_names_the_id(root):
    (root / "annotation_images" / ENTRIES["811000000000"][1]).write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="811000000000.*cannot read"):
        PIEBench(root).load("811000000000")


def test_mapping_file_errors(tmp_path, root):
    with pytest.raises(DataError, match="mapping_file.json not found"):
        PIEBench(tmp_path / "empty")
    (root / "mapping_file.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        PIEBench(root)
    (root / "mapping_file.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="JSON object"):
        PIEBench(root)


def test_float_images_with_nan_or_inf_are_an_error_naming_the_file(tmp_path):
    """PIL would turn NaN into 0 and inf into 255 (a broken image scored as a real one)."""
    values = np.linspace(0, 255, 48, dtype=np.float32).reshape(6, 8)
    Image.fromarray(values).save(tmp_path / "fine.tiff")
    expected = np.asarray(Image.fromarray(values).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(read_rgb_uint8(tmp_path / "fine.tiff", "x"), expected)
    values[0, :3], values[5, 7] = np.nan, -np.inf
    Image.fromarray(values).save(tmp_path / "broken.tiff")
    with pytest.raises(NonFinitePixelsError, match=r"entry 7: image .*broken.tiff holds 3 NaN and 1 infinite"):
        read_rgb_uint8(tmp_path / "broken.tiff", "7")
