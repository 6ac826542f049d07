"""A minimal HTTP/1.1 keep-alive GET client on asyncio streams, for load phases whose requests are
so cheap that a full client (httpx: about 0.9 ms of CPU per GET here) would spend as much CPU as
the gateway it measures, on the same cores. It speaks only what the gateway answers: a status line,
headers with Content-Length, a body; no chunked encoding, no redirects, no TLS.

Example::

    async with await RawConnection.open("127.0.0.1", 8000) as conn:
        status, body = await conn.get("/api/v1/jobs/abc")
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class RawConnection:
    def __init__(self, host: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.host = host
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> "RawConnection":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(f"{host}:{port}", reader, writer)

    async def get(self, path: str) -> tuple[int, bytes]:
        """One GET on the kept-alive connection; (status code, body)."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: application/json\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                raise ValueError("chunked responses are not supported by this client")
        return status, await self.reader.readexactly(length)

    async def __aenter__(self) -> "RawConnection":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.writer.close()
        await self.writer.wait_closed()
