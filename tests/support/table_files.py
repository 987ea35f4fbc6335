"""Reading a table's Markdown file back as a person reads it: the '### ' heading and the
'[k] note' lines under the table (read here with plain string checks, not with the
report's own parser)."""

from __future__ import annotations

import re
from pathlib import Path

NOTE = re.compile(r"^\[(\d+)\] (.*)$")


def heading(path: Path) -> str:
    return next(line for line in Path(path).read_text().splitlines() if line.startswith("### "))


def notes(path: Path) -> list[str]:
    """The '[k] note' lines' notes (a note wrapped onto indented lines joined back),
    checked to be numbered 1, 2, ... in order."""
    found: list[list] = []
    for line in Path(path).read_text().splitlines():
        if match := NOTE.match(line):
            found.append([int(match[1]), match[2]])
        elif found and line.startswith("    ") and line.strip():
            found[-1][1] += " " + line.strip()
    assert [k for k, _ in found] == list(range(1, len(found) + 1)), path
    return [note for _, note in found]


def notes_text(path: Path) -> str:
    return "\n".join(notes(path))
