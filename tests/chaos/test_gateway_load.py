"""Connections that cost the gateway without paying: event streams past their caps, request headers
that never end, bodies sent on after the gateway answered, a client gone mid-upload; and the last
open doors of the probe: a cursor that is no time, loopback webhook hosts in odd spellings, rules
the OpenAPI did not state. Against the real gateway process
(``idbody api``: uvicorn, httptools, the header deadline), auth on, no worker (jobs stay queued).

The deadlines waited on here are the gateway's own settings times a wide margin, so a loaded machine
only makes the tests slower, never red."""

from __future__ import annotations

import base64
import select
import socket
import time

import httpx
import jsonschema
import pytest

from idbody.stack.polling import until
from idbody.stack.service import ServiceStack, stack_settings
from shared.access.api_keys import ApiKeyStore
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.chaos.chaos_stack import SUBMIT, submit
from tests.face_photos import tom_jpeg

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
MAX_STREAMS = 12
MAX_STREAMS_PER_KEY = 8
# how long past a deadline the gateway may take to act on it on a loaded machine
SLACK_S = 30.0


@pytest.fixture(scope="module")
def gateway(valkey, s3_server, tmp_path_factory):
    settings = stack_settings(valkey, s3_server, 15, "load", header_timeout_s=HEADER_TIMEOUT_S,
                              body_read_timeout_s=BODY_TIMEOUT_S, max_streams_per_process=MAX_STREAMS,
                              max_streams_per_key=MAX_STREAMS_PER_KEY)
    store = JobStore.from_settings(settings)
    store.client.flushdb()
    Storage.from_settings(settings).ensure_buckets()
    keys = ApiKeyStore(store.client)
    with ServiceStack(settings, tmp_path_factory.mktemp("load-logs")) as stack:
        stack.start_gateway()
        stack.wait_healthy()
        stack.tokens = [keys.create(name, 100_000, 100).token for name in ("a", "b")]
        yield stack


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class _Stream:
    """One raw event-stream connection; reads until the status line and the first event (or error)."""

    def __init__(self, port: int, request_id: str, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SLACK_S)
        self.sock.sendall(f"GET /api/v1/jobs/{request_id}/events HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: Bearer {token}\r\n\r\n".encode())
        self.head = b""
        while not self._complete():
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.head += chunk

    def _complete(self) -> bool:
        """The stream's status line, headers and first event; a refusal's whole JSON body (it may
        come in a later packet than the headers)."""
        if b"\r\n\r\n" not in self.head:
            return False
        if self.head.startswith(b"HTTP/1.1 200"):
            return b"event:" in self.head
        length = self.header(b"content-length")
        return length is None or len(self.head.split(b"\r\n\r\n", 1)[1]) >= int(length)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None

    def close(self) -> None:
        self.sock.close()


def test_streams_are_capped_per_key_and_per_process_and_places_come_back(gateway):
    a, b = gateway.tokens
    job_a = submit(gateway.base_url, tom_jpeg(), headers=_auth(a)).json()["request_id"]
    job_b = submit(gateway.base_url, tom_jpeg(), headers=_auth(b)).json()["request_id"]
    streams = [_Stream(gateway.port, job_a, a) for _ in range(MAX_STREAMS_PER_KEY)]
    try:
        assert {s.status for s in streams} == {200} and b'"status":"queued"' in streams[0].head
        over_key = _Stream(gateway.port, job_a, a)
        assert over_key.status == 429 and b"too_many_streams" in over_key.head
        assert over_key.header(b"retry-after") is not None
        over_key.close()
        streams += [_Stream(gateway.port, job_b, b) for _ in range(MAX_STREAMS - MAX_STREAMS_PER_KEY)]
        assert {s.status for s in streams} == {200}
        full = _Stream(gateway.port, job_b, b)
        assert full.status == 503 and b"streams_full" in full.head and full.header(b"retry-after") is not None
        full.close()
        # the other clients still get their answers while every stream place is taken
        status = httpx.get(f"{gateway.base_url}/api/v1/jobs/{job_a}", headers=_auth(a), timeout=SLACK_S)
        assert status.status_code == 200 and status.json()["status"] == "queued"
        # a closed stream gives its place back (the gateway notices the disconnect)
        streams.pop().close()

        def reopened() -> _Stream | None:
            stream = _Stream(gateway.port, job_b, b)
            if stream.status == 200:
                return stream
            stream.close()
            return None

        streams.append(until(reopened, SLACK_S, "a stream place to come back", interval_s=0.2))
    finally:
        for stream in streams:
            stream.close()


def test_a_stream_sees_the_change_and_ends(gateway):
    a = gateway.tokens[0]
    job = submit(gateway.base_url, tom_jpeg(), headers=_auth(a)).json()["request_id"]
    events: list[str] = []
    with httpx.stream("GET", f"{gateway.base_url}/api/v1/jobs/{job}/events", headers=_auth(a),
                      timeout=SLACK_S) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(line)
                if len(events) == 1:
                    cancel = httpx.post(f"{gateway.base_url}/api/v1/jobs/{job}/cancel", headers=_auth(a), timeout=SLACK_S)
                    assert cancel.status_code == 200
    assert '"status":"queued"' in events[0] and '"status":"canceled"' in events[-1]


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(whether the server closed ``sock`` within ``seconds``, what it sent before)."""
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_half_sent_request_headers_are_cut_off(gateway):
    halves = [b"GET /api/v1/jobs HT", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1", b""]
    socks = []
    for half in halves * 10:
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=SLACK_S)
        if half:
            sock.sendall(half)
        socks.append(sock)
    try:
        results = [_closed_within(sock, HEADER_TIMEOUT_S + SLACK_S) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert all(closed for closed, _ in results), f"{sum(not c for c, _ in results)} of {len(results)} still open"
    assert all(got.startswith(b"HTTP/1.1 408") for _, got in results)
    assert b"request_timeout" in results[0][1]
    # a request on a fresh connection is served as ever
    assert httpx.get(gateway.base_url + "/healthz", timeout=SLACK_S).status_code == 200


def test_a_client_that_ignores_the_413_cannot_push_on(gateway):
    boundary = "b0undary"
    head = (f"POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Authorization: Bearer {gateway.tokens[0]}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"face_image\"; filename=\"x.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    payload = b"\xff" * (256 * 1024)
    frame = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
    sent, limit = 0, 256 * 2**20  # the cap is ~10 MiB: a client that gets past 256 MiB was not stopped
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=SLACK_S) as sock:
        sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        try:
            while sent < limit:
                sock.sendall(frame)  # never reads the answer, as the hostile client does
                sent += len(frame)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        closed, answer = _closed_within(sock, SLACK_S)
    print(f"\nchunked upload ignoring the answer: {sent / 2**20:.0f} MiB sent before the gateway closed")
    assert sent < limit and closed
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()


def test_after_the_408_of_a_stalled_body_the_connection_is_closed(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=SLACK_S) as sock:
        sock.sendall((f"POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 20}\r\n"
                      f"Authorization: Bearer {gateway.tokens[0]}\r\n"
                      "Content-Type: multipart/form-data; boundary=b\r\n\r\n").encode() + b"--b\r\n" + b"x" * 1024)
        closed, answer = _closed_within(sock, BODY_TIMEOUT_S + SLACK_S)
    assert answer.startswith(b"HTTP/1.1 408") and closed


def test_a_client_gone_mid_upload_is_one_info_line(gateway):
    log_file = gateway.log_dir / "api.log"
    start = log_file.stat().st_size

    def new_log() -> str:
        with log_file.open("rb") as fh:
            fh.seek(start)
            return fh.read().decode(errors="replace")

    with socket.create_connection(("127.0.0.1", gateway.port), timeout=SLACK_S) as sock:
        sock.sendall((f"POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 20}\r\n"
                      f"Authorization: Bearer {gateway.tokens[0]}\r\n"
                      "Content-Type: multipart/form-data; boundary=b\r\n\r\n").encode()
                     + b'--b\r\nContent-Disposition: form-data; name="face_image"; filename="x.jpg"\r\n\r\n'
                     + b"x" * 300_000)
    # the gateway notices the close while reading the body; its log says so once, calmly
    line = until(lambda: next((ln for ln in new_log().splitlines() if "disconnected" in ln), None), SLACK_S,
                 "the disconnect to be logged")
    assert "INFO" in line.upper(), line
    assert "Traceback" not in new_log() and "ERROR" not in new_log(), new_log()


@pytest.mark.parametrize("spelling", ["nan", "inf", "-inf", "NaN"])
def test_a_cursor_whose_time_is_not_a_number_is_refused(gateway, spelling):
    cursor = base64.urlsafe_b64encode(f"{spelling}:x".encode()).decode().rstrip("=")
    r = httpx.get(f"{gateway.base_url}/api/v1/jobs", params={"cursor": cursor}, headers=_auth(gateway.tokens[0]),
                  timeout=SLACK_S)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_parameter" and r.json()["error"]["field"] == "cursor"


@pytest.mark.parametrize("host", ["127.1", "0", "0x7f.0.0.1", "2130706433", "0177.0.0.1", "localhost",
                                  "LOCALHOST.", "api.localhost", "10.1"])
def test_loopback_and_private_webhook_hosts_in_any_spelling_are_refused_at_submit(gateway, host):
    r = submit(gateway.base_url, tom_jpeg(), headers=_auth(gateway.tokens[1]), webhook_url=f"http://{host}:9/hook")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "webhook_url_refused" and r.json()["error"]["field"] == "webhook_url"


def test_openapi_states_the_candidates_rule_and_the_cursor_format(gateway):
    spec = httpx.get(gateway.base_url + "/openapi.json", timeout=SLACK_S).json()
    schema = spec["paths"][SUBMIT]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    validator = jsonschema.Draft202012Validator(schema)
    photo = {"face_image": ["..."]}   # the field repeats: 1-5 photos
    assert validator.is_valid({**photo, "num_images": 2, "candidates": 2})
    assert validator.is_valid({**photo, "num_images": 1, "candidates": 8})
    assert not validator.is_valid({**photo, "num_images": 3, "candidates": 2})
    assert not validator.is_valid({**photo, "candidates": 2})  # num_images defaults to 4
    # what the schema refuses the gateway refuses, with the same field named
    r = submit(gateway.base_url, tom_jpeg(), headers=_auth(gateway.tokens[1]), num_images="3", candidates="2")
    assert r.status_code == 422 and r.json()["error"]["field"] == "candidates"
    cursor = next(p for p in spec["paths"]["/api/v1/jobs"]["get"]["parameters"] if p["name"] == "cursor")
    assert any(s.get("pattern") for s in cursor["schema"]["anyOf"]) and "base64" in cursor["description"]
