"""Where a bench writes its JSON: ``bench/results/NAME.json``, with the machine, the Python and the
command that made it.

Example::

    write_report("pipeline", {"cases": ...})    # bench/results/pipeline.json
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_report(name: str, report: dict[str, Any]) -> Path:
    report = {**report, "machine": platform.machine(), "python": platform.python_version(),
              "command": " ".join(sys.argv)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    return out
