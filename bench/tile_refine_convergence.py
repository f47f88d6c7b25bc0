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
from collections.abc import Iterator
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


def refine(args: argparse.Namespace) -> None:
    """Print the difference to untiled after each pass, per photo and network."""
    from app.nets.multistyle import NUM_STYLES
    from app.serving.runner import StyleRunner
    from app.styles.catalog import MultiStyleBlend, SingleStyle, StyleVector, manifest_styles
    from app.weights.manifest import load_manifest

    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    runner = StyleRunner(torch.device("cpu"), CACHE, cpu_backend="torch")
    models = REPO / "models"
    styles = manifest_styles(load_manifest(models), models)
    mosaic = next(s for s in styles if s.name.startswith("mosaic"))
    runner.load_transformer(mosaic)
    weights = torch.zeros(NUM_STYLES)
    weights[[3, 19]] = torch.tensor([0.7, 0.3])
    choices = {
        "transformer": SingleStyle(mosaic),
        "multistyle": MultiStyleBlend(weights),
        "arbitrary": StyleVector(runner.style_vector(photo("hoovertowernight.jpg", 0.1))),
    }
    for name in args.photos.split(","):
        image = photo(name, args.megapixels)
        for network in args.networks.split(","):
            choice = choices[network]
            _, condition = runner._network_for(choice, 1)
            _, (module, _, _) = runner._pixels_for(choice)
            inputs = [torch.from_numpy(np.asarray(c)) for c in condition]
            with torch.no_grad():
                for step, difference in enumerate(passes(module, image, inputs, args)):
                    print(
                        f"{name} {image.shape[1]}x{image.shape[0]} 1/{args.ratio:g} {network:11s} "
                        f"pass {step}: mean {difference.mean():.3f} "
                        f"p99 {np.percentile(difference, 99):.0f} max {difference.max()}",
                        flush=True,
                    )


def passes(
    module: torch.nn.Module,
    image: np.ndarray,
    condition: list[torch.Tensor],
    args: argparse.Namespace,
) -> Iterator[np.ndarray]:
    """|rendered - untiled| after 0, 1, ... refinement passes from the downscaled statistics."""
    from app.nets.norm_stats import CollectAllStats, InjectStats, RecordStats, probe_layout
    from app.serving.pixels import network_input

    h, w = image.shape[:2]
    x = torch.from_numpy(network_input(image))
    layout = probe_layout(lambda t: module(t * 255.0, *condition))
    inject, collect = InjectStats(module), CollectAllStats(module, layout)
    reference = module(x, *condition)[0].numpy().astype(np.int16)
    small = image
    if args.ratio > 1:  # ratio 1: the image's own statistics, a fixed point (sanity check)
        side = (round(w / math.sqrt(args.ratio)), round(h / math.sqrt(args.ratio)))
        small = np.asarray(Image.fromarray(image).resize(side, Image.Resampling.BOX))
    small = small[: small.shape[0] // 4 * 4, : small.shape[1] // 4 * 4]
    recorded = RecordStats(module)(torch.from_numpy(network_input(small)), *condition)
    mean, var = recorded[0].double().numpy(), recorded[1].double().numpy()
    counts = np.concatenate(
        [
            np.full(c, (h // s) * (w // s))
            for c, s in zip(layout.channels, layout.scales, strict=True)
        ]
    )
    for step in range(args.passes + 1):
        m32 = torch.from_numpy(mean.astype(np.float32))
        v32 = torch.from_numpy(var.astype(np.float32))
        yield np.abs(inject(x, *condition, m32, v32)[0].numpy().astype(np.int16) - reference)
        if step == args.passes:
            return
        shift, s1, s2 = collect(x, *condition, m32, v32, torch.ones(h), torch.ones(w)).double()
        mean = (shift + s1 / counts).numpy()
        var = np.maximum((s2 / counts - (s1 / counts) ** 2).numpy(), 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=1.5)
    parser.add_argument("--ratio", type=float, default=16.0, help="image / copy pixels")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--photos", default="tubingen.jpg")
    parser.add_argument("--networks", default="transformer,multistyle,arbitrary")
    refine(parser.parse_args())


if __name__ == "__main__":
    main()
