"""The config-only checks of attnedit-run (attnedit.run.validate): each bad value is one
ConfigError naming the key, the value and the fix; every shipped experiment and method
config passes them. The messages expected here are the ones a person should read (the
README's promise), written out by hand.

Hydra composes each group choice once; a ``key=value`` is then set as Hydra would read it
(YAML), ~0.2 s less per case (tests/cli/test_console.py runs a few through attnedit-run)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from attnedit.config import compose, studies
from attnedit.errors import ConfigError
from attnedit.run import validate
from attnedit.run.validate import cuda_driver_present, validate_run_config

BAD = {
    "method.alphas=0.3": "method.alphas: expected a list of numbers, got 0.3; write method.alphas=[0.3]",
    "method.alphas=[]": "method.alphas is empty; give at least one value",
    "method.alphas=[0.2,x]": "method.alphas: expected a list of numbers, got [0.2,x] ('x' is not a finite number)",
    "method.alphas=[0.2,0.4,0.2]": "method.alphas=[0.2,0.4,0.2] lists 0.2 more than once",
    "method.directions=0": "method.directions=0 must be >= 1",
    "method.directions=[0,-1]": "method.directions: expected a number k (the top k) or a list of indices >= 0",
    "method.window=[0.8,0.5]": "method.window: expected [lo,hi] with 0 <= lo < hi <= 1 (fractions of T), got [0.8,0.5]",
    "batch_size=0": "batch_size=0 must be >= 1",
    "batch_size=2.5": "batch_size: expected a whole number, got 2.5",
    "shard.index=2": "shard.index=2 must be in [0, shard.count=1)",
    "dataset.num_samples=two": "dataset.num_samples: expected a whole number, got two",
    "model.num_inference_steps=0": "model.num_inference_steps=0 must be >= 1",
    "tables.reference=/nope.csv": "tables.reference=/nope.csv does not exist",
}


@pytest.fixture(scope="module")
def composed():
    """choice -> the default config composed with it (``""``: the default)."""
    return {choice: compose("config", [choice] if choice else [])
            for choice in ("", "dataset=image_folder", "dataset=piebench")}


def _with(cfg, *overrides: str):
    cfg = copy.deepcopy(cfg)
    for override in overrides:
        key, _, value = override.partition("=")
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
    return cfg


@pytest.mark.parametrize("override", list(BAD))
def test_a_bad_value_is_one_line_naming_the_key_and_the_fix(override, composed):
    with pytest.raises(ConfigError) as err:
        validate_run_config(_with(composed[""], override))
    assert BAD[override] in str(err.value) and "\n" not in str(err.value)


def test_a_missing_dataset_folder_names_what_it_should_hold(tmp_path, composed):
    a_file = tmp_path / "images.zip"
    a_file.write_bytes(b"")
    for root, what in ((tmp_path / "nope", "does not exist"), (a_file, "is not a directory")):
        with pytest.raises(ConfigError, match=f"^dataset.root={root} {what}; point it at a folder of images$"):
            validate_run_config(_with(composed["dataset=image_folder"], f"dataset.root={root}"))
        with pytest.raises(ConfigError, match="the folder holding mapping_file.json and annotation_images/"):
            validate_run_config(_with(composed["dataset=piebench"], f"dataset.root={root}"))
    validate_run_config(_with(composed["dataset=image_folder"], f"dataset.root={tmp_path}"))


def test_cuda_without_a_driver_names_the_key_that_was_set(monkeypatch, composed):
    monkeypatch.setattr(validate, "cuda_driver_present", lambda: False)
    with pytest.raises(ConfigError, match=r"^device='cuda' was asked for but CUDA is not available here .*use "
                                          r"device=cpu or device=auto$"):
        validate_run_config(_with(composed[""], "device=cuda"))
    with pytest.raises(ConfigError, match=r"^model.device='cuda:1' was asked .*use model.device=cpu"):
        validate_run_config(_with(composed[""], "model.device=cuda:1"))
    validate_run_config(_with(composed[""], "device=cpu"))
    validate_run_config(_with(composed[""], "device=auto"))


def test_the_driver_check_agrees_with_torch(monkeypatch):
    if torch.cuda.is_available():  # torch found a device: the driver is there
        assert cuda_driver_present()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not cuda_driver_present()


def _every_shipped_config(default):
    """Each study's experiments, composed; the default config with each method config as ``method``."""
    for study in studies().values():
        for path in sorted((study / "experiment").glob("*.yaml")):
            yield path.stem, compose("config", [f"experiment={path.stem}"])
    for path in sorted((Path(validate.__file__).parents[3] / "conf" / "method").glob("*.yaml")):
        cfg = copy.deepcopy(default)
        OmegaConf.update(cfg, "method", OmegaConf.load(path), merge=False)
        yield path.stem, cfg


def test_every_shipped_experiment_and_method_passes(monkeypatch, composed):
    monkeypatch.setattr(validate, "cuda_driver_present", lambda: True)  # the GPU studies ask for CUDA
    checked = 0
    for name, cfg in _every_shipped_config(composed[""]):
        checked += 1
        try:
            validate_run_config(cfg)
        except MissingMandatoryValue as err:  # e.g. dataset.root=??? of PIE-Bench: the user's to give
            assert err.full_key == "dataset.root", (name, err)
    assert checked >= 15


@pytest.mark.parametrize("overrides, words", [
    (["experiment=imgedit_dcag", "judge=imgedit_judge"], "judge.backend.model is not set"),
    (["experiment=gedit_dcag", "judge.backend.temperature=0", "judge.passes=3"], "judge.passes=3 with"),
    (["experiment=gedit_dcag", "judge.prompts.gedit=/nope/vie_prompts.py"], "judge.prompts.gedit=/nope/vie_prompts.py"),
    (["experiment=quickstart", "metrics=gedit_viescore"], "need a VLM judge: add judge=qwen25vl_7b"),
])
def test_judge_configs_are_checked_before_anything_loads(tmp_path, overrides, words):
    """ImgEdit-Judge's folder must be given (a judge config never falls back to its base model)."""
    cfg = compose("config", [*overrides, f"dataset.root={tmp_path}"] if "quickstart" not in overrides[0]
                  else overrides)
    with pytest.raises(ConfigError, match=words.replace(".", r"\.").replace("(", r"\(")):
        validate_run_config(cfg)
