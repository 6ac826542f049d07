"""``idbody api --workers N``: uvicorn runs N gateway processes from the app factory, each with
its own clients, all serving one port."""

from __future__ import annotations

from pathlib import Path

import httpx

from idbody.stack.service import ServiceStack
from tests import image_samples as samples

SUBMIT = "/api/v1/generate-identity-body"


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _server_processes(pid: int) -> list[int]:
    """uvicorn's worker processes under the supervisor ``pid`` (its multiprocessing resource
    tracker is a child too, but is not a server: it has no listening socket of its own)."""
    return [child for child in _children(pid)
            if "spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")]


def test_two_gateway_processes_serve_submits_and_status(settings, redis_client, tmp_path):
    with ServiceStack(settings, tmp_path / "logs") as stack:
        supervisor = stack.start_gateway(workers=2)
        stack.wait_healthy()
        assert len(_server_processes(supervisor.pid)) == 2, stack.log("api")
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            rids = []
            for _ in range(6):  # new connections each time: the kernel spreads them over both
                resp = httpx.post(stack.base_url + SUBMIT, data={"height_cm": "170"},
                                  files={"face_image": ("f.jpg", samples.photo(), "image/jpeg")}, timeout=30)
                assert resp.status_code == 202, resp.text
                rids.append(resp.json()["request_id"])
            positions = [client.get(f"/api/v1/jobs/{rid}").json()["queue_position"] for rid in rids]
        # one queue across processes: positions are global, in submit order
        assert positions == [1, 2, 3, 4, 5, 6]


def test_multi_process_listener_gets_tcp_nodelay_on_accepted_connections():
    """Without IPPROTO_TCP on the listener asyncio leaves Nagle on for every accepted connection."""
    import asyncio
    import socket

    from api.serve import with_tcp_proto

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # as uvicorn's bind_socket makes it
    listener.bind(("127.0.0.1", 0))
    listener = with_tcp_proto(listener)
    assert listener.proto == socket.IPPROTO_TCP

    async def accepted_nodelay() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0
