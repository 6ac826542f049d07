"""The bench's own instruments measure what they claim: CPU by process group, and a raw keep-alive
HTTP client that reads exactly the responses a real server sends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.cpu_account import CpuAccount, group_cpu_s, machine_busy_s
from bench.raw_http import RawConnection
from idbody.stack.polling import until


def test_group_cpu_counts_a_busy_process_group_and_not_an_idle_one() -> None:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        meter = CpuAccount(gateway_pgid=spin.pid)
        busy_before = machine_busy_s()
        until(lambda: group_cpu_s(spin.pid) >= 0.3, 20, "the spinning child to use 0.3 s of CPU")
        share = meter.per_request(requests=10)
        assert share["gateway_ms"] >= 20  # >= 0.3 s over 10 "requests", less what was spent before the meter
        assert group_cpu_s(idle.pid) < 0.2
        assert machine_busy_s() - busy_before >= 0.2
        assert share["total_ms"] >= share["gateway_ms"] - 5  # the machine's total includes the group (tick rounding)
    finally:
        for proc in (spin, idle):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"0\r\n\r\n")
            return
        body = f'{{"path": "{self.path}"}}'.encode()
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address
    server.shutdown()
    server.server_close()


def test_raw_client_reads_successive_responses_on_one_connection(http_server) -> None:
    host, port = http_server

    async def run() -> list[tuple[int, bytes]]:
        async with await RawConnection.open(host, port) as conn:
            return [await conn.get("/api/v1/jobs/a"), await conn.get("/missing"), await conn.get("/b")]

    assert asyncio.run(run()) == [(200, b'{"path": "/api/v1/jobs/a"}'), (404, b'{"path": "/missing"}'),
                                  (200, b'{"path": "/b"}')]


def test_raw_client_refuses_what_it_cannot_read(http_server) -> None:
    async def run() -> None:
        async with await RawConnection.open(*http_server) as conn:
            await conn.get("/chunked")

    with pytest.raises(ValueError, match="chunked"):
        asyncio.run(run())
