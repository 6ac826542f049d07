"""Gateway bench on loopback: real Valkey + SeaweedFS (started here), the real gateway (one uvicorn
process, ``idbody api``), and a real Celery GPU-queue worker (tiny profile) for the enqueue→start
delay. Prints a table and writes bench/results/gateway.json.

    python -m bench.gateway [--seconds 8] [--max-requests 1500] [--probes 20] [--api-workers 2] [--status-clients 8]
                            [--streams 1000,5000] [--max-streams 2000]

The stream phase (bench.stream_load) holds 1,000 and 5,000 event streams open and times status GETs
and submits against the same calls with none open.

Targets (2-core machine): >= 300 submits/s, p99 < 50 ms at 8 clients, status >= 2,000/s,
enqueue→start < 20 ms; with 1,000 streams open status GET median <= 50 ms and submit <= 2x idle.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

from bench.cpu_account import CpuAccount
from bench.raw_http import RawConnection
from bench.stream_load import bench_streams, print_streams
from idbody.stack.servers import SeaweedS3Server, ValkeyServer
from idbody.stack.service import ServiceStack
from shared.jobs.store import JobStore
from shared.settings import Settings
from shared.storage import Storage

# the shipped example photo (public domain; the web page's tests use it too): a real face the tiny
# profile's dlib analyzer finds
EXAMPLE_FACE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "face.jpg"

SUBMIT = "/api/v1/generate-identity-body"
FIELDS = {"body_type": "athletic", "height_cm": "170", "weight_kg": "65", "gender": "female", "num_images": "1"}
TARGETS = {"submit_rps": 300, "submit_p99_ms_at_8": 50, "status_rps": 2000, "enqueue_to_start_ms": 20}


def jpeg_of_size(target_bytes: int = 512 * 1024) -> bytes:
    """A photo-like JPEG (smooth gradient plus mild sensor-like noise) of about ``target_bytes``; at
    quality 90 that is about 1.5 megapixels, like a phone photo scaled down by a messaging app."""
    rng = np.random.default_rng(0)
    side = 256
    while True:
        y, x = np.mgrid[0:side, 0:side]
        base = np.stack([(x * 255 / side), (y * 255 / side), ((x + y) * 127 / side)], axis=-1)
        noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
        if buf.tell() >= target_bytes:
            return buf.getvalue()
        side = int(side * (target_bytes / buf.tell()) ** 0.5) + 8


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def load(make_request, clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` loops issuing requests until the count or time bound; latency per request."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one_client() -> None:
            nonlocal issued, errors
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                t0 = time.perf_counter()
                resp = await make_request(client)
                latencies.append(time.perf_counter() - t0)
                if resp.status_code >= 300 and resp.status_code != 202:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return phase_row(clients, latencies, errors, elapsed)


def phase_row(clients: int, latencies: list[float], errors: int, elapsed: float) -> dict:
    """One table row: request count and rate, errors, p50 and p99 latency."""
    return {
        "clients": clients, "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2), "p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }


def bench_submits(base: str, image: bytes, clients: int, seconds: float, max_requests: int, ids: list[str],
                  gateway_pgid: int) -> dict:
    async def submit(client: httpx.AsyncClient) -> httpx.Response:
        resp = await client.post(base + SUBMIT, data=FIELDS, files={"face_image": ("p.jpg", image, "image/jpeg")})
        if resp.status_code == 202:
            ids.append(resp.json()["request_id"])
        return resp

    return _accounted(load(submit, clients, seconds, max_requests), gateway_pgid)


def bench_status(base: str, ids: list[str], clients: int, seconds: float, max_requests: int, gateway_pgid: int) -> dict:
    counter = iter(range(10**9))

    async def status(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(f"{base}/api/v1/jobs/{ids[next(counter) % len(ids)]}")

    return _accounted(load(status, clients, seconds, max_requests), gateway_pgid)


def bench_status_raw(base: str, ids: list[str], clients: int, seconds: float, max_requests: int, gateway_pgid: int) -> dict:
    """The status phase again with bench.raw_http's client, which spends a fraction of httpx's CPU
    per GET, so the cores left to the gateway are not taken by the load generator."""
    url = urlsplit(base)
    counter = iter(range(10**9))

    async def phase() -> dict:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal errors
            async with await RawConnection.open(url.hostname, url.port) as conn:
                while len(latencies) < max_requests and time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    status, _ = await conn.get(f"/api/v1/jobs/{ids[next(counter) % len(ids)]}")
                    latencies.append(time.perf_counter() - t0)
                    errors += status != 200

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return phase_row(clients, latencies, errors, time.perf_counter() - started)

    return _accounted(phase(), gateway_pgid)


def _accounted(phase, gateway_pgid: int) -> dict:
    """Run one load phase and add where its CPU went (see bench.cpu_account)."""
    meter = CpuAccount(gateway_pgid)
    row = asyncio.run(phase)
    row["cpu"] = meter.per_request(row["requests"])
    return row


def bench_enqueue_to_start(stack: ServiceStack, store: JobStore, probes: int) -> dict:
    """Sequential tiny jobs on an idle worker: record created_at (gateway) → started_at (worker).
    ``created_at`` is stamped after the upload is stored and before the record is written and the
    task enqueued, so this slightly over-counts enqueue → task start (one Redis write more)."""
    face = EXAMPLE_FACE.read_bytes()
    delays = []
    fields = {**FIELDS, "width": "64", "height": "64", "num_inference_steps": "1"}
    for _ in range(probes):
        resp = httpx.post(stack.base_url + SUBMIT, data=fields, files={"face_image": ("f.jpg", face, "image/jpeg")},
                          headers={"Prefer": "wait=60"}, timeout=90)
        record = store.get(resp.json()["request_id"])
        if record is not None and record.started_at:
            delays.append(record.started_at - record.created_at)
        # the answer comes when the record finishes; give the worker a moment to ack and go back
        # to waiting on the queue, so every probe meets an idle worker
        time.sleep(0.2)
    # the first job after start pays one-time costs (the gateway's first publish opens its broker
    # connection): reported apart from the steady-state numbers
    cold, delays = delays[0], delays[1:]
    return {
        "probes": len(delays), "first_job_ms": round(cold * 1000, 2),
        "p50_ms": round(percentile(delays, 50) * 1000, 2), "p99_ms": round(percentile(delays, 99) * 1000, 2),
        "max_ms": round(max(delays) * 1000, 2), "delays_ms": [round(d * 1000, 2) for d in delays],
    }


def print_table(report: dict) -> None:
    print(f"\ngateway bench — {report['machine']}")
    print(f"machine: {report['cpus']} cores, load average (1/5/15 min) before {report['load_average_before']}, "
          f"after {report['load_average_after']}; gateway processes: {report['api_workers']}")
    print(f"{'what':<28}{'clients':>8}{'requests':>10}{'errors':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    label = f"submit ({report['image_bytes'] // 1024} KB JPEG)"
    for row in report["submit"]:
        print(f"{label:<28}{row['clients']:>8}{row['requests']:>10}{row['errors']:>8}"
              f"{row['rps']:>10}{row['p50_ms']:>10}{row['p99_ms']:>10}")
    s, raw = report["status"], report["status_raw"]
    print(f"{'status GET (httpx client)':<28}{s['clients']:>8}{s['requests']:>10}{s['errors']:>8}{s['rps']:>10}{s['p50_ms']:>10}{s['p99_ms']:>10}")
    print(f"{'status GET (raw client)':<28}{raw['clients']:>8}{raw['requests']:>10}{raw['errors']:>8}{raw['rps']:>10}{raw['p50_ms']:>10}{raw['p99_ms']:>10}")
    e = report["enqueue_to_start"]
    print(f"{'enqueue→task start (idle)':<28}{'1':>8}{e['probes']:>10}{'':>8}{'':>10}{e['p50_ms']:>10}{e['p99_ms']:>10}")
    print(f"\nCPU per request (ms; other = Valkey, SeaweedFS, the OS and anything else running) and the rate at which {report['cpus']} cores are full")
    print(f"{'what':<28}{'clients':>8}{'gateway':>10}{'client':>10}{'other':>10}{'total':>10}{'busy':>8}{'ceiling/s':>11}")
    for what, row in [(label, r) for r in report["submit"]] + [("status GET (httpx client)", s), ("status GET (raw client)", raw)]:
        c = row["cpu"]
        print(f"{what:<28}{row['clients']:>8}{c['gateway_ms']:>10}{c['client_ms']:>10}{c['other_ms']:>10}"
              f"{c['total_ms']:>10}{c['cpu_utilisation']:>8}{c['ceiling_rps']:>11}")
    print("\ntargets:", ", ".join(f"{k} {'≥' if 'rps' in k else '<'} {v}: {'met' if report['met'][k] else 'MISSED'}"
                                  for k, v in TARGETS.items()))


def verdicts(report: dict) -> dict[str, bool]:
    by_clients = {row["clients"]: row for row in report["submit"]}
    return {
        "submit_rps": max(r["rps"] for r in report["submit"]) >= TARGETS["submit_rps"],
        "submit_p99_ms_at_8": by_clients[8]["p99_ms"] < TARGETS["submit_p99_ms_at_8"],
        "status_rps": max(report["status"]["rps"], report["status_raw"]["rps"]) >= TARGETS["status_rps"],
        "enqueue_to_start_ms": report["enqueue_to_start"]["p50_ms"] < TARGETS["enqueue_to_start_ms"],  # nan: False
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="time bound per load level")
    parser.add_argument("--max-requests", type=int, default=1500, help="count bound per load level")
    parser.add_argument("--probes", type=int, default=20, help="enqueue→start probes")
    parser.add_argument("--image-kb", type=int, default=512, help="size of the submitted JPEG")
    parser.add_argument("--status-clients", type=int, default=8, help="concurrent connections in the status phases")
    parser.add_argument("--api-workers", type=int, default=1, help="gateway processes (idbody api --workers)")
    parser.add_argument("--streams", default="1000,5000", help="open-stream counts of the stream phase ('' skips it)")
    parser.add_argument("--max-streams", type=int, default=Settings.model_fields["max_streams_per_process"].default,
                        help="the gateway's max_streams_per_process")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gateway.json"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="idbody-bench-") as tmp:
        tmp = Path(tmp)
        with ValkeyServer.start(tmp / "valkey") as valkey, SeaweedS3Server.start(tmp / "s3") as s3:
            settings = Settings(
                _env_file=None, redis_url=valkey.url, s3_endpoint_url=s3.endpoint_url,
                s3_access_key=s3.access_key, s3_secret_key=s3.secret_key, auth_disabled=True,
                model_profile="tiny", device="cpu", tiny_model_dir=Path(".cache/tiny-models").resolve(),
                s3_bucket_uploads=f"bench-up-{uuid.uuid4().hex[:6]}", s3_bucket_results=f"bench-res-{uuid.uuid4().hex[:6]}",
                log_level="WARNING", max_streams_per_process=args.max_streams,
                max_streams_per_key=100_000,  # auth is off: every stream counts against one "key"
            )
            Storage.from_settings(settings).ensure_buckets()
            store = JobStore.from_settings(settings)
            with ServiceStack(settings, tmp / "logs") as stack:
                stack.start_gateway(workers=args.api_workers)
                stack.wait_healthy()
                image = jpeg_of_size(args.image_kb * 1024)
                ids: list[str] = []
                pgid = stack.procs["api"].pid  # started in its own session: its pid is the group id
                submit = [bench_submits(stack.base_url, image, c, args.seconds, args.max_requests, ids, pgid) for c in (1, 8, 64)]
                status = bench_status(stack.base_url, ids, args.status_clients, args.seconds, args.max_requests * 4, pgid)
                status_raw = bench_status_raw(stack.base_url, ids, args.status_clients, args.seconds, args.max_requests * 10, pgid)
                counts = tuple(int(c) for c in args.streams.split(",") if c.strip())
                streams = bench_streams(stack.base_url, ids, image, counts) if counts else []
                enqueue = {"probes": 0, "first_job_ms": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
                if args.probes > 0:
                    # queued bench jobs would keep the worker busy: drop them before it starts
                    store.client.delete("gpu")
                    stack.start_worker("bench-gpu0")
                    stack.wait_ready(timeout_s=300)
                    enqueue = bench_enqueue_to_start(stack, store, args.probes)
    report = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        # the machine may be shared: a load average above the CPU count means the numbers are low
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(), "api_workers": args.api_workers,
        "image_bytes": len(image), "image_pixels": list(Image.open(io.BytesIO(image)).size), "submit": submit, "status": status, "status_raw": status_raw, "enqueue_to_start": enqueue,
        "streams": streams, "max_streams_per_process": args.max_streams,
        "targets": TARGETS,
    }
    report["met"] = verdicts(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    if streams:
        print_streams(streams)
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
