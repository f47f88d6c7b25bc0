"""Print size: time and peak working memory against image size, tiled against untiled.

For each size (megapixels of a real photo, upscaled with Lanczos and saved as JPEG, as a camera
would hand it over) the whole instant path runs in a fresh process: decode the JPEG upload,
stylize, encode PNG (`predict_bytes`, as POST /model/predict does). Variants, interleaved per
size so load drifts hit them alike:

- `untiled`: the whole image in one network call (only up to `--untiled-max` MP);
- `tiled exact`: the whole image's statistics, the network's segments run band by band
  (bands of at most ATELIER_TILE_SIZE^2 / 4 pixels; `app/serving/bands.py`), with the residual
  stack run whole where it fits, the default;
- `tiled bands`: the same with every segment in bands (ATELIER_TILE_WHOLE_STACK=false);
- `tiled downscaled`: tiles with statistics from a downscaled copy.

The children run with freed memory kept in the heap, as `atelier` runs (app/core/heap.py);
`--heap glibc` runs them with glibc's defaults.

`--backend` picks the backend of the other variants: `auto` (the service's default: OpenVINO
bf16 on CPUs with fast bf16, else onnxruntime fp32), `fp32` (onnxruntime) or `torch` (eager).

Peak working memory is the process's peak resident set (VmHWM) during the request minus its
resident set just before it, after the networks were loaded and warmed at the tile shape (the
peak is reset through /proc/self/clear_refs). Outputs are compared with the untiled one where
it ran (mean and 99th-percentile absolute difference in levels of 255); for the `--figure`
size a difference map and 100% crops across a tile border are written to docs/.

    nice -n 5 .venv/bin/python bench/print_size.py [--sizes 1,4,12,24,50] [--threads 1]
        [--backend auto|fp32|torch] [--variants "untiled,tiled exact"] [--repeat 3]

With `--repeat N` each size runs N rounds, the variants' order alternating between rounds;
seconds are medians, and the ratio to untiled is the medians' with the range of the rounds'
own ratios beside it (each round's pair ran back to back).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from machine import machine_header
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from app.core.config import CpuBackend
    from app.serving.cpu_precision import Precision
    from app.serving.runner import StyleRunner
    from app.serving.tiling import TileOptions
    from app.styles.catalog import SingleStyle

REPO = Path(__file__).resolve().parents[1]
SHARED = next(
    (p for p in (REPO.parent / "shared", REPO.parent.parent / "shared") if p.exists()),
    REPO.parent / "shared",
)
PHOTO = SHARED / "images" / "photos" / "tubingen.jpg"
STYLE = "mosaic-atelier"
CACHE = REPO / "data" / "cache"  # converted weights and exports, kept between runs
RESULTS = REPO / "bench" / "results" / "print-size"  # uploads and outputs (git-ignored)
VARIANTS = ("untiled", "tiled exact", "tiled bands", "tiled downscaled")
STATS = {"tiled exact": "exact", "tiled bands": "exact", "tiled downscaled": "downscaled"}


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
            # rounded down: a 50 MP request stays within ATELIER_MAX_PIXELS
            size = (math.floor(photo.width * scale), math.floor(photo.height * scale))
            photo.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(path, quality=92)
    return path


def child(
    variant: str,
    upload: Path,
    output: Path,
    tile_size: int,
    threads: int,
    device: str,
    backend: str,
) -> None:
    """One request in this process; prints a JSON line of its measurements (on CUDA the
    working memory is the peak of allocated VRAM instead of resident memory)."""
    import torch

    from app.imaging.encode import OutputFormat
    from app.serving.predict import PredictOptions, predict_bytes
    from app.serving.tiling import TileOptions

    torch.set_num_threads(threads)
    tiles = TileOptions(
        tile_size=tile_size if variant != "untiled" else 50_000,
        stats=STATS.get(variant, "exact"),  # type: ignore[arg-type]
        whole_stack=variant != "tiled bands",
    )
    runner, choice = style_runner(tiles, threads, device, backend)
    data = upload.read_bytes()
    options = PredictOptions(choice=choice, max_size=50_000, output=OutputFormat.png)
    # warm up at the shape the measured run uses (tiles, or a small whole image)
    side = tile_size + 4 if variant != "untiled" else 256
    runner.stylize(np.zeros((side, side, 3), np.uint8) + 128, choice)
    Path("/proc/self/clear_refs").write_text("5")
    before = status_bytes("VmRSS")
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    started = time.perf_counter()
    result = predict_bytes(runner, data, options, max_pixels=50_000_000, min_side=1)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else status_bytes("VmHWM")
    output.write_bytes(result.data)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "working_mib": (peak - before) / 2**20,
                "base_mib": before / 2**20,
                "size": [result.width, result.height],
                "backend": runner.backend_name,
            }
        )
    )


def style_runner(
    tiles: TileOptions, threads: int, device: str, backend: str
) -> tuple[StyleRunner, SingleStyle]:
    """A runner as `--backend` sets it up, with the bench's style loaded."""
    import torch

    from app.serving.runner import StyleRunner
    from app.styles.catalog import SingleStyle, manifest_styles
    from app.weights.manifest import load_manifest

    cpu_backend, cpu_precision = runner_backend(backend)
    runner = StyleRunner(
        torch.device(device),
        CACHE,
        cpu_backend=cpu_backend,
        cpu_precision=cpu_precision,
        threads=threads,
        tiles=tiles,
    )
    models = REPO / "models"
    style = next(s for s in manifest_styles(load_manifest(models), models) if s.name == STYLE)
    runner.load_transformer(style)
    return runner, SingleStyle(style)


def run_child(
    variant: str,
    upload: Path,
    output: Path,
    tile_size: int,
    threads: int,
    device: str,
    backend: str,
    heap: str,
) -> dict[str, float]:
    from app.core.heap import heap_environ

    env = heap_environ(os.environ, kept=heap == "kept")  # kept: as `atelier` runs
    env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, __file__, "--child", variant, str(upload), str(output)]
    command += ["--tile-size", str(tile_size), "--threads", str(threads), "--device", device]
    command += ["--backend", backend]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{variant} {upload.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def crop_figure(
    untiled: Path,
    tiled: Path,
    tile_size: int,
    target: Path,
    crop: int = 320,
    variant: str = "tiled exact",
) -> tuple[float, float]:
    """Untiled | tiled | difference x8 at 100%, centred on a border between pieces (a tile
    corner; for `exact`, a band border); and the full difference map (downscaled) beside them.
    Returns (mean, p99) difference."""
    reference, result = decode(untiled), decode(tiled)
    difference = np.abs(reference.astype(np.int16) - result).astype(np.uint8)
    height, width = reference.shape[:2]
    row_borders, col_borders = piece_borders(height, width, tile_size, variant)
    cy = row_borders[0] if row_borders else height // 2
    cx = col_borders[0] if col_borders else width // 2
    box = (slice(cy - crop // 2, cy + crop // 2), slice(cx - crop // 2, cx + crop // 2))
    amplified = np.clip(difference.astype(np.int16) * 8, 0, 255).astype(np.uint8)
    panels = [reference[box], result[box], amplified[box]]
    gap = np.full((crop, 8, 3), 255, np.uint8)
    strip = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    overview = Image.fromarray(amplified.max(axis=2)).convert("RGB")
    scale = min(crop * 3 / width, crop / height)
    overview = overview.resize((round(width * scale), round(height * scale)), Image.Resampling.BOX)
    draw = ImageDraw.Draw(overview)
    for bound in row_borders:
        draw.line([(0, bound * scale), (overview.width, bound * scale)], fill=(200, 40, 40))
    for bound in col_borders:
        draw.line([(bound * scale, 0), (bound * scale, overview.height)], fill=(200, 40, 40))
    label = 28
    canvas = Image.new("RGB", (strip.shape[1], label + crop + label + overview.height), "white")
    canvas.paste(Image.fromarray(strip), (0, label))
    canvas.paste(overview, (0, 2 * label + crop))
    draw = ImageDraw.Draw(canvas)
    # the border sits at the centre of each crop: ticks on the crop edges point at it
    for panel in range(3):
        x0 = panel * (crop + 8)
        draw.line([(x0 + crop // 2, label - 8), (x0 + crop // 2, label - 1)], fill="red")
        draw.line(
            [(x0 - 8 if panel else 0, label + crop // 2), (x0, label + crop // 2)], fill="red"
        )
    titles = ("untiled (reference), 100%", f"{variant}, 100%", "|difference| x 8")
    for panel, title in enumerate(titles):
        draw.text((panel * (crop + 8) + 4, 6), title, fill="black")
    draw.text(
        (4, label + crop + 6),
        f"|difference| x 8 over the whole {width}x{height} image; red: piece borders "
        f"(mean {difference.mean():.3f}, max {difference.max()} levels)",
        fill="black",
    )
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    target.write_bytes(buffer.getvalue())
    return float(difference.mean()), float(np.percentile(difference, 99))


def piece_borders(
    height: int, width: int, tile_size: int, variant: str
) -> tuple[list[int], list[int]]:
    """Inner borders (rows, columns) between the pieces a variant cuts an image into: bands of
    rows for `exact` (the margin of TransformerNet's segments), tiles for `downscaled`."""
    from app.serving.bands import bands
    from app.serving.tiling import TileOptions, axis_tiles

    height, width = height + (-height) % 4, width + (-width) % 4
    options = TileOptions(tile_size=tile_size)
    if variant in ("tiled exact", "tiled bands"):
        return [band.top for band in bands(height, width, options.band_pixels, reach=8)[1:]], []
    rows = axis_tiles(height, tile_size, options.context, options.blend)
    cols = axis_tiles(width, tile_size, options.context, options.blend)
    return list(rows.bounds[1:-1]), list(cols.bounds[1:-1])


def runner_backend(backend: str) -> tuple[CpuBackend, Precision]:
    """`--backend` as StyleRunner's `cpu_backend` and `cpu_precision`."""
    from app.serving.cpu_precision import choose_cpu_precision

    cpu_backend = "torch" if backend == "torch" else "onnxruntime"
    return cpu_backend, choose_cpu_precision("auto" if backend == "auto" else "fp32")


def service_tile_size(device: str, backend: str) -> int:
    """ATELIER_TILE_SIZE's default for the precision this backend computes in."""
    import torch

    from app.serving.runner import network_precision
    from app.serving.tiling import DEFAULT_TILE_SIZE

    precision = network_precision(torch.device(device), *runner_backend(backend))
    return DEFAULT_TILE_SIZE[precision]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,12,24,50", help="megapixels, comma-separated")
    parser.add_argument("--untiled-max", type=float, default=24.0)
    parser.add_argument(
        "--tile-size", type=int, default=0, help="0: the service's default for the backend"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--figure", type=float, default=24.0, help="MP of the crop figure")
    parser.add_argument("--figure-variant", default="tiled exact", help="tiled variant drawn")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the VRAM curve")
    parser.add_argument(
        "--exact-max", type=float, default=50.0, help="largest MP run with exact statistics"
    )
    parser.add_argument("--backend", default="auto", choices=("auto", "fp32", "torch"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument(
        "--heap",
        default="kept",
        choices=("kept", "glibc"),
        help="kept: freed memory kept for reuse, as `atelier` runs; glibc: its defaults",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds per size (medians; variants alternate)"
    )
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "UPLOAD", "OUTPUT"))
    parser.add_argument("--redraw", type=float, help="only redraw the crop figure of this MP")
    args = parser.parse_args()
    args.tile_size = args.tile_size or service_tile_size(args.device, args.backend)
    if args.redraw:
        stem = RESULTS / f"{args.redraw:g}-{args.backend}"
        figure = REPO / "docs" / "print-size-crops.jpg"
        tiled = Path(f"{stem}-{args.figure_variant.replace(' ', '-')}.png")
        print(
            crop_figure(
                Path(f"{stem}-untiled.png"),
                tiled,
                args.tile_size,
                figure,
                variant=args.figure_variant,
            )
        )
        return
    if args.child:
        variant, upload, output = args.child
        child(
            variant,
            Path(upload),
            Path(output),
            args.tile_size,
            args.threads,
            args.device,
            args.backend,
        )
        return
    print(machine_header("bench/print_size.py"))
    print(
        f"- style {STYLE} (TransformerNet) on {args.device} ({args.backend}), "
        f"tile size {args.tile_size}, "
        f"{args.threads} thread(s); working memory = peak "
        + ("allocated VRAM" if args.device == "cuda" else "RSS")
        + " during the request minus before it"
    )
    print("")
    seconds = "median seconds" if args.repeat > 1 else "seconds"
    print(f"| MP | variant | {seconds} | x untiled | working MiB | mean diff | p99 diff |")
    print("|---|---|---|---|---|---|---|")
    sizes = [float(s) for s in args.sizes.split(",")]
    work = RESULTS  # kept: `--redraw` rebuilds the figure from them
    work.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    for order, megapixels in enumerate(sizes):
        upload = make_upload(megapixels, work)
        skip = {"untiled": megapixels > args.untiled_max}
        skip["tiled exact"] = megapixels > args.exact_max
        chosen = args.variants.split(",")
        variants = [v for v in VARIANTS if v in chosen and not skip.get(v, False)]
        runs: dict[str, list[dict]] = {}
        for round_ in range(args.repeat):
            turn = (order + round_) % len(variants)
            for variant in variants[turn:] + variants[:turn]:
                output = work / f"{megapixels:g}-{args.backend}-{variant.replace(' ', '-')}.png"
                result = run_child(
                    variant,
                    upload,
                    output,
                    args.tile_size,
                    args.threads,
                    args.device,
                    args.backend,
                    args.heap,
                )
                runs.setdefault(variant, []).append(result)
        results = {variant: median_run(rounds) for variant, rounds in runs.items()}
        for variant in VARIANTS:
            if variant not in results:
                continue
            result = results[variant]
            output = work / f"{megapixels:g}-{args.backend}-{variant.replace(' ', '-')}.png"
            ratio = diff = p99 = "-"
            if "untiled" in results:
                ratio = f"{result['seconds'] / results['untiled']['seconds']:.2f}"
                per_round = [
                    mine["seconds"] / theirs["seconds"]
                    for mine, theirs in zip(runs[variant], runs["untiled"], strict=True)
                ]
                if variant != "untiled" and len(per_round) > 1:
                    ratio += f" ({min(per_round):.2f}-{max(per_round):.2f})"
                if variant != "untiled":
                    reference = work / f"{megapixels:g}-{args.backend}-untiled.png"
                    delta = np.abs(decode(reference).astype(np.int16) - decode(output))
                    diff, p99 = f"{delta.mean():.3f}", f"{np.percentile(delta, 99):.0f}"
                    if variant == args.figure_variant and megapixels == args.figure:
                        crop_figure(
                            reference,
                            output,
                            args.tile_size,
                            REPO / "docs" / "print-size-crops.jpg",
                            variant=variant,
                        )
            w, h = result["size"]
            with (work / f"rows-{args.device}.jsonl").open("a") as rows:
                row = {"variant": variant, "mp": w * h / 1e6, "backend": args.backend, **result}
                rows.write(json.dumps(row) + "\n")
            print(
                f"| {w * h / 1e6:.1f} ({w}x{h}) | {variant} ({result['backend']}) | "
                f"{result['seconds']:.1f} | "
                f"{ratio} | {result['working_mib']:.0f} | {diff} | {p99} |",
                flush=True,
            )

    plot(work / f"rows-{args.device}.jsonl", REPO / "docs" / f"print-size-{args.device}.png")


def median_run(rounds: list[dict]) -> dict:
    """One variant's rounds as one row: the median time, the largest working memory."""
    ordered = sorted(rounds, key=lambda r: r["seconds"])
    return {
        **ordered[len(ordered) // 2],
        "seconds": float(np.median([r["seconds"] for r in rounds])),
        "working_mib": max(r["working_mib"] for r in rounds),
    }


def plot(rows_file: Path, target: Path) -> None:
    """Seconds and working memory against megapixels, one line per variant, from every run's
    rows (the latest measurement of each size and variant)."""
    import matplotlib

    latest: dict[tuple[str, float], dict] = {}
    for line in rows_file.read_text().splitlines():
        row = json.loads(line)
        latest[(f"{row['variant']} ({row.get('backend', '?')})", round(row["mp"], 1))] = row
    curve: dict[str, list[tuple[float, float, float]]] = {}
    for (variant, mp), row in sorted(latest.items(), key=lambda item: item[0][1]):
        curve.setdefault(variant, []).append((mp, row["seconds"], row["working_mib"]))

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 4))
    for variant, points in curve.items():
        if points:
            mp, seconds, mib = zip(*points, strict=True)
            left.plot(mp, seconds, marker="o", label=variant)
            right.plot(mp, mib, marker="o", label=variant)
    left.set(xlabel="megapixels", ylabel="seconds", title="time per request")
    memory = "peak VRAM" if "cuda" in target.name else "peak RSS"
    right.set(xlabel="megapixels", ylabel="MiB", title=f"working memory ({memory} - before)")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=90)


if __name__ == "__main__":
    main()
