"""Load benchmark: throughput of N concurrent clients against one client, interleaved in one run.

    python bench/load.py --spawn                 # starts `atelier serve` on a free port itself
    python bench/load.py --url http://127.0.0.1:8000 --clients 8 --window 10 --rounds 3

Alternates windows of one client (sequential requests: what one user sees with the whole
machine) and of `--clients` concurrent clients, `--rounds` times each, so both see the same
machine load; the ratio of their throughputs is the concurrency figure. Also reports latency
percentiles, errors by status, the latency of `/health/live` polled during the concurrent
windows, and (with --spawn) the server's peak RSS. The server keeps its default settings
unless the environment sets ATELIER_* variables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from machine import load_average, machine_header  # noqa: E402

DEFAULT_IMAGE = ROOT / "swagger-samples" / "astronaut.jpg"


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Phase:
    """What the windows of one kind (single or concurrent) measured, summed over rounds."""

    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else float("nan")


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.image = Path(args.image).read_bytes()
        self.health: list[float] = []

    async def client(self, http: httpx.AsyncClient, phase: Phase, deadline: float) -> None:
        url = f"{self.args.url}/model/predict"
        params = {"style": self.args.style, "max_size": str(self.args.max_size)}
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = await http.post(
                    url, params=params, files={"image": ("photo.jpg", self.image, "image/jpeg")}
                )
                phase.statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    phase.latencies.append(time.perf_counter() - started)
                elif response.status_code == 503:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")) / 4)
            except httpx.HTTPError as exc:
                phase.statuses[type(exc).__name__] += 1

    async def poll_health(self, http: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await http.get(f"{self.args.url}/health/live")
            self.health.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)

    async def window(self, http: httpx.AsyncClient, phase: Phase) -> None:
        """Run `phase.clients` clients for one window; requests still in flight at the end are
        awaited and counted, and the window's time runs until the last one returns."""
        started = time.monotonic()
        deadline = started + self.args.window
        tasks = [self.client(http, phase, deadline) for _ in range(phase.clients)]
        if phase.clients > 1:
            tasks.append(self.poll_health(http, deadline))
        await asyncio.gather(*tasks)
        phase.seconds += time.monotonic() - started

    async def run(self) -> tuple[Phase, Phase]:
        single, concurrent = Phase(1), Phase(self.args.clients)
        limits = httpx.Limits(max_connections=self.args.clients + 2)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            await self.window(http, Phase(1))  # warm-up, not counted
            for _ in range(self.args.rounds):
                await self.window(http, single)
                await self.window(http, concurrent)
        return single, concurrent


def wait_ready(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become ready in {timeout:.0f} s")


def report(args: argparse.Namespace, load: Load, single: Phase, concurrent: Phase) -> None:
    settings = {
        name: os.environ.get(name, "default")
        for name in ("ATELIER_INFERENCE_WORKERS", "ATELIER_TORCH_THREADS", "ATELIER_CPU_PRECISION")
    }
    print(f"\n- server settings: {settings}")
    print(
        f"- {args.rounds} rounds of a {args.window:.0f} s window each, alternating; "
        f"max_size {args.max_size}, style {args.style}, {Path(args.image).name}"
    )
    print(f"- load average at the end: {load_average()}\n")
    print(f"| metric | 1 client | {args.clients} clients |\n|---|---|---|")
    print(f"| succeeded | {len(single.latencies)} | {len(concurrent.latencies)} |")
    print(f"| throughput (ok/s) | {single.throughput:.2f} | {concurrent.throughput:.2f} |")
    for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        a = percentile(single.latencies, fraction) * 1000
        b = percentile(concurrent.latencies, fraction) * 1000
        print(f"| predict {name} (ms) | {a:.0f} | {b:.0f} |")
    print(
        f"| responses by status | {dict(sorted(single.statuses.items()))} | "
        f"{dict(sorted(concurrent.statuses.items()))} |"
    )
    print(
        f"\n{args.clients} clients / 1 client throughput: "
        f"{concurrent.throughput / single.throughput:.2f}"
    )
    print(
        f"/health/live during the concurrent windows: {len(load.health)} polls, "
        f"p50 {percentile(load.health, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(load.health, 0.99) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--spawn", action="store_true", help="start a server on a free port")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image", default=str(DEFAULT_IMAGE))
    parser.add_argument("--style", default="starry-swirls")
    parser.add_argument("--max-size", type=int, default=512)
    args = parser.parse_args()
    print(machine_header("bench/load.py"))

    server: subprocess.Popen[bytes] | None = None
    rss = None
    with tempfile.TemporaryDirectory() as data_dir:
        if args.spawn:
            port = free_port()
            args.url = f"http://127.0.0.1:{port}"
            env = {**os.environ, "ATELIER_DATA_DIR": data_dir, "ATELIER_LOG_LEVEL": "WARNING"}
            server = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                cwd=ROOT,
                env=env,
            )
        try:
            wait_ready(args.url)
            load = Load(args)
            single, concurrent = asyncio.run(load.run())
        finally:
            if server is not None:
                rss = peak_rss_mib(server.pid)
                server.terminate()
                server.wait(timeout=30)
    report(args, load, single, concurrent)
    if rss is not None:
        print(f"server peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
