"""Print the requirements of pyproject.toml's base dependencies plus the named extras, one a line,
with the project's references to its own extras (``identity-body[ml,cpu]``) expanded. Used by
deploy/install-python-env.sh to install dependencies before the sources are copied.

Example::

    python deploy/pyproject_requirements.py ml,gpu
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: dict, extras: list[str]) -> list[str]:
    project = pyproject["project"]
    name = project["name"]
    found: list[str] = list(project.get("dependencies", []))
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        for line in project["optional-dependencies"][extra]:
            match = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", line.strip())
            if match:
                pending.extend(e.strip() for e in match.group(1).split(","))
            elif line not in found:
                found.append(line)
    return found


if __name__ == "__main__":
    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    wanted = [e for e in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if e]
    print("\n".join(requirements(data, wanted)))
