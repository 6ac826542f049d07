"""Multipart parsing that refuses text fields which are not valid UTF-8.

Starlette decodes a text field as UTF-8 and, when that fails, silently as Latin-1, so invalid bytes
reach the parameters as mojibake (and from there the prompt). This parser checks each text part's
raw bytes before Starlette decodes them; the limits on fields, files and part size are Starlette's.

Example::

    form = await parse_multipart(request, max_files=2, max_fields=32, max_part_size=16 * 1024)
"""

from __future__ import annotations

from contextlib import aclosing

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request


class Utf8MultiPartParser(MultiPartParser):
    def on_part_end(self) -> None:
        part = self._current_part  # starlette's part under construction (tests/test_gateway_faults.py pins it)
        if part.file is None:
            try:
                part.data.decode("utf-8")
            except UnicodeDecodeError:
                raise MultiPartException(f"Field '{part.field_name}' is not valid UTF-8 text.") from None
        super().on_part_end()


async def parse_multipart(request: Request, max_files: int, max_fields: int, max_part_size: int) -> FormData:
    """The request's multipart form; MultiPartException for a malformed one or one over a limit."""
    async with aclosing(request.stream()) as stream:
        parser = Utf8MultiPartParser(request.headers, stream, max_files=max_files, max_fields=max_fields,
                                     max_part_size=max_part_size)
        return await parser.parse()
