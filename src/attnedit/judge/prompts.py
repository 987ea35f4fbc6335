"""The judge's prompt texts (:class:`PromptSet`), read from the user's copy of the official
prompt file of each benchmark, or attnedit's own prompts when no file is given.

The official texts are never shipped: the user points at their copy, it is read (never
executed) and its sha256 is compared with the official file's at the commit these rules
were read from, so a manifest says whether the official prompts were used.

- GEdit-Bench: ``GEdit-Bench/viescore/vie_prompts.py`` is a module of string constants;
  the VIEScore "tie" task composes its two prompts from them (stepfun-ai/Step1X-Edit @
  570eba6, GEdit-Bench/viescore/__init__.py line 41: the context constant; line 46: SC =
  context, two-image edit rule and tie SC rule joined with "\\n"; line 47: PQ = context and
  PQ rule joined with "\\n"). Only SC gets the instruction (line 61, str.replace of
  ``<instruction>``); PQ is sent as composed (line 66), see :meth:`PromptSet.text_for`.
- ImgEdit-Basic: ``Benchmark/Basic/prompts.json`` maps each edit type to its rubric
  (PKU-YuanGroup/ImgEdit @ 547185d, Benchmark/Basic/basic_bench.py lines 10-12: json.load;
  lines 36-37: the rubric of the item's edit type with ``<edit_prompt>`` str.replace'd by
  the instruction).
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from attnedit.errors import ConfigError, DataError

GEDIT, IMGEDIT = "gedit", "imgedit"
OWN_SOURCE = "attnedit-own"
OWN_LABEL = "attnedit's own prompts, not the benchmark's"

#: Where each official file lives and the commit its rules were read at.
OFFICIAL_FILE = {
    GEDIT: ("stepfun-ai/Step1X-Edit", "570eba6", "GEdit-Bench/viescore/vie_prompts.py"),
    IMGEDIT: ("PKU-YuanGroup/ImgEdit", "547185d", "Benchmark/Basic/prompts.json"),
}
#: sha256 of those files' bytes at those commits.
OFFICIAL_SHA256 = {
    GEDIT: "010234af186eb0a70fcb99047cd32ad1da01bed59ca1a95a01335426417cf838",
    IMGEDIT: "f9468dc848776ee0a6c2e2c31e678c7224e9cb61b013747c8c52d4a05627b5a0",
}
PLACEHOLDER = {GEDIT: "<instruction>", IMGEDIT: "<edit_prompt>"}

#: The constants each tie prompt joins, in order (viescore/__init__.py lines 41, 46, 47).
GEDIT_PARTS = {
    "sc": ("_context_no_delimit", "_prompts_0shot_two_image_edit_rule", "_prompts_0shot_tie_rule_SC"),
    "pq": ("_context_no_delimit", "_prompts_0shot_rule_PQ"),
}
#: ImgEdit-Basic's edit types, each with a rubric in prompts.json.
IMGEDIT_TYPES = ("replace", "add", "adjust", "remove", "style", "action", "extract", "background", "compose")


def fill(text: str, placeholder: str, value: str) -> str:
    """The prompt with the instruction put in, by plain str.replace as both official scripts
    do (every occurrence; no escaping)."""
    return text.replace(placeholder, value)


def texts_sha256(texts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(texts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class PromptSet:
    """The prompt texts of one benchmark's judge, placeholders still in.

    ``texts``: gedit {"sc", "pq"} (composed), imgedit {edit_type: rubric}. ``source``: the
    file's absolute path, or ``"attnedit-own"``. ``sha256``: of the file's bytes (own
    prompts: of the texts' JSON). ``official``: True when the file is byte-identical to the
    official one, False for a file that differs, None for attnedit's own prompts."""

    benchmark: str
    texts: dict[str, str] = field(hash=False)
    source: str
    sha256: str
    official: bool | None
    placeholder: str

    @property
    def hash(self) -> str:
        """A short hash of the texts: what the judge stack records (the file's formatting
        does not enter it, the words do)."""
        return texts_sha256(self.texts)[:16]

    def text_for(self, key: str, instruction: str) -> str:
        """The text sent for ``key`` (gedit "sc"/"pq", an imgedit edit type). GEdit's PQ
        prompt is sent unfilled, as viescore/__init__.py line 66 sends it."""
        try:
            text = self.texts[key]
        except KeyError:
            raise DataError(f"the {self.benchmark} prompt set ({self.source}) has no prompt for '{key}'; "
                            f"it has: {', '.join(sorted(self.texts))}") from None
        if self.benchmark == GEDIT and key == "pq":
            return text
        return fill(text, self.placeholder, instruction)

    def describe(self) -> dict[str, Any]:
        """What a manifest records, with a label a table title can quote."""
        repo, commit, path = OFFICIAL_FILE[self.benchmark]
        if self.official is None:
            label = OWN_LABEL
        elif self.official:
            label = f"the official prompts ({repo} @ {commit}, {path})"
        else:
            label = f"a modified copy of {path}: its bytes differ from {repo} @ {commit}"
        return {
            "benchmark": self.benchmark,
            "label": label,
            "source": self.source,
            "sha256": self.sha256,
            "official": self.official,
            "official_file": f"{repo}@{commit}:{path}",
            "official_sha256": OFFICIAL_SHA256[self.benchmark],
            "hash": self.hash,
            "placeholder": self.placeholder,
            "keys": sorted(self.texts),
        }


def _read(path: str | Path, benchmark: str) -> tuple[Path, bytes]:
    repo, _, official = OFFICIAL_FILE[benchmark]
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ConfigError(f"there is no {benchmark} prompt file at {file}; give the path of your copy of "
                          f"{official} (from {repo}), or no path for {OWN_LABEL}")
    return file, file.read_bytes()


def _own(benchmark: str) -> PromptSet:
    data = json.loads(resources.files("attnedit.judge").joinpath("own_prompts.json").read_text(encoding="utf-8"))
    texts = {key: "\n".join(lines) for key, lines in data[benchmark].items()}
    return PromptSet(benchmark, texts, OWN_SOURCE, texts_sha256(texts), None, PLACEHOLDER[benchmark])


def string_constants(source: bytes, file: Path) -> dict[str, str | None]:
    """The module-level ``name = "..."`` assignments of a Python file, found by parsing it
    (never running it). A name last bound to anything but a string constant maps to None."""
    try:
        tree = ast.parse(source, filename=str(file))
    except (SyntaxError, ValueError) as err:
        raise DataError(f"cannot parse {file} as Python ({err}); use an unmodified copy of "
                        f"{OFFICIAL_FILE[GEDIT][2]}") from None
    found: dict[str, str | None] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        constant = value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = constant
    return found


def load_gedit_prompts(path: str | Path | None) -> PromptSet:
    """GEdit-Bench's SC and PQ prompts of the tie task, from the user's vie_prompts.py
    (None: attnedit's own prompts)."""
    if path is None:
        return _own(GEDIT)
    file, data = _read(path, GEDIT)
    repo, commit, official = OFFICIAL_FILE[GEDIT]
    constants = string_constants(data, file)
    texts = {}
    for key, names in GEDIT_PARTS.items():
        missing = [name for name in names if constants.get(name) is None]
        if missing:
            raise DataError(f"{file} defines no string constant {', '.join(missing)} (needed by the tie task's "
                            f"{key.upper()} prompt); use an unmodified copy of {official} from {repo} @ {commit}")
        texts[key] = "\n".join(constants[name] for name in names)
    if PLACEHOLDER[GEDIT] not in texts["sc"]:
        raise DataError(f"the SC prompt composed from {file} has no {PLACEHOLDER[GEDIT]} placeholder for the "
                        f"instruction; use an unmodified copy of {official} from {repo} @ {commit}")
    digest = hashlib.sha256(data).hexdigest()
    return PromptSet(GEDIT, texts, str(file), digest, digest == OFFICIAL_SHA256[GEDIT], PLACEHOLDER[GEDIT])


def load_imgedit_prompts(path: str | Path | None) -> PromptSet:
    """ImgEdit-Basic's rubric per edit type, from the user's prompts.json (None: attnedit's
    own prompts). Every edit type of :data:`IMGEDIT_TYPES` must have a rubric holding the
    placeholder; extra types are kept."""
    if path is None:
        return _own(IMGEDIT)
    file, data = _read(path, IMGEDIT)
    repo, commit, official = OFFICIAL_FILE[IMGEDIT]
    fix = f"use an unmodified copy of {official} from {repo} @ {commit}"
    try:
        texts = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {file} as JSON ({err}); {fix}") from None
    if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        raise DataError(f"{file} is not a JSON object of edit type -> rubric text; {fix}")
    missing = [kind for kind in IMGEDIT_TYPES if kind not in texts]
    if missing:
        raise DataError(f"{file} has no rubric for the edit type(s) {', '.join(missing)}; {fix}")
    unfilled = sorted(kind for kind, text in texts.items() if PLACEHOLDER[IMGEDIT] not in text)
    if unfilled:
        raise DataError(f"the rubric(s) {', '.join(unfilled)} in {file} have no {PLACEHOLDER[IMGEDIT]} "
                        f"placeholder for the instruction; {fix}")
    digest = hashlib.sha256(data).hexdigest()
    return PromptSet(IMGEDIT, texts, str(file), digest, digest == OFFICIAL_SHA256[IMGEDIT], PLACEHOLDER[IMGEDIT])
