"""The options every benchmark dataset shares (saved_size, first_n): one line naming the
dataset, the key and the choices."""

from __future__ import annotations

import pytest

from attnedit.data.gedit_bench import GEditBench
from attnedit.data.imgedit import ImgEditBasic
from attnedit.data.piebench import PIEBench
from attnedit.errors import ConfigError
from judge_fixtures import build_gedit_copy, build_imgedit_copy
from piebench_fixture import write_piebench_fixture


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("options")
    write_piebench_fixture(base / "pie")
    imgedit = build_imgedit_copy(base / "imgedit", n_per_type=1)
    return {"PIE-Bench": (PIEBench, {"root": base / "pie"}),
            "GEdit-Bench": (GEditBench, {"root": build_gedit_copy(base / "gedit", n_per_type=1,
                                                                   task_types=("color_alter",)).root}),
            "ImgEdit-Basic": (ImgEditBasic, {"root": imgedit.root, "images_root": imgedit.images_root})}


@pytest.mark.parametrize("name", ["PIE-Bench", "GEdit-Bench", "ImgEdit-Basic"])
def test_shared_options_refuse_bad_values_in_one_line(roots, name):
    cls, kwargs = roots[name]
    with pytest.raises(ConfigError, match=rf"^{name}: saved_size='native' is not one of \('output', 'source'\)"):
        cls(**kwargs, saved_size="native")
    with pytest.raises(ConfigError, match=rf"^{name}: first_n=-1 must be >= 0 or null"):
        cls(**kwargs, first_n=-1)
    assert len(cls(**kwargs, first_n=1).sample_ids()) == 1 and cls(**kwargs, first_n=None).first_n is None
