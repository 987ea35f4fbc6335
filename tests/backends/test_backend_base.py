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


def test_a_control_is_what_a_method_yields_and_anything_else_names_the_method():
    from attnedit.backends.base import Control, check_control
    from attnedit.errors import ConfigError
    from attnedit.methods.base import NoEdit

    method = NoEdit()
    assert type(check_control(None, method)) is Control
    control = Control()
    assert check_control(control, method) is control
    assert (control.first_edit_timestep, control.latent_hook, control.eta_at, control.row_extras) == (None,) * 4
    with pytest.raises(ConfigError, match=r"method 'none' \(attnedit\.methods\.base\.NoEdit\).*yielded dict"):
        check_control({"first_edit_timestep": 3}, method)
