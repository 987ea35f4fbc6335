"""What every backend describes (backends/base.py): one name per fact, settings required."""

from __future__ import annotations

import pytest

from attnedit.backends.base import DESCRIBE_KEYS, check_description


def test_describe_schema_rejects_a_second_name_for_a_fact():
    good = {key: None for key in DESCRIBE_KEYS} | {"settings": {}}
    assert check_description(good) is good
    with pytest.raises(TypeError, match="weight_sha256_16"):  # a second spelling of the weight hash
        check_description(good | {"weight_sha256_16": "abc"})
    with pytest.raises(TypeError, match="settings"):
        check_description({k: v for k, v in good.items() if k != "settings"})
