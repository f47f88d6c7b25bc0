"""Resident memory of a real server under the issue's upload load: 4 concurrent `POST /jobs`,
each with five 7000x7000 single-colour PNGs (about 160 KB each on the wire, 147 MB decoded).

Spawns `atelier serve` on a free port with a throwaway data dir (no job worker, so only the
uploads cost memory), samples its RSS from /proc while the submissions run, and prints the
baseline, the peak and the growth, plus how many submissions got 503 `busy`.

    .venv/bin/python bench/upload_memory.py [--budget PIXELS] [--rounds N]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIDE = 7000
CLIENTS = 4
IMAGES_PER_JOB = 5


def single_colour_png(side: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (shade, 90, 200)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, help="ATELIER_DECODE_BUDGET_PIXELS for the server")
    parser.add_argument("--rounds", type=int, default=3, help="times the 4 submissions repeat")
    args = parser.parse_args()
    images = [single_colour_png(SIDE, 40 + 30 * i) for i in range(IMAGES_PER_JOB)]
    print(f"{IMAGES_PER_JOB} PNGs of {SIDE}x{SIDE}: {[len(b) // 1024 for b in images]} KB")
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "ATELIER_DATA_DIR": data,
            "ATELIER_PORT": str(port),
            "ATELIER_EMBEDDED_WORKER": "false",
            "ATELIER_JOB_MAX_QUEUED_PER_CLIENT": "1000",
            "ATELIER_LOG_LEVEL": "WARNING",
        }
        if args.budget:
            env["ATELIER_DECODE_BUDGET_PIXELS"] = str(args.budget)
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=REPO, env=env
        )
        try:
            run(server.pid, f"http://127.0.0.1:{port}", images, args.rounds)
        finally:
            server.terminate()
            server.wait(timeout=30)


def run(pid: int, url: str, images: list[bytes], rounds: int) -> None:
    with httpx.Client(timeout=120) as client:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get(f"{url}/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not become ready")
            time.sleep(0.5)
    time.sleep(1.0)
    baseline = rss_bytes(pid)
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.02)

    def submit(_: int) -> int:
        files = [("content", ("c.png", images[0], "image/png"))]
        files += [("style", (f"s{i}.png", data, "image/png")) for i, data in enumerate(images[1:])]
        with httpx.Client(timeout=300) as client:
            response = client.post(
                f"{url}/jobs", files=files, data={"iterations": "10", "size": "512"}
            )
        return response.status_code

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    statuses: list[int] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for _ in range(rounds):
            statuses += list(pool.map(submit, range(CLIENTS)))
    took = time.perf_counter() - started
    stop.set()
    sampler.join()
    after = rss_bytes(pid)
    gib = 1024**3
    print(f"statuses: {sorted(statuses)} in {took:.1f} s")
    print(
        f"RSS baseline {baseline / gib:.2f} GiB, peak {peak / gib:.2f} GiB "
        f"(+{(peak - baseline) / gib:.2f} GiB), after {after / gib:.2f} GiB"
    )


if __name__ == "__main__":
    main()
