"""`bench/gatys.py --reference`: the engine against the paper's plain loop, and bf16's quality.

Rounds interleave the configurations (a fresh optimisation of each per round), so a load change
on the shared machine hits all alike. Per-evaluation times leave out each run's first evaluation
(which also computes the targets); the first is shown on its own.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch
from gatys_reference import ReferenceGatys
from machine import load_average, machine_header
from PIL import Image

from app.core.cpu_features import has_fast_bf16
from app.gatys import GatysOptions, Progress, load_backbone, run
from app.gatys.optimize import _resize_long_side, _to_tensor
from app.perceptual.backbones import Backbone
from app.perceptual.losses import content_loss, gram_matrix, style_loss, total_variation_loss
from app.weights.vgg16_import import inbox_vgg16_features

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "images"


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()


def timed_engine(
    content: np.ndarray, style: np.ndarray, backbone: Backbone, size: int, evals: int, bf16: bool
) -> tuple[list[float], list[float], float]:
    """(wall, CPU) seconds of evaluations 2..n, and the wall seconds up to the first's end."""
    marks: list[tuple[float, float]] = []
    started = time.perf_counter()

    def mark(_: Progress) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    run(
        content, [style], GatysOptions(iterations=evals, size=size), backbone,
        on_progress=mark, bf16=bf16,
    )  # fmt: skip
    walls = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
    cpus = [b[1] - a[1] for a, b in itertools.pairwise(marks)]
    return walls, cpus, marks[0][0] - started


def timed_reference(
    content: np.ndarray, style: np.ndarray, state: dict[str, torch.Tensor], size: int, evals: int
) -> tuple[list[float], list[float], float]:
    started = time.perf_counter()
    reference = ReferenceGatys(content, style, state, size)
    reference.step()
    first = time.perf_counter() - started
    walls, cpus = [], []
    for _ in range(evals - 1):
        wall, cpu = time.perf_counter(), time.process_time()
        reference.step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, first


def objective_fp32(
    image: np.ndarray, content: np.ndarray, style: np.ndarray, backbone: Backbone
) -> float:
    """The engine's objective (default weights) of a finished image, scored in fp32."""
    weights = backbone.default_weights
    out = _to_tensor(image)
    size = max(out.shape[-2:])
    with torch.no_grad():
        photo = _resize_long_side(_to_tensor(content), size)
        features = backbone(out)
        targets = backbone(photo)
        style_features = backbone(_resize_long_side(_to_tensor(style), size))
        c = torch.stack([content_loss(features[n], targets[n]) for n in backbone.content_layers])
        s = torch.stack(
            [
                style_loss(gram_matrix(features[n]), gram_matrix(style_features[n]))
                for n in backbone.style_layers
            ]
        )
        total = (
            weights.content * c.mean()
            + weights.style * s.mean()
            + weights.tv * total_variation_loss(out)
        )
    return float(total)


def compare(args: argparse.Namespace, device: torch.device) -> None:
    header = machine_header("bench/gatys.py --reference", args.rounds)
    content = rgb(SHARED / "photos" / "tubingen.jpg")
    style = rgb(SHARED / "paintings" / "starry_night.jpg")
    cache = ROOT / "data" / "cache"
    backbone = load_backbone("vgg16", args.models_dir, device, cache_dir=cache)
    state = inbox_vgg16_features(cache)
    bf16_rows = [False, True] if has_fast_bf16() else [False]
    evals = max(2, args.iterations)
    print(header)
    print(f"- torch threads: {torch.get_num_threads()}; fast bf16: {has_fast_bf16()}")
    print(f"- {evals} evaluations per run; tubingen.jpg in the style of starry_night.jpg")
    for size in args.sizes:
        samples: dict[str, tuple[list[float], list[float], list[float]]] = {}
        for _ in range(args.rounds):
            results = {
                "reference: eager fp32 loop": timed_reference(content, style, state, size, evals)
            }
            for bf16 in bf16_rows:
                label = f"atelier {'bf16' if bf16 else 'fp32'}"
                results[label] = timed_engine(content, style, backbone, size, evals, bf16)
            for label, (walls, cpus, first) in results.items():
                entry = samples.setdefault(label, ([], [], []))
                entry[0].extend(walls)
                entry[1].extend(cpus)
                entry[2].append(first)
        print(f"- load average after {size} px: {load_average()}")
        print()
        print(
            f"| {size} px | wall s/evaluation (median) | CPU s/evaluation (median) "
            "| first evaluation, wall s | vs reference (wall) | vs reference (CPU) |"
        )
        print("|---|---|---|---|---|---|")
        ref_wall = float(np.median(samples["reference: eager fp32 loop"][0]))
        ref_cpu = float(np.median(samples["reference: eager fp32 loop"][1]))
        for label, (walls, cpus, firsts) in samples.items():
            wall, cpu = float(np.median(walls)), float(np.median(cpus))
            print(
                f"| {label} | {wall:.2f} | {cpu:.2f} | {np.median(firsts):.1f} "
                f"| {ref_wall / wall:.2f}x | {ref_cpu / cpu:.2f}x |"
            )
        print()
    if len(bf16_rows) < 2 or args.quality_iterations <= 0:
        return
    options = GatysOptions(iterations=args.quality_iterations, size=args.quality_size, seed=0)
    images = {bf16: run(content, [style], options, backbone, bf16=bf16) for bf16 in bf16_rows}
    fp32_loss = objective_fp32(images[False], content, style, backbone)
    bf16_loss = objective_fp32(images[True], content, style, backbone)
    difference = np.abs(images[False].astype(int) - images[True].astype(int)).mean()
    print(
        f"Quality, {args.quality_iterations} evaluations at {args.quality_size} px, final "
        f"objective scored in fp32: fp32 path {fp32_loss:.4f}, bf16 path {bf16_loss:.4f} "
        f"({bf16_loss / fp32_loss - 1:+.1%}); mean |fp32 - bf16| {difference:.1f}/255"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([images[False], images[True]], axis=1)).save(
        out / "gatys-fp32-vs-bf16.png"
    )
    print(f"side by side (fp32 | bf16): {out / 'gatys-fp32-vs-bf16.png'}")
