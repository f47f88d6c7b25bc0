"""Gatys jobs on the in-box VGG-16 beside EfficientNet-Lite0: contact sheets to look at.

`contact` (docs/gatys-vgg16.jpg): four photos x four paintings, each cell the VGG-16 result beside
the EfficientNet-Lite0 one, both at their backbone's default weights. `weights`
(docs/gatys-vgg16-weights.jpg): VGG-16 on two pairs at several style weights, the sheet the
VGG-16 defaults were chosen from. Both run at a small size and budget (the settings are printed
on the sheet) so that they stay affordable on a CPU; every cell is cached under
bench/results/gatys_sheet/ (git-ignored), so a rerun only computes what changed.

    .venv/bin/python bench/gatys_sheet.py contact|weights [--size 256] [--iterations 100]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from app.core.config import Settings
from app.gatys.optimize import GatysOptions, run
from app.perceptual.backbones import Backbone, load_backbone

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "images"
CACHE = ROOT / "bench" / "results" / "gatys_sheet"
PHOTOS = ("tubingen", "golden_gate", "hoovertowernight", "columns")
PAINTINGS = ("starry_night", "the_scream", "shipwreck", "woman-with-hat-matisse")
BACKBONES = ("vgg16", "efficientnet-lite0")
# The weights sheet: style weights tried on VGG-16 (content 1; tv at the default).
STYLE_WEIGHTS = (1.0, 10.0, 100.0, 1000.0)
WEIGHT_PAIRS = (("tubingen", "starry_night"), ("golden_gate", "the_scream"))
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
TILE = 256  # displayed height of every cell


def load(path: Path, long_side: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
        return np.asarray(image).copy()


class Renderer:
    """Runs (and caches) one Gatys result per photo, painting, backbone and option set."""

    def __init__(
        self,
        size: int,
        iterations: int,
        cache: Path,
        compute: tuple[str, ...] = BACKBONES,
        photos: tuple[str, ...] = PHOTOS,
    ) -> None:
        self.size = size
        self.iterations = iterations
        self.cache = cache
        # Missing cells are computed for these backbones and photos only, and left blank
        # otherwise: several processes can then share a sheet's cells.
        self.compute = compute
        self.photos = photos
        self.backbones: dict[str, Backbone] = {}
        cache.mkdir(parents=True, exist_ok=True)

    def backbone(self, name: str) -> Backbone:
        if name not in self.backbones:
            models = ROOT / "models"
            cache_dir = Settings().cache_dir
            self.backbones[name] = load_backbone(
                name, models, torch.device("cpu"), "vgg19", cache_dir
            )
        return self.backbones[name]

    def render(
        self, photo: str, painting: str, backbone: str, style_weight: float | None = None
    ) -> np.ndarray:
        network = self.backbone(backbone)
        # Weights spelled out, so a cell at the default weights is cached once for both sheets.
        defaults = network.default_weights
        options = GatysOptions(
            iterations=self.iterations,
            size=self.size,
            content_weight=defaults.content,
            style_weight=defaults.style if style_weight is None else style_weight,
            tv_weight=defaults.tv,
            seed=0,
        )
        photo_path = SHARED / "photos" / f"{photo}.jpg"
        painting_path = SHARED / "paintings" / f"{painting}.jpg"
        key = hashlib.sha256(
            photo_path.read_bytes()
            + painting_path.read_bytes()
            + repr((options, backbone, network.weights_source)).encode()
        ).hexdigest()[:16]
        cached = self.cache / f"{photo}-{painting}-{backbone}-{key}.png"
        if cached.is_file():
            with Image.open(cached) as image:
                return np.asarray(image.convert("RGB")).copy()
        if backbone not in self.compute or photo not in self.photos:
            print(f"  {photo} x {painting} on {backbone}: not cached, left blank", flush=True)
            return np.full_like(load(photo_path, self.size), 255)
        started = time.perf_counter()
        # Inputs at 1024 px at most: the engine resizes to the job size itself, as jobs do.
        result = run(load(photo_path, 1024), [load(painting_path, 1024)], options, network)
        print(
            f"  {photo} x {painting} on {backbone} (style weight {options.style_weight:g}):"
            f" {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        Image.fromarray(result).save(cached)
        return result


def tile(image: np.ndarray, label: str = "", height: int = TILE) -> Image.Image:
    """The image scaled to `height`, with `label` on a strip at its foot."""
    picture = Image.fromarray(image)
    picture = picture.resize(
        (round(picture.width * height / picture.height), height), Image.Resampling.LANCZOS
    )
    if label:
        draw = ImageDraw.Draw(picture)
        font = ImageFont.truetype(FONT, 13)
        box = draw.textbbox((0, 0), label, font=font)
        draw.rectangle((0, height - box[3] - 8, box[2] + 8, height), fill=(0, 0, 0))
        draw.text((4, height - box[3] - 4), label, font=font, fill=(255, 255, 255))
    return picture


def assemble(rows: list[list[Image.Image]], title: str, path: Path, gap: int = 6) -> None:
    font = ImageFont.truetype(FONT, 16)
    header = 30
    width = max(sum(t.width for t in row) + gap * (len(row) - 1) for row in rows)
    height = header + sum(max(t.height for t in row) + gap for row in rows)
    canvas = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(canvas).text((6, 6), title, font=font, fill=(0, 0, 0))
    y = header
    for row in rows:
        x = 0
        for picture in row:
            canvas.paste(picture, (x, y))
            x += picture.width + gap
        y += max(t.height for t in row) + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=85)
    print(f"wrote {path} ({canvas.width}x{canvas.height})")


def contact_sheet(renderer: Renderer, path: Path) -> None:
    """One row per photo: the photo, then per painting the VGG-16 and Lite0 results."""
    rows = []
    height = max(TILE * 3 // 4, renderer.size * 3 // 4)  # landscape photos: their own height
    for photo in PHOTOS:
        row = [tile(load(SHARED / "photos" / f"{photo}.jpg", 512), photo, height)]
        for painting in PAINTINGS:
            for backbone in BACKBONES:
                label = f"{painting[:12]} · {'VGG-16' if backbone == 'vgg16' else 'Lite0'}"
                row.append(tile(renderer.render(photo, painting, backbone), label, height))
        rows.append(row)
    painting_row = [tile(np.full((height, height, 3), 255, np.uint8), "", height)]
    painting_row += [
        tile(load(SHARED / "paintings" / f"{p}.jpg", 512), p, height) for p in PAINTINGS
    ]
    vgg = renderer.backbone("vgg16").default_weights
    lite = renderer.backbone("efficientnet-lite0").default_weights
    title = (
        f"Gatys jobs, {renderer.size} px, {renderer.iterations} L-BFGS iterations, seed 0, "
        f"default weights (content/style/tv): VGG-16 {vgg.content:g}/{vgg.style:g}/{vgg.tv:g}, "
        f"EfficientNet-Lite0 {lite.content:g}/{lite.style:g}/{lite.tv:g}"
    )
    assemble([painting_row, *rows], title, path)


def weights_sheet(renderer: Renderer, path: Path) -> None:
    """One row per pair: photo, painting, then VGG-16 at each style weight."""
    rows = []
    default = renderer.backbone("vgg16").default_weights
    for photo, painting in WEIGHT_PAIRS:
        row = [
            tile(load(SHARED / "photos" / f"{photo}.jpg", 512), photo),
            tile(load(SHARED / "paintings" / f"{painting}.jpg", 512), painting),
        ]
        for weight in STYLE_WEIGHTS:
            result = renderer.render(photo, painting, "vgg16", weight)
            mark = " (default)" if weight == default.style else ""
            row.append(tile(result, f"style {weight:g}{mark}"))
        rows.append(row)
    title = (
        f"VGG-16 Gatys, {renderer.size} px, {renderer.iterations} L-BFGS iterations, seed 0: "
        f"content {default.content:g}, tv {default.tv:g}, style weight varied"
    )
    assemble(rows, title, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sheet", choices=("contact", "weights"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--compute",
        nargs="*",
        choices=BACKBONES,
        default=list(BACKBONES),
        help="backbones whose missing cells to compute (none: cached only)",
    )
    parser.add_argument(
        "--photos",
        nargs="+",
        choices=PHOTOS,
        default=list(PHOTOS),
        help="photos whose missing contact-sheet cells to compute",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    renderer = Renderer(args.size, args.iterations, CACHE, tuple(args.compute), tuple(args.photos))
    if args.sheet == "contact":
        contact_sheet(renderer, args.output or ROOT / "docs" / "gatys-vgg16.jpg")
    else:
        weights_sheet(renderer, args.output or ROOT / "docs" / "gatys-vgg16-weights.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
