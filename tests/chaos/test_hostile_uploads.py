"""Hostile uploads against the real gateway process (uvicorn): each costs it little memory, bodies
are cut off at the cap, stalled bodies time out, and the gateway stays healthy. The files are made
here, small on disk; what they claim is what used to cost hundreds of MB."""

from __future__ import annotations

import concurrent.futures
import io
import select
import socket
import time

import httpx
import pytest
from PIL import Image

from api.submit import form_files
from idbody.stack.service import ServiceStack, stack_settings
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.chaos.chaos_stack import (
    SUBMIT,
    jpeg_claiming,
    peak_mb,
    reset_peak,
    rgba16_png_claiming,
    rss_mb,
    submit,
)
from tests.face_photos import tom_jpeg
from tests.image_samples import encode, halves, heic, phone_jpeg

pytestmark = pytest.mark.integration

MAX_GROWTH_MB = 100
# the gateway's decode bound (api.decode_budget): a photo larger than the budget (4 x 32 MiB) decodes
# alone, and the largest a PNG may be is 40 MP x 4 bytes; plus the small copies made after it
DECODE_BOUND_MB = 40e6 * 4 / 2**20 + 40
READ_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def gateway(valkey, s3_server, tmp_path_factory):
    settings = stack_settings(valkey, s3_server, 8, "hostile", auth_disabled=True,
                              body_read_timeout_s=READ_TIMEOUT_S)
    JobStore.from_settings(settings).client.flushdb()
    Storage.from_settings(settings).ensure_buckets()
    with ServiceStack(settings, tmp_path_factory.mktemp("hostile-logs")) as stack:
        stack.start_gateway()
        stack.wait_healthy()
        assert submit(stack.base_url, tom_jpeg()).status_code == 202  # warm: every import done
        yield stack


def _pid(stack: ServiceStack) -> int:
    return stack.procs["api"].pid


def _growth(stack: ServiceStack, send) -> tuple[float, object]:
    """(peak RSS above the RSS before, what ``send`` returned)."""
    pid = _pid(stack)
    before = rss_mb(pid)
    reset_peak(pid)
    answer = send()
    return peak_mb(pid) - before, answer


def _still_healthy(stack: ServiceStack) -> None:
    assert httpx.get(stack.base_url + "/healthz", timeout=10).status_code == 200
    assert submit(stack.base_url, tom_jpeg()).status_code == 202


def test_image_bombs_cost_little_memory(gateway):
    png = rgba16_png_claiming(6320, 6320)  # 6320x6320 16-bit RGBA: 160 MB decoded as RGBA
    assert len(png) < 4096
    grew, r = _growth(gateway, lambda: submit(gateway.base_url, png))
    print(f"\n16-bit RGBA PNG 6320x6320 ({len(png)} B): {r.status_code}, gateway peak +{grew:.0f} MB")
    # within the 40 MP cap (the pixel cap is the rule), so it is decoded: Pillow takes the rows its
    # short data stream leaves out as empty, a transparent picture that is stored white and reduced
    assert r.status_code == 202 and grew < DECODE_BOUND_MB

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        grew, answers = _growth(gateway, lambda: list(pool.map(lambda _: submit(gateway.base_url, png), range(8))))
    print(f"eight at once: {[a.status_code for a in answers]}, gateway peak +{grew:.0f} MB")
    # each holds the whole decode budget, so they decode one after another: 160 MB, not 8 x 160
    assert {a.status_code for a in answers} == {202} and grew < DECODE_BOUND_MB

    over = submit(gateway.base_url, rgba16_png_claiming(6400, 6400))  # 41 MP: refused from its header
    assert over.status_code == 413 and over.json()["error"]["code"] == "image_too_large"
    _still_healthy(gateway)


def _stored_size(stack: ServiceStack, answer: httpx.Response) -> tuple[int, int]:
    """The size of the photo the worker will read from S3 for an accepted submit."""
    record = JobStore.from_settings(stack.settings).get(answer.json()["request_id"])
    return Image.open(io.BytesIO(Storage.from_settings(stack.settings).get_upload(record.upload_key))).size


def test_phone_photos_are_taken_within_the_memory_bound(gateway):
    jpeg = phone_jpeg(8064, 6048)  # 48 MP, as phones save them: 195 MB if decoded whole
    grew, r = _growth(gateway, lambda: submit(gateway.base_url, jpeg))
    print(f"\n48 MP JPEG ({len(jpeg) / 2**20:.1f} MB): {r.status_code}, gateway peak +{grew:.0f} MB")
    assert r.status_code == 202, r.text
    assert _stored_size(gateway, r) == (2016, 1512) and grew < MAX_GROWTH_MB  # decoded at 1/4 scale

    photo = heic(1024, 768)
    r = submit(gateway.base_url, photo)
    print(f"HEIC 1024x768 ({len(photo)} B): {r.status_code}")
    assert r.status_code == 202, r.text
    assert _stored_size(gateway, r) == (1024, 768)

    png = encode(halves(4032, 3024), "PNG", compress_level=1)  # 49 MB decoded: over 32 MiB, within 40 MP
    grew, r = _growth(gateway, lambda: submit(gateway.base_url, png))
    print(f"PNG 4032x3024 ({len(png)} B): {r.status_code}, gateway peak +{grew:.0f} MB")
    assert r.status_code == 202, r.text
    assert _stored_size(gateway, r) == (2016, 1512) and grew < MAX_GROWTH_MB
    _still_healthy(gateway)


def test_jpeg_claiming_a_huge_frame_is_decoded_small(gateway):
    jpeg = jpeg_claiming(6000, 6000)
    assert len(jpeg) < 1024
    grew, r = _growth(gateway, lambda: submit(gateway.base_url, jpeg))
    print(f"\nJPEG claiming 6000x6000 ({len(jpeg)} B): {r.status_code}, gateway peak +{grew:.0f} MB")
    # decoded at 1/8 scale (750x750) from its header: accepted or refused as corrupt, never costly
    assert r.status_code in (202, 422) and grew < MAX_GROWTH_MB
    _still_healthy(gateway)


def test_oversized_and_too_many_text_fields(gateway):
    image = tom_jpeg()
    # 1 MiB text fields, 10 more than the body cap (form_files() photos' worth) has room for
    count = form_files() * gateway.settings.max_upload_bytes // (1 << 20) + 10
    big = {f"field{i}": "x" * (1 << 20) for i in range(count)}
    grew, r = _growth(gateway, lambda: submit(gateway.base_url, image, **big))
    print(f"\n{count} 1 MB text fields: {r.status_code}, gateway peak +{grew:.0f} MB")
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large" and grew < MAX_GROWTH_MB
    # the limit the README names, not the body cap with the form's 64 KiB added ("10304 KiB")
    assert r.json()["error"]["message"].startswith("The photo is larger than 10 MiB.")
    one_long = submit(gateway.base_url, image, clothing="x" * (64 * 1024))
    assert one_long.status_code == 422 and one_long.json()["error"]["code"] == "invalid_parameter"
    many = submit(gateway.base_url, image, **{f"f{i}": "1" for i in range(100)})
    assert many.status_code == 422 and "multipart" in many.json()["error"]["message"]
    _still_healthy(gateway)


def _chunked_upload_until_answered(port: int, total_bytes: int, chunk_bytes: int = 256 * 1024) -> tuple[bytes, int]:
    """Stream a chunked multipart body of ``total_bytes`` until the server answers; returns (the
    answer's first bytes, bytes sent by then)."""
    boundary = "b0undary"
    head = (f"POST {SUBMIT} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"face_image\"; filename=\"x.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    payload = b"\xff" * chunk_bytes
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        sock.setblocking(False)
        frame = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
        pending = b""
        while sent < total_bytes:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable or not writable:
                break
            pending = pending or frame
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += n
            pending = pending[n:]
        sock.setblocking(True)
        try:
            return sock.recv(4096), sent
        except ConnectionResetError:
            return b"", sent


def test_chunked_gigabyte_body_is_cut_off_at_the_cap(gateway):
    grew, (answer, sent) = _growth(gateway, lambda: _chunked_upload_until_answered(gateway.port, 1 << 30))
    print(f"\nchunked 1 GB upload: answered after {sent / 2**20:.1f} MB sent, gateway peak +{grew:.0f} MB")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # the cap: form_files() photos (5 face photos, 1 pose photo) of max_upload_bytes and the form
    # around them; a socket's buffers add a few MB
    assert sent < form_files() * gateway.settings.max_upload_bytes + 10 * 2**20 and grew < MAX_GROWTH_MB
    _still_healthy(gateway)


def _read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (head and Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _answer_length(data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _answer_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(data)


def _stalled_upload(port: int) -> bytes:
    """Promise a 1 MB body, send 1 KB of it, then wait for the server's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S * 20) as sock:
        part = b'--b\r\nContent-Disposition: form-data; name="face_image"; filename="x.jpg"\r\n\r\n'
        sock.sendall((f"POST {SUBMIT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {1 << 20}\r\n"
                      "Content-Type: multipart/form-data; boundary=b\r\n\r\n").encode() + part + b"x" * 1024)
        return _read_answer(sock)


def test_stalled_uploads_time_out_with_408(gateway):
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: _stalled_upload(gateway.port), range(30)))
    print(f"\n30 stalled uploads answered in {time.monotonic() - started:.1f} s")
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
    assert b"request_timeout" in answers[0]
    _still_healthy(gateway)
