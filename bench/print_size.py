"""Print size: time and peak working memory against image size, tiled against untiled.

For each size (megapixels of a real photo, upscaled with Lanczos and saved as JPEG, as a camera
would hand it over) the whole instant path runs in a fresh process: decode the JPEG upload,
stylize, encode PNG (`predict_bytes`, as POST /model/predict does). Variants, interleaved per
size so load drifts hit them alike:

- `untiled`: the whole image in one network call (only up to `--untiled-max` MP);
- `tiled exact`: tiles of ATELIER_TILE_SIZE with the whole image's statistics, layer by layer;
- `tiled downscaled`: tiles with statistics from a downscaled copy.

Peak working memory is the process's peak resident set (VmHWM) during the request minus its
resident set just before it, after the networks were loaded and warmed at the tile shape (the
peak is reset through /proc/self/clear_refs). Outputs are compared with the untiled one where
it ran (mean and 99th-percentile absolute difference in levels of 255); for the `--figure`
size a difference map and 100% crops across a tile border are written to docs/.

    nice -n 5 .venv/bin/python bench/print_size.py [--sizes 1,4,12,24,50] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine_header
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "images" / "photos" / "tubingen.jpg"
STYLE = "mosaic"
VARIANTS = ("untiled", "tiled exact", "tiled downscaled")


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def make_upload(megapixels: float, folder: Path) -> Path:
    """The photo upscaled to about `megapixels`, as a quality-92 JPEG (made once per size)."""
    path = folder / f"photo-{megapixels:g}mp.jpg"
    if not path.exists():
        with Image.open(PHOTO) as photo:
            scale = math.sqrt(megapixels * 1e6 / (photo.width * photo.height))
            size = (round(photo.width * scale), round(photo.height * scale))
            photo.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(path, quality=92)
    return path


def child(variant: str, upload: Path, output: Path, tile_size: int, threads: int) -> None:
    """One request in this process; prints a JSON line of its measurements."""
    from app.config import Settings
    from app.imaging.encode import OutputFormat
    from app.inference.predict import PredictOptions, predict_bytes
    from app.service import Service

    stats = "downscaled" if variant == "tiled downscaled" else "exact"
    size = tile_size if variant != "untiled" else 50_000
    settings = Settings(
        warmup=False,
        tile_size=size,
        tile_stats=stats,
        torch_threads=threads,
        models_dir=REPO / "models",
        data_dir=Path(os.environ["PRINT_SIZE_DATA"]),
    )
    service = Service(settings)
    service.load(warmup=False)
    runner = service.runner
    assert runner is not None
    choice = service.catalog.resolve(STYLE)
    data = upload.read_bytes()
    options = PredictOptions(choice=choice, max_size=50_000, output=OutputFormat.png)
    # warm up at the shape the measured run uses (tiles, or a small whole image)
    side = tile_size + 4 if variant != "untiled" else 256
    runner.stylize(np.zeros((side, side, 3), np.uint8) + 128, choice)
    Path("/proc/self/clear_refs").write_text("5")
    before = status_bytes("VmRSS")
    started = time.perf_counter()
    result = predict_bytes(runner, data, options, max_pixels=settings.max_pixels, min_side=1)
    seconds = time.perf_counter() - started
    peak = status_bytes("VmHWM")
    output.write_bytes(result.data)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "working_mib": (peak - before) / 2**20,
                "base_mib": before / 2**20,
                "size": [result.width, result.height],
            }
        )
    )


def run_child(
    variant: str, upload: Path, output: Path, tile_size: int, threads: int, data: Path
) -> dict[str, float]:
    env = {**os.environ, "PRINT_SIZE_DATA": str(data), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--child", variant, str(upload), str(output)]
    command += ["--tile-size", str(tile_size), "--threads", str(threads)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{variant} {upload.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def crop_figure(
    untiled: Path, tiled: Path, tile_size: int, target: Path, crop: int = 320
) -> tuple[float, float]:
    """Untiled | tiled | difference x8 at 100%, centred on a tile corner; and the full
    difference map (downscaled) beside them. Returns (mean, p99) difference."""
    from app.inference.tiling import TileOptions, axis_tiles

    reference, result = decode(untiled), decode(tiled)
    difference = np.abs(reference.astype(np.int16) - result).astype(np.uint8)
    options = TileOptions(tile_size=tile_size)
    height, width = reference.shape[:2]
    rows = axis_tiles(height + (-height) % 4, tile_size, options.context, options.blend)
    cols = axis_tiles(width + (-width) % 4, tile_size, options.context, options.blend)
    cy, cx = rows.bounds[1], cols.bounds[1]
    box = (slice(cy - crop // 2, cy + crop // 2), slice(cx - crop // 2, cx + crop // 2))
    amplified = np.clip(difference.astype(np.int16) * 8, 0, 255).astype(np.uint8)
    panels = [reference[box], result[box], amplified[box]]
    gap = np.full((crop, 8, 3), 255, np.uint8)
    strip = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    overview = Image.fromarray(amplified.max(axis=2)).convert("RGB")
    overview.thumbnail((crop * 3, crop), Image.Resampling.BOX)
    canvas = Image.new("RGB", (strip.shape[1], crop + 8 + overview.height), "white")
    canvas.paste(Image.fromarray(strip), (0, 0))
    canvas.paste(overview, (0, crop + 8))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    target.write_bytes(buffer.getvalue())
    return float(difference.mean()), float(np.percentile(difference, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,12,24,50", help="megapixels, comma-separated")
    parser.add_argument("--untiled-max", type=float, default=24.0)
    parser.add_argument("--tile-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--figure", type=float, default=24.0, help="MP of the crop figure")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "UPLOAD", "OUTPUT"))
    args = parser.parse_args()
    if args.child:
        variant, upload, output = args.child
        child(variant, Path(upload), Path(output), args.tile_size, args.threads)
        return
    print(machine_header("bench/print_size.py"))
    print(f"- style {STYLE} (TransformerNet), tile size {args.tile_size}, {args.threads} thread(s)")
    print("")
    print("| MP | variant | seconds | x untiled | working MiB | mean diff | p99 diff |")
    print("|---|---|---|---|---|---|---|")
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data = work / "data"
        (data / "cache").mkdir(parents=True)
        for order, megapixels in enumerate(sizes):
            upload = make_upload(megapixels, work)
            variants = [v for v in VARIANTS if v != "untiled" or megapixels <= args.untiled_max]
            variants = variants[order % len(variants) :] + variants[: order % len(variants)]
            results: dict[str, dict[str, float]] = {}
            for variant in variants:
                output = work / f"{megapixels:g}-{variant.replace(' ', '-')}.png"
                results[variant] = run_child(
                    variant, upload, output, args.tile_size, args.threads, data
                )
            for variant in VARIANTS:
                if variant not in results:
                    continue
                result = results[variant]
                output = work / f"{megapixels:g}-{variant.replace(' ', '-')}.png"
                ratio = diff = p99 = "-"
                if "untiled" in results:
                    ratio = f"{result['seconds'] / results['untiled']['seconds']:.2f}"
                    if variant != "untiled":
                        reference = work / f"{megapixels:g}-untiled.png"
                        delta = np.abs(decode(reference).astype(np.int16) - decode(output))
                        diff, p99 = f"{delta.mean():.3f}", f"{np.percentile(delta, 99):.0f}"
                        if variant == "tiled exact" and megapixels == args.figure:
                            crop_figure(
                                reference,
                                output,
                                args.tile_size,
                                REPO / "docs" / "print-size-crops.jpg",
                            )
                w, h = result["size"]
                print(
                    f"| {w * h / 1e6:.1f} ({w}x{h}) | {variant} | {result['seconds']:.1f} | "
                    f"{ratio} | {result['working_mib']:.0f} | {diff} | {p99} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
