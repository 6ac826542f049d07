"""The fenced code blocks of README.md, by the heading they sit under, so tests run the README's
own commands and they cannot drift apart.

Example::

    blocks_under("### Try it locally", "bash")   # ['API=${API:-...}\\njob=$(curl ...', 'status_url=...']
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks_under(heading: str, lang: str, readme: Path = README) -> list[str]:
    """The ``lang`` blocks between ``heading`` (a whole line) and the next heading of its level or
    above; AssertionError when the heading is missing."""
    text = readme.read_text()
    lines = text.splitlines(keepends=True)
    level = len(heading) - len(heading.lstrip("#"))
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == heading]
    assert starts, f"README.md has no heading {heading!r}"
    end = len(lines)
    for i in range(starts[0] + 1, len(lines)):
        marks = len(lines[i]) - len(lines[i].lstrip("#"))
        if 0 < marks <= level and lines[i][marks:marks + 1] == " ":
            end = i
            break
    section = "".join(lines[starts[0]:end])
    return [body for found, body in _FENCE.findall(section) if found == lang]
