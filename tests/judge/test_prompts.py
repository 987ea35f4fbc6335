"""Prompt sets (judge/prompts.py): the official files read without running them, the
tie task's composition, the file hash and the official flag, one-line errors, and
attnedit's own prompts. The "official" files here are fakes with invented text."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from attnedit.errors import AttneditError, ConfigError, DataError, explain
from attnedit.judge import prompts
from attnedit.judge.prompts import load_gedit_prompts, load_imgedit_prompts

# Invented stand-ins for the constants the tie task joins.
PARTS = {
    "_context_no_delimit": "CTX line one\nanswer as JSON",
    "_prompts_0shot_two_image_edit_rule": "RULE two images: before, after",
    "_prompts_0shot_tie_rule_SC": "SC rule for <instruction>, two numbers",
    "_prompts_0shot_rule_PQ": "PQ rule: naturalness and artifacts",
}

SOURCE = '''
"""A fake vie_prompts.py."""
import sys

_context = """an unused context"""
_context_no_delimit = {ctx!r}
_prompts_0shot_two_image_edit_rule: str = {two!r}
_prompts_0shot_tie_rule_SC = ("SC rule for <instruction>, "
                              "two numbers")
_prompts_0shot_rule_PQ = {pq!r}


def _explode():
    raise RuntimeError("vie_prompts.py was executed")


_explode()
sys.exit(3)
'''


def write_gedit(tmp_path: Path, **drop) -> Path:
    text = SOURCE.format(ctx=PARTS["_context_no_delimit"], two=PARTS["_prompts_0shot_two_image_edit_rule"],
                         pq=PARTS["_prompts_0shot_rule_PQ"])
    for name in drop:
        text = "\n".join(line for line in text.splitlines() if not line.startswith(name))
    path = tmp_path / "vie_prompts.py"
    path.write_text(text)
    return path


RUBRICS = {kind: f"Rate the {kind} edit of <edit_prompt>.\nGoal: n\nLook: n\nKeep: n" for kind in prompts.IMGEDIT_TYPES}


def write_imgedit(tmp_path: Path, rubrics: dict) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(rubrics, indent=2))
    return path


def one_line_naming(err: AttneditError, *words: str) -> None:
    line = explain(err)
    assert line is not None and "\n" not in line
    for word in words:
        assert word in line


def test_gedit_composes_the_tie_prompts_without_running_the_file(tmp_path):
    path = write_gedit(tmp_path)
    ps = load_gedit_prompts(path)
    p = PARTS
    assert ps.texts == {
        "sc": "\n".join([p["_context_no_delimit"], p["_prompts_0shot_two_image_edit_rule"],
                         p["_prompts_0shot_tie_rule_SC"]]),
        "pq": "\n".join([p["_context_no_delimit"], p["_prompts_0shot_rule_PQ"]]),
    }
    assert ps.benchmark == "gedit" and ps.placeholder == "<instruction>"
    assert ps.source == str(path.resolve())
    assert ps.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ps.official is False  # a fake differs from the official bytes
    # SC gets the instruction by str.replace; PQ is sent as composed.
    assert ps.text_for("sc", "make it {red}") == ps.texts["sc"].replace("<instruction>", "make it {red}")
    assert "make it" not in ps.text_for("pq", "make it red") and ps.text_for("pq", "x") == ps.texts["pq"]
    assert "modified copy" in ps.describe()["label"]


def test_official_flag_follows_the_file_bytes(tmp_path, monkeypatch):
    gedit, imgedit = write_gedit(tmp_path), write_imgedit(tmp_path, RUBRICS)
    monkeypatch.setitem(prompts.OFFICIAL_SHA256, "gedit", hashlib.sha256(gedit.read_bytes()).hexdigest())
    monkeypatch.setitem(prompts.OFFICIAL_SHA256, "imgedit", hashlib.sha256(imgedit.read_bytes()).hexdigest())
    g, i = load_gedit_prompts(gedit), load_imgedit_prompts(imgedit)
    assert g.official is True and i.official is True
    assert "official prompts" in g.describe()["label"] and g.describe()["official"] is True
    gedit.write_bytes(gedit.read_bytes() + b"\n")  # one byte more: not the official file
    assert load_gedit_prompts(gedit).official is False


def test_hash_follows_the_words_not_the_formatting(tmp_path):
    a = load_imgedit_prompts(write_imgedit(tmp_path, RUBRICS))
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(RUBRICS))
    b = load_imgedit_prompts(compact)
    assert a.sha256 != b.sha256 and a.hash == b.hash
    changed = dict(RUBRICS, add=RUBRICS["add"] + " Be strict.")
    assert load_imgedit_prompts(write_imgedit(tmp_path, changed)).hash != a.hash


@pytest.mark.parametrize("missing", ["_prompts_0shot_rule_PQ", "_context_no_delimit"])
def test_gedit_missing_constant_is_one_line(tmp_path, missing):
    path = write_gedit(tmp_path, **{missing: True})
    with pytest.raises(DataError) as err:
        load_gedit_prompts(path)
    one_line_naming(err.value, str(path.resolve()), missing, "vie_prompts.py")


def test_gedit_constant_that_is_not_a_string_counts_as_missing(tmp_path):
    path = write_gedit(tmp_path)
    # Rebound last to an f-string: running the file would give a computed value.
    path.write_text(path.read_text() + '_prompts_0shot_rule_PQ = f"{_context}"\n')
    with pytest.raises(DataError, match="_prompts_0shot_rule_PQ"):
        load_gedit_prompts(path)


def test_imgedit_reads_each_rubric(tmp_path):
    rubrics = dict(RUBRICS, extra_kind="Keep <edit_prompt> too")
    path = write_imgedit(tmp_path, rubrics)
    ps = load_imgedit_prompts(path)
    assert ps.texts == rubrics and ps.placeholder == "<edit_prompt>"
    assert ps.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ps.text_for("remove", "drop the cat") == RUBRICS["remove"].replace("<edit_prompt>", "drop the cat")


@pytest.mark.parametrize("broken, words", [
    ({k: v for k, v in RUBRICS.items() if k != "compose"}, ["compose"]),
    (dict(RUBRICS, style="no placeholder here"), ["style", "<edit_prompt>"]),
    (["not", "an", "object"], ["JSON object"]),
])
def test_imgedit_bad_file_is_one_line(tmp_path, broken, words):
    path = write_imgedit(tmp_path, broken)
    with pytest.raises(DataError) as err:
        load_imgedit_prompts(path)
    one_line_naming(err.value, str(path.resolve()), "prompts.json", *words)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_gedit_prompts(tmp_path / "nope.py")
    one_line_naming(err.value, "nope.py", "vie_prompts.py", "own prompts")


def test_own_prompts_have_the_official_structure():
    g, i = load_gedit_prompts(None), load_imgedit_prompts(None)
    assert g.official is None and i.official is None and g.source == "attnedit-own"
    for ps in (g, i):
        assert ps.describe()["label"] == "attnedit's own prompts, not the benchmark's"
        assert ps.sha256 == hashlib.sha256(json.dumps(ps.texts, sort_keys=True, ensure_ascii=False)
                                           .encode()).hexdigest()
    assert set(g.texts) == {"sc", "pq"} and "<instruction>" in g.texts["sc"]
    assert all('"score": [a, b]' in text for text in g.texts.values())
    assert set(i.texts) == set(prompts.IMGEDIT_TYPES)
    for kind, text in i.texts.items():
        assert "<edit_prompt>" in text, kind
        # The reply format each rubric asks for: three "<Criterion>: n" lines.
        assert len([ln for ln in text.splitlines() if ln.endswith(": n")]) == 3, kind
