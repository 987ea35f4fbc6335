"""Reply parsers (judge/parse.py): where each score is found, and every reply without a
valid score is a ParseFailure with a one-line reason (never a filled-in value)."""

from __future__ import annotations

import pytest

from attnedit.judge.parse import DELIMITER, ParseFailure, parse_imgedit, parse_viescore

D = DELIMITER

VIESCORE_OK = [
    (f'Sure.\n{D}\n{{\n"score" : [8, 3],\n"reasoning" : "fine"\n}}\n{D}', [8, 3]),  # delimited
    ('{"score": [6, 0], "reasoning": "the cat was not removed"}', [6, 0]),  # bare JSON
    ('Here is my rating:\n```json\n{"score": [7, 9],\n "reasoning": "good\nwork"}\n```\nThanks!', [7, 9]),
    ('{"score": [5, 4], "reasoning": "kept the {sign} text intact"}', [5, 4]),  # nested braces
    ('{"score": 9, "reasoning": "one value"}', [9]),  # a number, not a list
    ('{"score": [2.5, 10]}', [2.5, 10]),
    ("{'score': [4, 6], 'reasoning': 'single quotes'}", [4, 6]),  # not JSON: the one score entry
    ('Result {"score": [3, 8], "reasoning": "x"} and {more} prose', [3, 8]),  # span not JSON
    (f'{D} {{"score": [1, 2]}} {D} {D}', [1, 2]),  # not two delimiters: the braces
    ("[6, 0]", [6, 0]),
    ("The scores are [1,2].", [1, 2]),
    ("7", [7]),
    (" 10\n", [10]),
]


@pytest.mark.parametrize("reply, expected", VIESCORE_OK)
def test_viescore_scores(reply, expected):
    got = parse_viescore(reply)
    assert got == [float(v) for v in expected]
    assert all(type(v) is float for v in got)


VIESCORE_BAD = [
    ("", "empty"),  # what the official OpenAI wrapper returns for a refusal
    ("   \n", "empty"),
    (None, "empty"),
    ('{"score": [11, 3], "reasoning": "x"}', "outside"),
    ('{"score": [-1, 3]}', "outside"),
    ("-2", "outside"),
    ("11", "outside"),
    ("[6, 12]", "outside"),
    ('{"score": [], "reasoning": "x"}', "empty"),
    ('{"score": ["7", "3"]}', "not a number"),
    ('{"score": [true, 3]}', "not a number"),
    ('{"reasoning": "no score key"}', "no 'score'"),
    ("I cannot evaluate these images.", "no score"),
    ("The edit looks good overall, well done", "no score"),
    ("score: seven out of ten", "no score"),
    ("[a, b]", "no score list"),
    ("{'score': [1, 2], 'score': [3, 4]}", "several"),
]


@pytest.mark.parametrize("reply, reason", VIESCORE_BAD)
def test_viescore_failures_are_one_line(reply, reason):
    with pytest.raises(ParseFailure) as err:
        parse_viescore(reply)
    message = str(err.value)
    assert reason in message and "\n" not in message


def test_viescore_long_reply_is_shortened_in_the_reason():
    with pytest.raises(ParseFailure) as err:
        parse_viescore("no numbers here " * 50)
    assert len(str(err.value)) < 160


IMGEDIT_OK = [
    ("Prompt match: 4\nBlending: 5\nRest untouched: 3", [4, 5, 3]),
    ("**Swap accuracy**: 2\nBrief reasoning: x\nFill: 1\nNote: 3 things changed\n  Keep: 5  ", [2, 1, 5]),
    ("Here you go.\n\nA: 1\r\nB: 1\r\nC: 1\n", [1, 1, 1]),
]


@pytest.mark.parametrize("reply, expected", IMGEDIT_OK)
def test_imgedit_values(reply, expected):
    assert parse_imgedit(reply) == expected


def test_imgedit_other_criterion_counts():
    assert parse_imgedit("A: 2\nB: 3", n_criteria=2) == [2, 3]
    with pytest.raises(ParseFailure, match="3 criterion lines"):
        parse_imgedit("A: 2\nB: 3\nC: 4", n_criteria=2)


IMGEDIT_BAD = [
    ("", "empty"),
    (None, "empty"),
    ("Prompt match: 4\nBlending: 5", "2 criterion lines"),
    ("A: 4\nB: 5\nC: 3\nD: 2", "4 criterion lines"),
    ("A: 4\nB: 6\nC: 3", "outside 1-5"),
    ("A: 0\nB: 2\nC: 3", "outside 1-5"),
    ("A: 4/5\nB: 5/5\nC: 3/5", "0 criterion lines"),  # the official grammar: digits only
    ("A:4\nB:5\nC:3", "0 criterion lines"),  # split on ": " as the official script does
    ("Brief reasoning: x\nI refuse to grade this.", "0 criterion lines"),
]


@pytest.mark.parametrize("reply, reason", IMGEDIT_BAD)
def test_imgedit_failures_are_one_line(reply, reason):
    with pytest.raises(ParseFailure) as err:
        parse_imgedit(reply)
    assert reason in str(err.value) and "\n" not in str(err.value)
