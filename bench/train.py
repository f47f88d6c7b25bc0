"""Seconds per training step and images/s, per loss network, crop size and precision.

Each configuration is a fresh `_Run` of the training engine on real content photos; rounds are
interleaved (every configuration times one step per round after two warm-up steps), so a load
change on the shared machine hits all of them alike. VGG-16 runs with random weights in the
official layout when its weights are not installed: the cost of a step does not depend on the
weights. bf16 rows appear only where the CPU has fast bf16 (AMX or AVX-512 BF16).

    .venv/bin/python bench/train.py [--rounds 5] [--crops 128,192,256] [--batch 2]
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import numpy as np
import torch
from machine import cell, machine_header
from PIL import Image

from app.core.cpu_features import has_fast_bf16
from app.perceptual.backbones import VGG16_WEIGHTS_FILE, Backbone, VGG16Backbone, load_backbone
from app.training import TrainOptions
from app.training.engine import _Run
from app.training.options import DEFAULT_TAPS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "images"


def photos() -> list[np.ndarray]:
    images = []
    for path in sorted(glob.glob(str(SHARED / "training" / "*.jpg")))[:12]:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB")).copy())
    return images


def backbones() -> dict[str, Backbone]:
    found = {"efficientnet-lite0": load_backbone("efficientnet-lite0", ROOT / "models", CPU)}
    if (ROOT / "models" / VGG16_WEIGHTS_FILE).is_file():
        found["vgg16"] = load_backbone("vgg16", ROOT / "models", CPU)
    else:
        found["vgg16 (random weights)"] = VGG16Backbone().freeze()
    return found


CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crops", default="128,192,256")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    content = photos()
    with Image.open(SHARED / "paintings" / "mosaic.jpg") as image:
        painting = np.asarray(image.convert("RGB")).copy()
    precisions = ["fp32", "bf16"] if has_fast_bf16() else ["fp32"]
    runs: dict[tuple[str, int, str], _Run] = {}
    for label, backbone in backbones().items():
        taps = DEFAULT_TAPS[backbone.name]
        for crop in (int(c) for c in args.crops.split(",")):
            for precision in precisions:
                options = TrainOptions(
                    crop_size=crop, batch_size=args.batch, precision=precision,
                    checkpoint_interval=0, preview_interval=0,
                )  # fmt: skip
                run = _Run(content, painting, options, backbone, taps, None)
                for _ in range(2):
                    run.step()
                runs[(label, crop, precision)] = run
    samples: dict[tuple[str, int, str], list[float]] = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            time.sleep(0.05)
            started = time.perf_counter()
            run.step()
            samples[key].append((time.perf_counter() - started) * 1000)
    print(machine_header("bench/train.py", args.rounds))
    print(f"- batch {args.batch}, {len(content)} photos from ../shared/images/training")
    print()
    print("| loss network | crop | precision | ms per step | images/s | vs fp32 |")
    print("|---|---|---|---|---|---|")
    for (label, crop, precision), times in samples.items():
        median = float(np.median(times))
        fp32 = float(np.median(samples[(label, crop, "fp32")]))
        ratio = "" if precision == "fp32" else f"{fp32 / median:.2f}x faster"
        print(f"| {label} | {crop} | {precision} | {cell(times)} | "
              f"{args.batch / (median / 1000):.1f} | {ratio} |")  # fmt: skip


if __name__ == "__main__":
    main()
