"""Judge replies to scores. A reply that does not hold a valid score raises
:class:`ParseFailure` with the reason; the caller counts the case as failed and never
invents a score.

Where the official scorers differ (kept here so a reader of a table knows):

- VIEScore (stepfun-ai/Step1X-Edit @ 570eba6, GEdit-Bench/viescore/utils.py,
  ``mllm_output_to_dict`` lines 154-235): it finds the score the way
  :func:`parse_viescore` does (the text between two ``||V^=^V||`` delimiters, lines
  167-173; else the first ``{`` to the last ``}``, lines 178-179; else a bare list of two
  integers, line 194; else the whole reply as one integer 0-10, line 203), but then:
  when the JSON does not load it rewrites it with ``fix_json`` (lines 8-29, 224-228:
  quotes bare keys, wraps numbers in lists) and returns whatever that loads, unchecked;
  it never checks the range of JSON scores nor that they are numbers; and on the second
  try (viescore/__init__.py lines 74-82, ``max_tries = 1``) a reply without braces is
  replaced by ``random.randint(0, 10)`` (utils.py lines 186-193) -- even a valid bare
  list, as that branch comes first. The OpenAI wrapper returns "" for a refused or
  failed call (mllm_tools/openai.py lines 153-167), which ends in the same random fill.
  Here: an out-of-range, non-numeric or missing score, an empty reply and prose without
  a score are failures; a JSON object that does not load yields its ``score`` only when
  exactly one ``score`` entry with a list or number can be read from it; a bare list is
  read whatever its length and with floats (the official reads only ``[d, d]``, two
  integers, line 194).
- ImgEdit (PKU-YuanGroup/ImgEdit @ 547185d, Benchmark/Basic/step1_get_avgscore.py
  lines 4-13): the same line grammar as :func:`parse_imgedit` (``name: digits`` split on
  ": "), but it averages however many values it found (one, two, four...), takes any
  integer (a 6 or a 0 included), rounds the mean to 2 decimals (line 12) and drops a
  reply with no value from the averages (lines 18-20), so that item counts nowhere.
  Here: exactly ``n_criteria`` values, each 1-5, else a failure.
"""

from __future__ import annotations

import json
import math
import re

#: VIEScore's delimiter around the JSON answer (utils.py line 165).
DELIMITER = "||V^=^V||"
#: A ``score`` entry in a JSON-like text that json cannot load (single quotes, a bad
#: string elsewhere): the key, quoted or not, then a flat list or a number.
_SCORE_ENTRY = re.compile(r"""["']?\bscore["']?\s*:\s*(\[[^\[\]{}]*\]|[-+]?\d+(?:\.\d+)?)""")
_INTEGER = re.compile(r"[-+]?\d+")
_IMGEDIT_VALUE = re.compile(r"[0-9]+")


class ParseFailure(Exception):
    """A reply without a valid score; the message is the one-line reason."""


def _brief(reply: str, limit: int = 80) -> str:
    text = " ".join(reply.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _scores(value, reply: str, low: float, high: float) -> list[float]:
    """A score or score list checked: numbers (not booleans), finite, within [low, high]."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ParseFailure(f"the score list is empty in {_brief(reply)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ParseFailure(f"score {v!r} is not a number in {_brief(reply)}")
        if not low <= v <= high:
            raise ParseFailure(f"score {v!r} is outside {low:g}-{high:g} in {_brief(reply)}")
    return [float(v) for v in values]


def _score_of_object(span: str, reply: str):
    """The ``score`` value of a JSON object text: loaded as JSON, else read from its one
    ``score`` entry."""
    try:
        data = json.loads(span, strict=False)  # strict=False: raw newlines inside the reasoning
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        if "score" not in data:
            raise ParseFailure(f"the JSON answer has no 'score' in {_brief(reply)}")
        return data["score"]
    entries = _SCORE_ENTRY.findall(span)
    if len(entries) != 1:
        what = "no readable" if not entries else "several"
        raise ParseFailure(f"the answer is not valid JSON and has {what} 'score' entries in {_brief(reply)}")
    try:
        return json.loads(entries[0])
    except json.JSONDecodeError:
        raise ParseFailure(f"the 'score' entry {entries[0]!r} is not a list of numbers in {_brief(reply)}") from None


def parse_viescore(reply: str | None) -> list[float]:
    """The score list of a VIEScore reply (GEdit-Bench SC or PQ), each in [0, 10].

    Looked for as VIEScore looks: the JSON between two ``||V^=^V||`` delimiters; else the
    first ``{`` to the last ``}``; else a bare list ``[a, b]`` (first ``[`` to last ``]``);
    else the whole reply as one integer. Raises :class:`ParseFailure` otherwise."""
    if reply is None or not reply.strip():
        raise ParseFailure("the reply is empty (a refusal or a failed call)")
    if reply.count(DELIMITER) == 2:
        start = reply.index(DELIMITER) + len(DELIMITER)
        return _scores(_score_of_object(reply[start: reply.rindex(DELIMITER)].strip(), reply), reply, 0, 10)
    start, end = reply.find("{"), reply.rfind("}")
    if start != -1 and end > start:
        return _scores(_score_of_object(reply[start: end + 1], reply), reply, 0, 10)
    start, end = reply.find("["), reply.rfind("]")
    if start != -1 and end > start:
        try:
            values = json.loads(reply[start: end + 1])
        except json.JSONDecodeError:
            values = None
        if not isinstance(values, list):
            raise ParseFailure(f"no score list in {_brief(reply)}")
        return _scores(values, reply, 0, 10)
    if _INTEGER.fullmatch(reply.strip()):
        return _scores(int(reply.strip()), reply, 0, 10)
    raise ParseFailure(f"no score found in {_brief(reply)}")


def parse_imgedit(reply: str | None, n_criteria: int = 3) -> list[int]:
    """The criterion values of an ImgEdit rubric reply, each 1-5: the lines of the form
    ``<criterion>: <digits>`` (after stripping the line; split on ": " into exactly two
    parts, as step1_get_avgscore.py line 8-9 splits), other lines ignored. Exactly
    ``n_criteria`` such lines are required; raises :class:`ParseFailure` otherwise."""
    if reply is None or not reply.strip():
        raise ParseFailure("the reply is empty (a refusal or a failed call)")
    values = []
    for line in reply.splitlines():
        parts = line.strip().split(": ")
        if len(parts) == 2 and _IMGEDIT_VALUE.fullmatch(parts[1]):
            values.append(int(parts[1]))
    if len(values) != n_criteria:
        raise ParseFailure(f"{len(values)} criterion lines '<name>: <1-5>' where {n_criteria} are expected "
                           f"in {_brief(reply)}")
    outside = [v for v in values if not 1 <= v <= 5]
    if outside:
        raise ParseFailure(f"criterion value {outside[0]} is outside 1-5 in {_brief(reply)}")
    return values
