"""Run signatures: the same config names the same run directory wherever the code and the
checkout live; every shipped experiment's signature is pinned, so a later move of a module
cannot rename (and so stop resuming) any run directory."""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import shutil

import pytest

from attnedit.config import REPO_ROOT, compose, studies
from attnedit.errors import ConfigError
from attnedit.store.signature import ADDED_KEYS, NON_RESULT_KEYS, config_signature, resolved_container

#: Overrides a shipped experiment needs to compose (keys it leaves `???`), and the study
#: groups whose every option is a run of it.
NEEDS = {"piebench_dcag": ["dataset.root=/data/PIE-Bench"], "piebench_dcag_grid": ["dataset.root=/data/PIE-Bench"],
         "piebench_dcag_grid_judged": ["dataset.root=/data/PIE-Bench"], "gedit_dcag": ["dataset.root=/data/GEdit-Bench"],
         "imgedit_dcag": ["dataset.root=/data/ImgEdit"]}
SWEEPS = {"celebahq_compare": ("compare", ["sad", "pullback", "pullback_move", "hspace_pca", "attn_input_pca", "random"]),
          "piebench_dcag": ("dcag_row", ["none", "none_official", "grag", "dcag"]),
          "lsun_sad": ("model", ["ddpm_church", "ddpm_bedroom", "ddpm_cat"])}
#: Pinned signatures (12 hex digits) of every shipped experiment config; the test below
#: also recomputes each one independently from the composed config.
PINNED = {
    "celebahq_compare/compare=attn_input_pca": "84b9608d7ee2",  # the label-shuffled null (label_null=5) adds columns
    "celebahq_compare/compare=hspace_pca": "b8411c3f6e70",  # label_null=5
    "celebahq_compare/compare=pullback": "9736903b1dc6",  # method.reference=own_sampler; label_null=5
    "celebahq_compare/compare=pullback_move": "6dfa5552c261",  # label_null=5
    "celebahq_compare/compare=random": "6c2220d03083",  # label_null=5
    "celebahq_compare/compare=sad": "828fa8ef09df",  # label_null=5
    "celebahq_sad": "85320575d872",
    "lsun_sad/model=ddpm_bedroom": "7ba0c206745d",
    "lsun_sad/model=ddpm_cat": "2117830bb821",
    "lsun_sad/model=ddpm_church": "60be72ba179b",
    "piebench_dcag/dcag_row=dcag": "c3faa05de4b2",  # PIE-Bench dataset.saved_size=output: other files, other scores
    "piebench_dcag/dcag_row=grag": "f68749595026",
    "piebench_dcag/dcag_row=none": "00dad9786d1b",
    "piebench_dcag/dcag_row=none_official": "fe5ee471e0d2",
    "piebench_dcag_grid": "c74b1ee169f5",
    "piebench_dcag_grid_judged": "983edcf412ce",
    "gedit_dcag": "a711338c1fe1",
    "imgedit_dcag": "50b8f91a553a",
    "quickstart": "596c62242282",
    "shapes_factors": "3cc16c022293",
}


def shipped_runs() -> dict[str, list[str]]:
    """run label -> overrides, for every experiment config of every study folder."""
    runs = {}
    for folder in studies().values():
        for path in sorted((folder / "experiment").glob("*.yaml")):
            base = [f"experiment={path.stem}", *NEEDS.get(path.stem, [])]
            group, options = SWEEPS.get(path.stem, (None, [None]))
            for option in options:
                label = path.stem if option is None else f"{path.stem}/{group}={option}"
                runs[label] = base + ([f"{group}={option}"] if option else [])
    return runs


def independent_signature(cfg) -> str:
    """The documented rule, computed here on its own: the resolved config without the
    non-result keys and the later keys at their earlier value, each ``_target_`` as its last dotted name, a shipped asset's path as
    ``${asset:<name>}`` and paths inside the checkout relative to it; sha256 of the
    key-sorted JSON, 12 hex digits."""
    tree = copy.deepcopy(resolved_container(cfg))

    def flat(node, prefix=()):  # every (key path, leaf) of the tree
        for key, value in node.items():
            yield (*prefix, key), value
            if isinstance(value, dict):
                yield from flat(value, (*prefix, key))

    for pattern in NON_RESULT_KEYS:  # "*" matches one level
        for path, _ in list(flat(tree)):
            if fnmatch.fnmatchcase(".".join(path), pattern) and len(path) == len(pattern.split(".")):
                parent = tree
                for part in path[:-1]:
                    parent = parent.get(part, {}) if isinstance(parent, dict) else {}
                if isinstance(parent, dict):
                    parent.pop(path[-1], None)

    for pattern, before in ADDED_KEYS:
        for path, value in list(flat(tree)):
            if fnmatch.fnmatchcase(".".join(path), pattern) and len(path) == len(pattern.split(".")) \
                    and value == before:
                parent = tree
                for part in path[:-1]:
                    parent = parent[part]
                parent.pop(path[-1], None)

    def clean(value):
        if isinstance(value, dict):
            return {k: v.split(".")[-1] if k == "_target_" else clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and value.startswith("/") and "/attnedit/assets/" in value:
            return "${asset:" + value.rsplit("/attnedit/assets/", 1)[1] + "}"
        if isinstance(value, str) and value.startswith(str(REPO_ROOT) + "/"):
            return "${repo:}/" + value[len(str(REPO_ROOT)) + 1:]
        return value

    return hashlib.sha256(json.dumps(clean(tree), sort_keys=True, default=str).encode()).hexdigest()[:12]


RUNS = shipped_runs()


def test_every_shipped_experiment_is_pinned():
    assert sorted(RUNS) == sorted(PINNED)


@pytest.mark.parametrize("label", sorted(RUNS))
def test_shipped_experiment_signatures_are_pinned(label, monkeypatch):
    monkeypatch.delenv("ATTNEDIT_ROOT", raising=False)
    cfg = compose("config", RUNS[label])
    assert config_signature(cfg) == independent_signature(cfg) == PINNED[label]


def test_a_judges_run_time_keys_leave_the_signature_what_it_is_does_not(monkeypatch):
    """Where replies are cached, how fast a server is asked, which GPU, where the prompt file
    lies (its text enters every judged row's stack hash): same run; another judge model or
    decoding: another run."""
    base = ["experiment=gedit_dcag", "dataset.root=/data/GEdit-Bench"]
    signature = config_signature(compose("config", base))
    same = [["paths.cache_dir=/elsewhere"], ["judge.backend.batch_size=2", "judge.backend.device=cuda:1"],
            ["judge=openai_http", "judge.backend.concurrency=64", "judge.backend.api_key_env=KEY"],
            ["judge.prompts.gedit=/x/vie_prompts.py"]]
    http = config_signature(compose("config", base + ["judge=openai_http"]))
    assert config_signature(compose("config", base + same[0])) == signature
    assert config_signature(compose("config", base + same[1])) == signature
    assert config_signature(compose("config", base + same[2])) == http != signature
    assert config_signature(compose("config", base + same[3])) == signature
    for other in (["judge.backend.model=Qwen/Qwen2.5-VL-3B-Instruct"], ["judge.backend.max_new_tokens=256"]):
        assert config_signature(compose("config", base + other)) != signature, other


def test_moving_a_module_or_the_checkout_keeps_the_signature():
    cfg = resolved_container(compose("config", ["experiment=quickstart"]))
    moved = copy.deepcopy(cfg)
    moved["method"]["_target_"] = "elsewhere.deeper.SAD"  # the class moved to another module
    assert config_signature(moved) == config_signature(cfg)
    other = copy.deepcopy(cfg)
    other["method"]["_target_"] = "attnedit.methods.sad.NotSAD"  # another class: another run
    assert config_signature(other) != config_signature(cfg)
    shipped = str(REPO_ROOT / "src" / "attnedit" / "assets")
    assert cfg["model"]["path"].startswith(shipped)
    clone = copy.deepcopy(cfg)
    clone["model"]["path"] = cfg["model"]["path"].replace(str(REPO_ROOT), "/elsewhere/attnedit")
    assert config_signature(clone) == config_signature(cfg)  # the shipped model of another clone
    other = copy.deepcopy(cfg)
    other["model"]["path"] = "/data/models/shapes_ddpm"
    assert config_signature(other) != config_signature(cfg)  # a model of one's own is what its path says


def test_a_run_of_an_earlier_signature_is_named_not_redone(tiny_ddpm_dir, tmp_path):
    """A run directory whose manifest holds this config under another name: the new run
    stops before any work, naming the folder and the mv that resumes it."""
    from harness import run_overrides

    from attnedit.run.runner import Runner

    cfg = compose("config", run_overrides(tmp_path, tiny_ddpm_dir))
    run_dir = Runner(cfg).run_dir
    earlier = run_dir.parent / "0123456789ab"
    earlier.mkdir(parents=True)
    config = resolved_container(cfg)
    config["method"]["_target_"] = "attnedit.sad.SAD"  # where the class lived then
    (earlier / "manifest.json").write_text(json.dumps({"config": config}))
    shutil.rmtree(run_dir)
    with pytest.raises(ConfigError, match=f"{earlier} holds this config's rows.*mv {earlier} {run_dir}"):
        Runner(cfg)
    assert not run_dir.exists()


# -- which keys a signature reads ---------------------------------------------------------
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


def test_a_key_added_later_changes_the_signature_only_away_from_its_earlier_behaviour(monkeypatch):
    from attnedit.store import signature

    base = config_signature(BASE)
    monkeypatch.setattr(signature, "ADDED_KEYS", (("model.later", None), ("*.knob", "old")))
    assert config_signature(changed(model__later=None)) == base  # a run made before the key resumes
    assert config_signature(changed(model__later=True)) != base
    assert config_signature(changed(method__knob="old")) == base
    assert config_signature(changed(method__knob="new")) != base
    assert config_signature(changed(model__knob="old")) == base


def test_signature_changes_with_result_keys():
    base = config_signature(BASE)
    assert config_signature(changed(method__alphas=[0.4])) != base
    assert config_signature(changed(model__path="other")) != base
    assert config_signature(changed(metric_weights="random")) != base  # other metric backbones, other numbers
    assert config_signature(changed(model__allow_tf32=True)) != base  # other GPU numerics
