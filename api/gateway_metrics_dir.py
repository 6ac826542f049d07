"""prometheus-client's multiprocess mode for ``idbody api --workers N``.

prometheus-client picks where a counter's value lives when it is first imported: in the process,
or (``PROMETHEUS_MULTIPROC_DIR`` set) in a file per process in that folder, which a scrape sums.
So the supervisor sets the variable before any gateway process starts, and empties the folder:
files left by an earlier run would be added to this one's counts.

Example::

    prepare_multiprocess_dir(workers=2)   # before uvicorn starts its processes
    multiprocess_dir()                    # Path('/tmp/idbody-prometheus-...') in every process
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """For more than one process: the folder named by the environment (a k8s emptyDir, say) or a
    new temporary one, emptied of earlier runs' files and exported to the processes to come."""
    if workers <= 1:
        return None
    folder = multiprocess_dir() or Path(tempfile.mkdtemp(prefix="idbody-prometheus-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[ENV] = str(folder)
    return folder
