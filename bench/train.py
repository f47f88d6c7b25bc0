"""Training throughput: Atelier's engine against a plain eager fp32 loop, timed interleaved.

The reference (bench/train_reference.py) is Johnson et al.'s step written from the paper, on
the same loss network (the in-box VGG-16), batch and crop size. Every configuration is built
first, then the rounds interleave them (one step of each per round), so a load change on the
shared machine hits all alike, and every configuration's first step is counted. Images/s and the
ratios use all steps; CPU seconds (the process's, over the step) are reported beside wall
seconds because other processes share these cores.

`--levers` adds the engine with one speed lever taken away at a time, so each lever's share
shows against the same rounds.

    .venv/bin/python bench/train.py [--rounds 4] [--batch 4] [--crop 256] [--levers]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from machine import load_average, machine_header
from PIL import Image
from train_reference import ReferenceTrainer

from app.core.cpu_features import has_fast_bf16
from app.perceptual.backbones import Backbone, load_backbone
from app.training import TrainOptions, engine
from app.training.options import DEFAULT_TAPS
from app.weights.vgg16_import import inbox_vgg16_features

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "images"
CPU = torch.device("cpu")


def photos() -> list[np.ndarray]:
    images = []
    for path in sorted(glob.glob(str(SHARED / "training" / "*.jpg")))[:12]:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB")).copy())
    return images


def autograd_gram(features: torch.Tensor) -> torch.Tensor:
    """The Gram matrix before the custom backward: one bmm that autograd differentiates."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


def photo_to_deepest_tap(run: engine._Run) -> None:
    """Let this run compute the photo's features at every tap, as the reference loop does,
    though its content loss reads only the shallowest."""
    features = run._features
    every_tap = run.taps.content + run.taps.style

    def deeper(image: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        if layers != run.taps.content:
            return features(image, layers)
        return {name: f for name, f in features(image, every_tap).items() if name in layers}

    run._features = deeper  # type: ignore[method-assign]


@dataclass
class Config:
    label: str
    step: Callable[[], object]
    around: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def time_step(self) -> None:
        with self.around():
            wall, cpu = time.perf_counter(), time.process_time()
            self.step()
            self.wall.append(time.perf_counter() - wall)
            self.cpu.append(time.process_time() - cpu)


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def engine_run(
    content: list[np.ndarray],
    painting: np.ndarray,
    backbone: Backbone,
    args: argparse.Namespace,
    precision: str,
) -> engine._Run:
    options = TrainOptions(
        crop_size=args.crop, batch_size=args.batch, precision=precision,
        checkpoint_interval=0, preview_interval=0,
    )  # fmt: skip
    return engine._Run(content, painting, options, backbone, DEFAULT_TAPS["vgg16"], None)


def configs(args: argparse.Namespace) -> list[Config]:
    content = photos()
    with Image.open(SHARED / "paintings" / "mosaic.jpg") as image:
        painting = np.asarray(image.convert("RGB")).copy()
    cache = ROOT / "data" / "cache"
    backbone = load_backbone("vgg16", ROOT / "models", CPU, cache_dir=cache)
    reference = ReferenceTrainer(
        content, painting, inbox_vgg16_features(cache), args.batch, args.crop
    )
    found = [Config("reference: eager fp32 loop", reference.step)]
    best = "bf16" if has_fast_bf16() else "fp32"
    precisions = ["fp32", "bf16"] if best == "bf16" else ["fp32"]
    for precision in precisions:
        run = engine_run(content, painting, backbone, args, precision)
        found.append(Config(f"atelier {precision}", run.step))
    if not args.levers:
        return found
    for precision in precisions:
        run = engine_run(content, painting, backbone, args, precision)
        run.backbone.memory_format = torch.contiguous_format  # this run's view only
        found.append(Config(f"atelier {precision}, without channels-last", run.step))

        run = engine_run(content, painting, backbone, args, precision)
        found.append(
            Config(
                f"atelier {precision}, Gram backward by autograd",
                run.step,
                lambda: mock.patch.object(engine, "gram_matrix", autograd_gram),
            )
        )

        run = engine_run(content, painting, backbone, args, precision)
        photo_to_deepest_tap(run)
        found.append(Config(f"atelier {precision}, photo features to the deepest tap", run.step))
    run = engine_run(content, painting, backbone, args, best)
    found.append(Config(f"atelier {best}, 1 thread", run.step, lambda: threads(1)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--levers", action="store_true", help="also time each lever removed")
    args = parser.parse_args()
    header = machine_header("bench/train.py", args.rounds)
    runs = configs(args)
    for _ in range(args.rounds):
        for config in runs:
            config.time_step()
    print(header)
    print(
        f"- torch threads: {torch.get_num_threads()} intra-op "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
        f"fast bf16 on this CPU: {has_fast_bf16()}"
    )
    print(f"- load average at the end: {load_average()}")
    print(
        f"- batch {args.batch}, {args.crop} px crops, loss network: in-box VGG-16 to relu4_3; "
        "every step counted, the first included"
    )
    print()
    reference = runs[0]
    ref_wall, ref_cpu = float(np.mean(reference.wall)), float(np.mean(reference.cpu))
    print(
        "| configuration | wall s/step (mean) | first step | later steps (median) "
        "| CPU s/step (mean) | images/s | vs reference (wall) | vs reference (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for config in runs:
        wall, cpu = float(np.mean(config.wall)), float(np.mean(config.cpu))
        print(
            f"| {config.label} | {wall:.2f} | {config.wall[0]:.2f} "
            f"| {float(np.median(config.wall[1:] or config.wall)):.2f} | {cpu:.2f} "
            f"| {args.batch / wall:.2f} | {ref_wall / wall:.2f}x | {ref_cpu / cpu:.2f}x |"
        )


if __name__ == "__main__":
    main()
