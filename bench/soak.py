"""Soak bench: steady mixed load on the whole local service for a long while, sampling what could
leak. Real Valkey + SeaweedFS on loopback, the gateway (``idbody api``), a GPU-queue worker (tiny
profile) and an io worker with beat; halfway through the GPU worker is restarted.

    python -m bench.soak [--minutes 30] [--submit-every-s 3] [--status-per-s 2]

The load: a submit every ``--submit-every-s`` (a 64×64, 2-step tiny job), an event stream opened on
each accepted job and read to its end (a stream that ends before its job is recorded: how long it
was open, the last status it sent, how it ended; then it is opened again, as a client would),
every 5th job canceled right after its submit, status GETs of recent jobs at ``--status-per-s``. Each minute: gateway and worker RSS (their whole process
groups), Valkey memory and key count, open fds, files in the stack's temp folder. At the end the
load stops, every accepted job must end, and the keys without an expiry and the temp files left are
listed. Prints a table and writes bench/results/soak.json (rewritten after every sample, so a run
cut short keeps what it measured).

Goal: flat memory (RSS slope after warm-up near 0 MB/min), 0 leaked keys or temp files, every
accepted job ended.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.gateway import EXAMPLE_FACE, SUBMIT
from idbody.stack.servers import SeaweedS3Server, ValkeyServer, stop_process_groups
from idbody.stack.service import ServiceStack, stack_settings
from shared.storage import Storage

FIELDS = {"body_type": "athletic", "height_cm": "170", "weight_kg": "65", "gender": "female", "num_images": "1",
          "width": "64", "height": "64", "num_inference_steps": "2"}
FINISHED = ("succeeded", "failed", "canceled")
# keys that live as long as the service by design (Celery's queue bindings and queues, the queue
# order, the retention sweep's index, counters): not counted as leaked when they have no expiry;
# their sizes are reported at the end instead, so one that grows without bound still shows
LONG_LIVED_PREFIXES = ("_kombu.", "unacked", "gpu", "io", "celery", "jobs:", "retention:", "stats:")


def group_usage(pgid: int) -> dict:
    """RSS (MB) and open fds summed over a process group (a server and its children)."""
    rss_pages, fds, procs = 0, 0, 0
    page_kb = os.sysconf("SC_PAGE_SIZE") / 1024
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the name: state, ppid, pgrp, ...
                continue
            rss_pages += int(Path(entry.path, "statm").read_text().split()[1])
            fds += len(os.listdir(Path(entry.path, "fd")))
            procs += 1
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return {"rss_mb": round(rss_pages * page_kb / 1024, 1), "fds": fds, "processes": procs}


def temp_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (minute, value) points; None with fewer than 3."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    den = sum((p[0] - mx) ** 2 for p in points)
    return round(sum((p[0] - mx) * (p[1] - my) for p in points) / den, 3) if den else None


class Soak:
    def __init__(self, stack: ServiceStack, valkey_client, tmpdir: Path, args: argparse.Namespace) -> None:
        self.stack, self.valkey, self.tmpdir, self.args = stack, valkey_client, tmpdir, args
        self.base = stack.base_url
        self.face = EXAMPLE_FACE.read_bytes()
        self.accepted: list[str] = []
        self.streams_unfinished: list[dict] = []  # streams that ended before their job did
        self.streams_until = float("inf")  # no stream is opened again after the drain
        self.counts = {"submits": 0, "accepted": 0, "refused": 0, "cancels": 0, "status_gets": 0,
                       "streams_opened": 0, "streams_refused": 0, "streams_ended_finished": 0, "stream_errors": 0,
                       "streams_reopened": 0, "http_errors": 0}
        self.open_streams = 0
        self.samples: list[dict] = []
        self.started = time.monotonic()
        self.gpu_worker = "gpu0"
        self.restarts: list[float] = []
        self.temp_at_start = temp_files(tmpdir)

    def minute(self) -> float:
        return round((time.monotonic() - self.started) / 60, 2)

    def sample(self) -> dict:
        info = self.valkey.info("memory")
        row = {
            "minute": self.minute(),
            "gateway": group_usage(self.stack.procs["api"].pid),
            "gpu_worker": group_usage(self.stack.procs[self.gpu_worker].pid),
            "io_worker": group_usage(self.stack.procs["io0"].pid),
            "valkey_used_mb": round(info["used_memory"] / 2**20, 2), "valkey_keys": self.valkey.dbsize(),
            "temp_files": temp_files(self.tmpdir), "open_streams": self.open_streams, **self.counts,
        }
        self.samples.append(row)
        return row

    async def submit_loop(self, client: httpx.AsyncClient, until: float) -> None:
        streams: set[asyncio.Task] = set()
        for n in itertools.count():
            if time.monotonic() >= until:
                break
            self.counts["submits"] += 1
            try:
                resp = await client.post(self.base + SUBMIT, data=FIELDS,
                                         files={"face_image": ("f.jpg", self.face, "image/jpeg")})
            except httpx.HTTPError:
                self.counts["http_errors"] += 1
                resp = None
            if resp is not None and resp.status_code == 202:
                rid = resp.json()["request_id"]
                self.accepted.append(rid)
                self.counts["accepted"] += 1
                task = asyncio.create_task(self.stream(client, rid))
                streams.add(task)
                task.add_done_callback(streams.discard)
                if n % 5 == 4:
                    cancel = await client.post(f"{self.base}/api/v1/jobs/{rid}/cancel")
                    self.counts["cancels"] += cancel.status_code == 200
            elif resp is not None:
                self.counts["refused"] += 1
            await asyncio.sleep(self.args.submit_every_s)
        await asyncio.gather(*streams, return_exceptions=True)

    async def stream(self, client: httpx.AsyncClient, rid: str) -> None:
        """Read the job's event stream to its end; a stream that ends before its job did is
        recorded (how long it was open, the last status it sent, how it ended) and opened again,
        as the API asks of a client."""
        self.counts["streams_opened"] += 1
        self.open_streams += 1
        try:
            while True:
                opened, last, events, how = time.monotonic(), "", 0, "closed by the server"
                try:
                    async with client.stream("GET", f"{self.base}/api/v1/jobs/{rid}/events", timeout=None) as resp:
                        if resp.status_code != 200:  # past a stream cap: a client would poll instead
                            self.counts["streams_refused"] += 1
                            self.streams_unfinished.append({"id": rid, "minute": self.minute(),
                                                            "refused": resp.status_code})
                            return
                        async for line in resp.aiter_lines():
                            if line.startswith("data: "):
                                last, events = line, events + 1
                except httpx.HTTPError as exc:
                    self.counts["stream_errors"] += 1
                    how = f"{type(exc).__name__}: {exc}"
                if any(f'"status":"{s}"' in last for s in FINISHED):
                    self.counts["streams_ended_finished"] += 1
                    return
                self.streams_unfinished.append({
                    "id": rid, "minute": self.minute(), "open_s": round(time.monotonic() - opened, 1),
                    "events": events, "last_status": json.loads(last[6:]).get("status") if last else None,
                    "ended": how})
                if time.monotonic() >= self.streams_until:
                    return
                self.counts["streams_reopened"] += 1
                await asyncio.sleep(1)
        finally:
            self.open_streams -= 1

    async def status_loop(self, client: httpx.AsyncClient, until: float) -> None:
        while time.monotonic() < until:
            if self.accepted:
                rid = random.choice(self.accepted[-20:])
                try:
                    resp = await client.get(f"{self.base}/api/v1/jobs/{rid}")
                    self.counts["status_gets"] += 1
                    self.counts["http_errors"] += resp.status_code != 200
                except httpx.HTTPError:
                    self.counts["http_errors"] += 1
            await asyncio.sleep(1 / self.args.status_per_s)

    async def sample_loop(self, until: float) -> None:
        restart_at = self.started + self.args.minutes * 30  # halfway
        while time.monotonic() < until:
            await asyncio.sleep(min(60.0, max(0.0, until - time.monotonic()), self.args.sample_every_s))
            print(json.dumps(await asyncio.to_thread(self.sample)), flush=True)
            self.write()
            if not self.restarts and time.monotonic() >= restart_at:
                await asyncio.to_thread(self.restart_worker)

    def restart_worker(self) -> None:
        """Stop the GPU worker (SIGTERM: Celery finishes its task) and start another."""
        stop_process_groups([self.stack.procs[self.gpu_worker]])
        self.gpu_worker = f"gpu{len(self.restarts) + 1}"
        self.stack.start_worker(self.gpu_worker)
        self.restarts.append(self.minute())

    async def run(self) -> None:
        until = self.started + self.args.minutes * 60
        self.streams_until = until + self.args.drain_s
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=20)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            await asyncio.gather(self.submit_loop(client, until), self.status_loop(client, until),
                                 self.sample_loop(until))
            await self.drain(client)

    async def drain(self, client: httpx.AsyncClient) -> None:
        """Every accepted job must end; then the end state is sampled."""
        deadline = time.monotonic() + self.args.drain_s
        unfinished = list(self.accepted)
        while unfinished and time.monotonic() < deadline:
            still = []
            for rid in unfinished:
                resp = await client.get(f"{self.base}/api/v1/jobs/{rid}")
                if resp.status_code != 200 or resp.json()["status"] not in FINISHED:
                    still.append(rid)
            unfinished = still
            if unfinished:
                await asyncio.sleep(2)
        self.unfinished = unfinished

    def end_state(self) -> dict:
        final = self.sample()
        no_expiry = [k.decode() for k in self.valkey.scan_iter(count=1000) if self.valkey.ttl(k) == -1]
        leaked = [k for k in no_expiry if not k.startswith(LONG_LIVED_PREFIXES)]
        sizes = {k: self.valkey.memory_usage(k) for k in no_expiry}
        warm = [s for s in self.samples[:-1] if s["minute"] >= self.args.warmup_minutes]

        def slope(pick) -> float | None:
            return slope_per_min([(s["minute"], pick(s)) for s in warm])

        return {
            "final": final, "accepted_jobs_unfinished": len(self.unfinished), "unfinished_ids": self.unfinished[:20],
            "keys_without_expiry_bytes": dict(sorted(sizes.items())), "leaked_keys": leaked,
            "streams_ended_before_their_job": self.streams_unfinished,
            "temp_files_at_start": self.temp_at_start, "temp_files_at_end": sorted(
                str(Path(root, f).relative_to(self.tmpdir)) for root, _, files in os.walk(self.tmpdir) for f in files),
            "slopes_per_min_after_warmup": {
                "gateway_rss_mb": slope(lambda s: s["gateway"]["rss_mb"]),
                "io_worker_rss_mb": slope(lambda s: s["io_worker"]["rss_mb"]),
                "valkey_used_mb": slope(lambda s: s["valkey_used_mb"]),
                "gateway_fds": slope(lambda s: s["gateway"]["fds"]),
            },
            "worker_restarts_at_minute": self.restarts,
        }

    def write(self, end: dict | None = None) -> None:
        report = {
            "machine": f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "load_average_now": [round(x, 2) for x in os.getloadavg()],
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()},
            "samples": self.samples, "end": end,
        }
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        self.args.out.write_text(json.dumps(report, indent=2))


def print_table(soak: Soak, end: dict) -> None:
    print(f"\n{'min':>6}{'gw MB':>8}{'gw fds':>8}{'gpu MB':>8}{'io MB':>8}{'vk MB':>8}{'keys':>7}{'tmp':>5}"
          f"{'streams':>8}{'accepted':>9}")
    for s in soak.samples:
        print(f"{s['minute']:>6}{s['gateway']['rss_mb']:>8}{s['gateway']['fds']:>8}{s['gpu_worker']['rss_mb']:>8}"
              f"{s['io_worker']['rss_mb']:>8}{s['valkey_used_mb']:>8}{s['valkey_keys']:>7}{s['temp_files']:>5}"
              f"{s['open_streams']:>8}{s['accepted']:>9}")
    print("\nslopes after warm-up (per minute):", end["slopes_per_min_after_warmup"])
    early = [s for s in end["streams_ended_before_their_job"] if "refused" not in s]
    print(f"streams: {soak.counts['streams_opened']} opened, {soak.counts['streams_ended_finished']} saw their job end, "
          f"{len(early)} ended before their job (then opened again): "
          f"{sorted({(s['last_status'], s['ended'], s['open_s'] >= 590) for s in early})}")
    print(f"accepted jobs not ended: {end['accepted_jobs_unfinished']}; leaked keys: {end['leaked_keys']}; "
          f"temp files: {end['temp_files_at_start']} at start, {end['final']['temp_files']} at end; worker restarted at minute {end['worker_restarts_at_minute']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs")
    parser.add_argument("--submit-every-s", type=float, default=3.0, help="seconds between submits")
    parser.add_argument("--status-per-s", type=float, default=2.0, help="status GETs per second")
    parser.add_argument("--sample-every-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="samples before this are left out of the slopes")
    parser.add_argument("--drain-s", type=float, default=300.0, help="how long accepted jobs may take to end after the load")
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="idbody-soak-") as tmp:
        tmp = Path(tmp)
        stack_tmp = tmp / "tmp"
        stack_tmp.mkdir()
        with ValkeyServer.start(tmp / "valkey") as valkey, SeaweedS3Server.start(tmp / "s3") as s3:
            settings = stack_settings(
                valkey, s3, 0, "soak", auth_disabled=True, model_profile="tiny", device="cpu",
                tiny_model_dir=Path(".cache/tiny-models").resolve(), log_level="WARNING",
                # records must outlive the run: the end check reads every accepted job's status
                job_retention_s=max(3600, int(args.minutes * 60 + args.drain_s) * 2),
            )
            Storage.from_settings(settings).ensure_buckets()
            os.environ["TMPDIR"] = str(stack_tmp)  # the stack's processes inherit it: their temp files land there
            with ServiceStack(settings, tmp / "logs") as stack:
                stack.start_gateway()
                stack.start_worker("gpu0")
                stack.start_worker("io0", queue="io", beat=True)
                stack.wait_ready(timeout_s=600)
                import redis

                soak = Soak(stack, redis.Redis.from_url(valkey.url), stack_tmp, args)
                print(json.dumps(soak.sample()), flush=True)
                asyncio.run(soak.run())
                end = soak.end_state()
                soak.write(end)
                print_table(soak, end)
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
