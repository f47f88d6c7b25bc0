"""Gatys at print size: time per evaluation and peak working memory, tiled against whole.

For each size (megapixels of a real photo, the content; a painting as the style, at the same
long side) a short Gatys run (`app.gatys.optimize.run`, L-BFGS from the photo, the service's
default backbone and precision) goes in a fresh process per variant, the variants interleaved
per size so load drifts hit them alike:

- `whole`: every scale through the loss network at once (`tile_pixels=0`);
- `tiled`: scales and style images above ATELIER_GATYS_TILE_SIZE^2 pixels in tiles
  (`app/gatys/tiles.py`);
- `whole fp32`: the reference, whole and in fp32 (the service's default precision is bf16
  autocast where the CPU has fast bf16, and bf16 rounding differs with the shapes computed).

Time per evaluation is the median of the evaluations after the first (which allocates);
working memory is the peak resident set during the run minus the resident set before it (the
backbone loaded). Results are compared with the reference's (mean and 99th-percentile absolute
difference in levels of 255): the tiles compute the same objective and gradient, so what
differs is float rounding, amplified by the optimiser.

    nice -n 5 .venv/bin/python bench/gatys_tiles.py [--sizes 1,2,4] [--iterations 4]
        [--whole-max 4] [--tile-size 1024] [--threads 1] [--device cuda]

On CUDA the working memory is the peak of allocated VRAM during the run instead.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine_header
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "images"
PHOTO = SHARED / "photos" / "tubingen.jpg"
PAINTING = SHARED / "paintings" / "starry_night.jpg"
RESULTS = REPO / "bench" / "results" / "gatys-tiles"  # outputs (git-ignored)


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def long_side(megapixels: float) -> int:
    with Image.open(PHOTO) as photo:
        scale = math.sqrt(megapixels * 1e6 / (photo.width * photo.height))
        return math.floor(max(photo.size) * scale)


def child(
    variant: str, size: int, iterations: int, tile_size: int, output: Path, device_name: str
) -> None:
    """One run in this process; prints a JSON line of its measurements."""
    import torch

    from app.core.config import Settings
    from app.core.device import uses_bf16
    from app.gatys.optimize import GatysOptions, Progress, run
    from app.perceptual.backbones import load_backbone

    settings = Settings()
    device = torch.device(device_name)
    backbone = load_backbone(
        settings.gatys_backbone, settings.models_dir, device, cache_dir=REPO / "data" / "cache"
    )
    content = np.asarray(Image.open(PHOTO).convert("RGB"))
    style = np.asarray(Image.open(PAINTING).convert("RGB"))
    stamps: list[float] = []

    def on_progress(progress: Progress) -> None:
        stamps.append(time.perf_counter())

    Path("/proc/self/clear_refs").write_text("5")
    before = status_bytes("VmRSS")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    started = time.perf_counter()
    image = run(
        content,
        [style],
        GatysOptions(iterations=iterations, size=size, seed=0),
        backbone,
        device=device,
        bf16=uses_bf16(settings.gatys_precision, device),
        tile_pixels=0 if variant == "whole" else tile_size**2,
        on_progress=on_progress,
    )
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else status_bytes("VmHWM")
    Image.fromarray(image).save(output)
    evaluations = [b - a for a, b in itertools.pairwise(stamps)]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "per_evaluation": statistics.median(evaluations),
                "first": stamps[0] - started,
                "working_mib": (peak - before) / 2**20,
                "size": [image.shape[1], image.shape[0]],
                "backbone": backbone.name,
            }
        )
    )


def difference(a: Path, b: Path) -> tuple[float, float]:
    x = np.asarray(Image.open(a), dtype=np.int16)
    y = np.asarray(Image.open(b), dtype=np.int16)
    diff = np.abs(x - y)
    return float(diff.mean()), float(np.percentile(diff, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4", help="megapixels, comma-separated")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--whole-max", type=float, default=4, help="largest MP run whole")
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "SIZE", "OUTPUT"))
    args = parser.parse_args()
    if args.child:
        variant, size, output = args.child
        child(variant, int(size), args.iterations, args.tile_size, Path(output), args.device)
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "ATELIER_TORCH_THREADS": str(args.threads),
        "PYTHONPATH": str(REPO),
    }
    print(machine_header("bench/gatys_tiles.py"))
    print(
        f"\nL-BFGS, {args.iterations} evaluations, tubingen x starry_night; tiles of about "
        f"{args.tile_size}^2 pixels; {args.device}, {args.threads} thread(s)\n"
    )
    print(
        "| MP | side | variant | backbone | s per evaluation | x whole | first s | working MiB "
        "| mean diff to fp32 | p99 diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for megapixels in (float(s) for s in args.sizes.split(",")):
        side = long_side(megapixels)
        variants = ["tiled"]
        if megapixels <= args.whole_max:
            variants = ["whole fp32", "whole", "tiled"]
        rows: dict[str, dict] = {}
        for variant in variants:
            output = RESULTS / f"{variant.replace(' ', '-')}-{megapixels:g}mp.png"
            command = [sys.executable, __file__, "--iterations", str(args.iterations)]
            command += ["--tile-size", str(args.tile_size), "--device", args.device]
            command += ["--child", variant, str(side)]
            precision = {"ATELIER_GATYS_PRECISION": "fp32"} if variant == "whole fp32" else {}
            done = subprocess.run(
                [*command, str(output)],
                env=env | precision,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(f"| {megapixels:g} | {side} | {variant} | failed: {done.stderr[-300:]} |")
                continue
            rows[variant] = json.loads(done.stdout.strip().splitlines()[-1]) | {"output": output}
        for variant, row in rows.items():
            ratio, mean, p99 = "", "-", "-"
            if "whole" in rows:
                ratio = f"{row['per_evaluation'] / rows['whole']['per_evaluation']:.2f}"
            if "whole fp32" in rows and variant != "whole fp32":
                reference = rows["whole fp32"]["output"]
                mean, p99 = (f"{v:.2f}" for v in difference(reference, row["output"]))
            width, height = row["size"]
            print(
                f"| {megapixels:g} | {width}x{height} | {variant} | {row['backbone']} "
                f"| {row['per_evaluation']:.1f} | {ratio} | {row['first']:.1f} "
                f"| {row['working_mib']:.0f} | {mean} | {p99} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
