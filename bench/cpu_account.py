"""Where the CPU went during a load phase, from Linux's /proc: the gateway's process group, this bench
process (the load-generating client shares the machine), and everything else (Valkey, SeaweedFS,
the OS, and anything else running on the machine at the time). Divided by the requests served, it
says how many requests per second the machine could serve at best, whatever the code does with its
wall-clock time.

Example::

    meter = CpuAccount(gateway_pgid=stack.procs["api"].pid)
    ... run the load ...
    meter.per_request(requests=400)   # {"gateway_ms": 31.2, "client_ms": 6.0, "other_ms": 4.1, ...}
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # the process ended between listing and reading
        return None
    # the command name (field 2) may hold spaces; every field after its closing parenthesis is plain
    return raw[raw.rindex(")") + 2:].split()


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat_fields(pid)
        # after the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12)
        if fields and int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) * _TICK_S
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent not idle, summed over its cores."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[:8])
    return (user + nice + system + irq + softirq + steal) * _TICK_S


class CpuAccount:
    def __init__(self, gateway_pgid: int) -> None:
        self.gateway_pgid = gateway_pgid
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        return group_cpu_s(self.gateway_pgid), time.process_time(), machine_busy_s(), time.perf_counter()

    def per_request(self, requests: int) -> dict[str, float]:
        """CPU milliseconds per request since construction, split by who spent them, and the
        request rate at which this machine's cores would be fully busy."""
        gateway, client, busy, wall = (now - then for now, then in zip(self._read(), self._start))
        n = max(1, requests)
        other = max(0.0, busy - gateway - client)
        total_ms = busy * 1000 / n
        return {
            "gateway_ms": round(gateway * 1000 / n, 2),
            "client_ms": round(client * 1000 / n, 2),
            "other_ms": round(other * 1000 / n, 2),
            "total_ms": round(total_ms, 2),
            "cpu_utilisation": round(busy / (wall * (os.cpu_count() or 1)), 2),
            "ceiling_rps": round((os.cpu_count() or 1) * 1000 / total_ms, 1) if total_ms else float("inf"),
        }
