"""How fast fixed-point refinement of instance-norm statistics converges (issue 19).

Starting from the statistics of a downscaled copy, each refinement pass runs the whole network
with the current statistics injected into every norm layer and takes each layer's input
statistics as the next estimate (what `tile_refine` does over tiles; over the whole image here,
which gives the same numbers, to see the convergence alone). After each pass the output rendered
with the estimate is compared with the untiled output (the network's own statistics). Eager
torch fp32 on CPU.

    nice -n 10 .venv/bin/python bench/tile_refine_convergence.py [--megapixels 1.5] [--ratio 16]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent.parent / "shared" / "images" / "photos"
if not PHOTOS.exists():
    PHOTOS = REPO.parent / "shared" / "images" / "photos"
CACHE = REPO / "data" / "cache"


def photo(name: str, megapixels: float) -> np.ndarray:
    with Image.open(PHOTOS / name) as image:
        scale = math.sqrt(megapixels * 1e6 / (image.width * image.height))
        w, h = round(image.width * scale) // 4 * 4, round(image.height * scale) // 4 * 4
        return np.asarray(image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS))


def main() -> None:
    from app.nets.norm_stats import CollectAllStats, InjectStats, RecordStats, probe_layout
    from app.serving.pixels import network_input
    from app.serving.runner import StyleRunner
    from app.serving.tiling import downscaled_stats, StatsNetworks
    from app.styles.catalog import MultiStyleBlend, SingleStyle, StyleVector, manifest_styles
    from app.weights.manifest import load_manifest
    from app.nets.multistyle import NUM_STYLES

    parser = argparse.ArgumentParser()
    parser.add_argument("--megapixels", type=float, default=1.5)
    parser.add_argument("--ratio", type=float, default=16.0, help="image / copy pixels")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--photos", default="tubingen.jpg")
    parser.add_argument("--networks", default="transformer,multistyle,arbitrary")
    args = parser.parse_args()
    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    runner = StyleRunner(torch.device("cpu"), CACHE, cpu_backend="torch")
    models = REPO / "models"
    styles = manifest_styles(load_manifest(models), models)
    mosaic = next(s for s in styles if s.name.startswith("mosaic"))
    runner.load_transformer(mosaic)
    weights = torch.zeros(NUM_STYLES)
    weights[[3, 19]] = torch.tensor([0.7, 0.3])
    painting = photo("hoovertowernight.jpg", 0.1)
    choices = {
        "transformer": SingleStyle(mosaic),
        "multistyle": MultiStyleBlend(weights),
        "arbitrary": StyleVector(runner.style_vector(painting)),
    }
    for name in args.photos.split(","):
        image = photo(name, args.megapixels)
        x = torch.from_numpy(network_input(image))
        h, w = image.shape[:2]
        for network in args.networks.split(","):
            choice = choices[network]
            _, condition = runner._network_for(choice, 1)
            _, (module, _, _) = runner._pixels_for(choice)
            cond = [torch.from_numpy(np.asarray(c)) for c in condition]
            layout = probe_layout(lambda t: module(t * 255.0, *[c for c in cond]))
            record, inject = RecordStats(module), InjectStats(module)
            collect = CollectAllStats(module, layout)
            with torch.no_grad():
                reference = module(x, *cond)[0].numpy().astype(np.int16)
                calls = StatsNetworks(
                    record=lambda t, *c: record(torch.from_numpy(t), *map(torch.from_numpy, c)).numpy(),
                    collect=[], inject=None, layout=layout)  # type: ignore[arg-type]
                mean, var = downscaled_stats(image, calls, condition, int(h * w / args.ratio))
                if args.ratio == 1:  # sanity: the whole image's own statistics are a fixed point
                    mean, var = downscaled_stats(image, calls, condition, h * w)
                counts = np.concatenate(
                    [np.full(c, (h // s) * (w // s)) for c, s in zip(layout.channels, layout.scales)])
                ones_r, ones_c = torch.ones(h), torch.ones(w)
                for step in range(args.passes + 1):
                    m32 = torch.from_numpy(mean.astype(np.float32))
                    v32 = torch.from_numpy(var.astype(np.float32))
                    out = inject(x, *cond, m32, v32)[0].numpy().astype(np.int16)
                    d = np.abs(out - reference)
                    print(f"{name} {w}x{h} 1/{args.ratio:g} {network:11s} pass {step}: "
                          f"mean {d.mean():.3f} p99 {np.percentile(d, 99):.0f} max {d.max()}",
                          flush=True)
                    if step == args.passes:
                        break
                    parts = collect(x, *cond, m32, v32, ones_r, ones_c).numpy().astype(np.float64)
                    shift, s1, s2 = parts
                    mean = shift + s1 / counts
                    var = np.maximum(s2 / counts - (s1 / counts) ** 2, 0.0)


if __name__ == "__main__":
    main()
