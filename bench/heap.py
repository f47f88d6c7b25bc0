"""Freed memory kept in the heap (`app/core/heap.py`) against glibc's defaults.

Each workload runs `--runs` times in one process (as a service handles request after
request), once per heap policy, in fresh processes, the policies' order alternating between
rounds so load drifts hit both alike:

- `predict:MP`: the instant path (decode a JPEG upload, stylize, encode PNG) at MP megapixels
  with the service's defaults (OpenVINO bf16 where the CPU has fast bf16, else onnxruntime
  fp32; whole below ATELIER_TILE_SIZE^2, bands above);
- `predict:MP:whole`: the same, never tiled; `predict:MP:whole:torch`: on the eager torch
  backend (`ATELIER_CPU_BACKEND=torch`);
- `gatys:SIZE`: a Gatys job of `--gatys-iterations` L-BFGS evaluations at SIZE px (VGG-16,
  forward and backward through torch);
- `train:CROP`: `--train-steps` fast-style training steps of batch 4 at CROP px crops (the
  in-box recipe's loss network and precision).

Per run: wall seconds, the process's user and system CPU seconds, minor page faults; per
process: the peak resident set and the resident set after the last run. The first run of a
process grows its heap, so it is reported apart from the median of the later ones.

    nice -n 5 .venv/bin/python bench/heap.py [--workloads predict:1,predict:6,...] [--runs 3]
        [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from machine import machine_header
from PIL import Image
from print_size import CACHE, REPO, RESULTS, SHARED, make_upload, status_bytes, style_runner

from app.core.heap import heap_environ

POLICIES = ("glibc defaults", "kept")
Run = Callable[[], object]  # one run of a workload
PAINTING = SHARED / "images" / "paintings" / "starry_night.jpg"
PHOTO = SHARED / "images" / "photos" / "tubingen.jpg"


def workload(spec: str, threads: int, gatys_iterations: int, train_steps: int) -> Run:
    """A callable that does one run of `spec`, prepared (networks loaded and warmed small)."""
    import torch

    torch.set_num_threads(threads)
    kind, _, arg = spec.partition(":")
    if kind == "predict":
        return _predict(arg, threads)
    if kind == "gatys":
        return _gatys(int(arg), gatys_iterations)
    if kind == "train":
        return _train(int(arg), train_steps)
    raise SystemExit(f"unknown workload {spec!r}")


def _predict(arg: str, threads: int) -> Run:
    from app.imaging.encode import OutputFormat
    from app.serving.predict import PredictOptions, predict_bytes
    from app.serving.tiling import TileOptions

    megapixels, *flags = arg.split(":")
    tiles = TileOptions(tile_size=50_000) if "whole" in flags else TileOptions()
    backend = "torch" if "torch" in flags else "auto"  # auto: the service's default
    runner, choice = style_runner(tiles, threads, "cpu", backend)
    runner.stylize(np.full((256, 256, 3), 128, np.uint8), choice)
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = make_upload(float(megapixels), RESULTS).read_bytes()
    options = PredictOptions(choice=choice, max_size=50_000, output=OutputFormat.png)
    return lambda: predict_bytes(runner, data, options, max_pixels=50_000_000, min_side=1)


def _gatys(size: int, iterations: int) -> Run:
    import torch

    from app.core.config import Settings
    from app.core.device import uses_bf16
    from app.gatys.optimize import GatysOptions, run
    from app.perceptual.backbones import load_backbone

    settings = Settings()
    device = torch.device("cpu")
    backbone = load_backbone("vgg16", settings.models_dir, device, cache_dir=CACHE)
    content = np.asarray(Image.open(PHOTO).convert("RGB"))
    style = np.asarray(Image.open(PAINTING).convert("RGB"))
    options = GatysOptions(iterations=iterations, size=size, seed=0)
    bf16 = uses_bf16(settings.gatys_precision, device)
    return lambda: run(content, [style], options, backbone, device=device, bf16=bf16)


def _train(crop: int, steps: int) -> Run:
    import torch

    from app.core.config import Settings
    from app.perceptual.backbones import load_backbone
    from app.training import engine
    from app.training.options import DEFAULT_TAPS, TrainOptions

    settings = Settings()
    backbone = load_backbone("vgg16", settings.models_dir, torch.device("cpu"), cache_dir=CACHE)
    photos = [
        np.asarray(Image.open(path).convert("RGB"))
        for path in sorted((SHARED / "images" / "training").glob("*.jpg"))[:8]
    ]
    painting = np.asarray(Image.open(PAINTING).convert("RGB"))
    options = TrainOptions(crop_size=crop, batch_size=4, checkpoint_interval=0, preview_interval=0)
    run = engine._Run(photos, painting, options, backbone, DEFAULT_TAPS["vgg16"], None)

    def steps_of_training() -> None:
        for _ in range(steps):
            run.step()

    return steps_of_training


def child(spec: str, args: argparse.Namespace) -> None:
    """Runs of one workload in this process; prints a JSON line of its measurements."""
    once = workload(spec, args.threads, args.gatys_iterations, args.train_steps)
    runs = args.runs
    Path("/proc/self/clear_refs").write_text("5")
    measured = []
    for _ in range(runs):
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        once()
        seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
        measured.append(
            {
                "seconds": seconds,
                "user": after.ru_utime - before.ru_utime,
                "system": after.ru_stime - before.ru_stime,
                "faults": after.ru_minflt - before.ru_minflt,
            }
        )
    peak, rss = status_bytes("VmHWM") / 2**20, status_bytes("VmRSS") / 2**20
    print(json.dumps({"runs": measured, "peak_mib": peak, "after_mib": rss}))


def run_child(spec: str, policy: str, args: argparse.Namespace) -> dict:
    env = heap_environ(os.environ, kept=policy == "kept")
    env["OMP_NUM_THREADS"] = str(args.threads)
    command = [sys.executable, __file__, "--child", spec, "--runs", str(args.runs)]
    command += ["--threads", str(args.threads), "--gatys-iterations", str(args.gatys_iterations)]
    command += ["--train-steps", str(args.train_steps)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{spec} ({policy}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="predict:1,predict:6:whole,predict:6,gatys:512")
    parser.add_argument("--runs", type=int, default=3, help="runs per process (>= 2)")
    parser.add_argument("--repeat", type=int, default=2, help="processes per policy")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gatys-iterations", type=int, default=10)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--child", metavar="WORKLOAD")
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    print(machine_header("bench/heap.py", args.repeat))
    print(
        "\n| workload | heap | first run s (sys s, faults) | later runs s (sys s, faults) "
        "| x kept, later: median of rounds (range) | peak MiB | MiB after |"
    )
    print("|---|---|---|---|---|---|---|")
    for spec in args.workloads.split(","):
        results: dict[str, list[dict]] = {policy: [] for policy in POLICIES}
        for round_ in range(args.repeat):
            order = POLICIES if round_ % 2 == 0 else POLICIES[::-1]
            for policy in order:
                results[policy].append(run_child(spec, policy, args))
        later = {p: [_median(r["runs"][1:], "seconds") for r in results[p]] for p in POLICIES}
        for policy in POLICIES:
            rows = results[policy]
            first = [r["runs"][0] for r in rows]
            rest = [run for r in rows for run in r["runs"][1:]]
            ratios = [d / k for d, k in zip(later[POLICIES[0]], later["kept"], strict=True)]
            ratio = (
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                if policy == POLICIES[0]
                else "1.00"
            )
            print(
                f"| {spec} | {policy} | {_cell(first)} | {_cell(rest)} | {ratio} "
                f"| {statistics.median(r['peak_mib'] for r in rows):.0f} "
                f"| {statistics.median(r['after_mib'] for r in rows):.0f} |",
                flush=True,
            )


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def _cell(runs: list[dict]) -> str:
    return (
        f"{_median(runs, 'seconds'):.2f} ({_median(runs, 'system'):.2f}, "
        f"{_median(runs, 'faults') / 1e6:.2f} M)"
    )


if __name__ == "__main__":
    main()
