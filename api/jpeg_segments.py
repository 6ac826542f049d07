"""A JPEG's metadata removed without decoding it: the file is walked marker by marker and only what
the decoder needs is copied, so an upright photo is stored byte for byte as its pixels were sent
(no second lossy encode, and ~15 ms less CPU per 0.5 MB photo than decoding and encoding it again).

Kept: the quantisation and Huffman tables, the frame and scan headers with their entropy-coded
data, restart intervals, Adobe's 12-byte APP14 (it says whether three channels are RGB or YCbCr) and
a bare JFIF header in place of the client's APP0 (whose thumbnail could be another picture).
Dropped: every other APPn (EXIF with GPS and the camera's serial, XMP, ICC, MPF, maker notes),
comments, and everything after the end-of-image marker (phones append depth maps, gain maps and
secondary images there). A file with any other marker, or one that ends early, is left to the
caller's full decode and re-encode (``None``).

Example::

    stripped = strip_metadata(photo_bytes)   # bytes without EXIF/XMP/ICC/comments, or None
"""

from __future__ import annotations

import re

# a marker: one or more 0xFF (fill bytes may precede it), then a code that is neither 0x00 (a
# stuffed 0xFF inside entropy-coded data) nor a restart marker (RST0-7 sit inside scans)
_MARKER = re.compile(rb"\xff+([^\x00\xff\xd0-\xd7])")
# where a scan's entropy-coded data ends: the first 0xFF that is neither stuffed nor a restart (a
# fill byte counts: a marker follows it). Without the "+" the search runs at memchr speed.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
_APP0, _APP14, _APP15 = 0xE0, 0xEE, 0xEF
# frames the decoder reads (SOF0-3, 5-7, 9-11, 13-15), then DHT, DAC, DQT, DRI, DNL
_DECODER_SEGMENTS = frozenset({*range(0xC0, 0xD0)} - {0xC8}) | {0xDB, 0xDD, 0xDC}
_JFIF = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"  # v1.01, 1:1 aspect, no thumbnail


def strip_metadata(data: bytes) -> bytes | None:
    """``data`` with only the segments a decoder needs, ending at its end-of-image marker; ``None``
    when the file holds a marker this walk does not know or is cut short."""
    if not data.startswith(b"\xff\xd8"):
        return None
    out = [b"\xff\xd8"]
    pos = 2
    while True:
        marker = _MARKER.match(data, pos)
        if marker is None:
            return None
        code = marker.group(1)[0]
        pos = marker.end()
        if code == _EOI:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if len(data) < pos + 2:
            return None
        end = pos + int.from_bytes(data[pos:pos + 2], "big")
        if end < pos + 2 or end > len(data):
            return None
        if code in _DECODER_SEGMENTS or code == _SOS or _is_adobe(code, data[pos + 2:end]):
            out.append(bytes((0xFF, code)) + data[pos:end])
        elif code == _APP0 and data[pos + 2:pos + 7] == b"JFIF\x00":
            out.append(_JFIF)
        elif not (_APP0 <= code <= _APP15 or code == _COM):
            return None
        pos = end
        if code == _SOS:  # the entropy-coded data runs to the next marker that is not a restart
            following = _SCAN_END.search(data, pos)
            if following is None:
                return None
            out.append(data[pos:following.start()])
            pos = following.start()


def _is_adobe(code: int, payload: bytes) -> bool:
    return code == _APP14 and len(payload) == 12 and payload.startswith(b"Adobe")
