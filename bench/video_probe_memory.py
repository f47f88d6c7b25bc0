"""Resident memory of a real server probing hostile clips: small H.264 MP4s (a few hundred KB)
that declare 16000x16000 or 8192x8192 frames, posted at once to `POST /jobs/video`.

A clip "declares" its size either in the MP4 sample entry and the H.264 header both, or in the
H.264 header only (the container says 320x240: the size is learned only by decoding). Each
scenario spawns `atelier serve` on a free port with a throwaway data dir and no job worker,
samples the server's RSS from /proc while the uploads run, and prints the baseline, the peak,
the growth and the answers.

    .venv/bin/python bench/video_probe_memory.py [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine_header  # noqa: E402
from upload_memory import free_port, rss_bytes  # noqa: E402

from app.video.hostile import write_declaring  # noqa: E402

# name: (clips as (side, declared by the container too), concurrent uploads, rounds)
SCENARIOS: dict[str, tuple[list[tuple[int, bool]], int, int]] = {
    "one-16000": ([(16000, True)], 1, 1),
    "four-16000": ([(16000, True)] * 4, 4, 1),
    "four-16000-bitstream": ([(16000, False)] * 4, 4, 1),
    "eight-8192-bitstream": ([(8192, False)] * 8, 8, 1),
    "mix": ([(16000, True), (16000, False), (8192, False), (8192, True)] * 2, 8, 3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    print(machine_header("bench/video_probe_memory.py"))
    with tempfile.TemporaryDirectory() as folder:
        clips = _clips(Path(folder))
        for name in args.scenario or list(SCENARIOS):
            uploads, concurrent, rounds = SCENARIOS[name]
            data = [clips[upload] for upload in uploads] * rounds
            _scenario(name, data, concurrent)


def _clips(folder: Path) -> dict[tuple[int, bool], bytes]:
    clips = {}
    for side in (16000, 8192):
        for container in (True, False):
            path = folder / f"{side}-{container}.mp4"
            write_declaring(path, side, side, container=container)
            clips[(side, container)] = path.read_bytes()
    sizes = {
        f"{side}{'' if c else ' (bitstream)'}": len(b) // 1024 for (side, c), b in clips.items()
    }
    print(f"clip sizes, KB: {sizes}")
    return clips


def _scenario(name: str, uploads: list[bytes], concurrent: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "ATELIER_DATA_DIR": data,
            "ATELIER_EMBEDDED_WORKER": "false",
            "ATELIER_JOB_MAX_QUEUED_PER_CLIENT": "1000",
            "ATELIER_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            _measure(name, server.pid, f"http://127.0.0.1:{port}", uploads, concurrent)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _measure(name: str, pid: int, url: str, uploads: list[bytes], concurrent: int) -> None:
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("server did not become ready")
        time.sleep(0.5)
    time.sleep(1.0)
    baseline = peak = rss_bytes(pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.01)

    def submit(clip: bytes) -> str:
        with httpx.Client(timeout=300) as client:
            response = client.post(f"{url}/jobs/video", files={"video": ("c.mp4", clip)})
        code = response.json().get("code", "") if response.status_code >= 400 else ""
        return f"{response.status_code} {code}".strip()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(concurrent) as pool:
        answers = Counter(pool.map(submit, uploads))
    time.sleep(0.5)
    stop.set()
    sampler.join()
    after = rss_bytes(pid)
    mib = 1024**2
    print(
        f"{name}: {len(uploads)} uploads, {concurrent} at once: {dict(answers)}; RSS baseline "
        f"{baseline / mib:.0f} MiB, peak +{(peak - baseline) / mib:.0f} MiB, "
        f"after +{(after - baseline) / mib:.0f} MiB"
    )


if __name__ == "__main__":
    main()
