"""Resident memory of a real server over repeated 1024 px predictions, per allocator setting.

Each variant is a fresh `atelier serve` (throwaway data dir, no job worker) given one set of
environment variables. After readiness and one warm-up request, it serves `--requests`
predictions of a real photo at max_size 1024 (JPEG in and out); RSS is read from /proc before,
after the requests, and after a few idle seconds. The variants separate where memory goes:
the CPU precision path (OpenVINO bf16 vs onnxruntime fp32), the heap's policy (freed memory
kept for reuse, the default, or returned: ATELIER_KEEP_FREED_MEMORY), and onnxruntime's own
arena (ATELIER_CPU_SHRINK_ARENA).

    .venv/bin/python bench/predict_memory.py [--requests 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from machine import machine_header
from upload_memory import free_port, rss_bytes

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "images" / "photos" / "tubingen.jpg"
VARIANTS: dict[str, dict[str, str]] = {
    "default (auto precision)": {},
    "fp32 onnxruntime": {"ATELIER_CPU_PRECISION": "fp32"},
    "default, freed memory returned": {"ATELIER_KEEP_FREED_MEMORY": "false"},
    "fp32 onnxruntime, freed memory returned": {
        "ATELIER_CPU_PRECISION": "fp32",
        "ATELIER_KEEP_FREED_MEMORY": "false",
    },
    "fp32 onnxruntime, ATELIER_CPU_SHRINK_ARENA": {
        "ATELIER_CPU_PRECISION": "fp32",
        "ATELIER_CPU_SHRINK_ARENA": "true",
    },
}


def mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def measure(extra: dict[str, str], requests: int) -> tuple[int, int, int]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ, **extra, "ATELIER_DATA_DIR": data, "ATELIER_PORT": str(port),
            "ATELIER_EMBEDDED_WORKER": "false", "ATELIER_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        (Path(data) / "cache").symlink_to(REPO / "data" / "cache", target_is_directory=True)
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=REPO, env=env
        )
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                deadline = time.monotonic() + 300
                while True:
                    try:
                        if client.get("/health/ready").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("server never became ready")
                    time.sleep(0.5)
                photo = PHOTO.read_bytes()

                def predict() -> None:
                    response = client.post(
                        "/model/predict?style=starry-swirls&max_size=1024",
                        files={"image": ("photo.jpg", photo, "image/jpeg")},
                    )
                    response.raise_for_status()

                predict()
                before = rss_bytes(server.pid)
                for _ in range(requests):
                    predict()
                after = rss_bytes(server.pid)
                time.sleep(5)
                idle = rss_bytes(server.pid)
            return before, after, idle
        finally:
            server.terminate()
            server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    print(machine_header("bench/predict_memory.py"))
    print(f"- {args.requests} predictions of {PHOTO.name} at max_size 1024, one at a time\n")
    print("| variant | RSS after warm-up (MiB) | after the requests | 5 s later | growth |")
    print("|---|---|---|---|---|")
    for label in args.variants:
        before, after, idle = measure(VARIANTS[label], args.requests)
        print(f"| {label} | {mib(before)} | {mib(after)} | {mib(idle)} | "
              f"{mib(idle - before)} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
