"""How many iterations of optimisation each in-box network is worth: Johnson et al. (2016), Fig. 5.

For each in-box style and held-out photo, the training objective (the in-box VGG-16 loss network
with app/training's taps and weights, and the style weight of the style's recipe in the Makefile)
is computed for:

- our network's output (what serving returns: clamped to 0..255);
- L-BFGS optimisation of that same objective after 5, 10, 15, 20, 25, 50, 100, 200 and 300
  evaluations (the objective of the clamped image at each point), started from the photo
  (`--start photo`, the default, as issue 16 asks) or from white noise (`--start noise`, as the
  paper's optimisation baseline: the ImageNet mean colour plus Gaussian noise of 0.001 on the
  0..255 scale, jcjohnson/neural-style's `-init random`). From the photo the content term
  starts at zero, so the optimiser is a stronger opponent in its first iterations.

With `--official`, where ../shared holds the official network's output for the held-out photo
(images/reference/PHOTO-STYLE.jpg, made at the photo's full size), that output is scored too,
beside ours run at the same full size: both resized to the measured size, so both carry the same
resampling, and our network's usual score (run at the measured size) stays as it was. It says
where the official networks stand on this same measure.

The iterations a network "matches" is where its objective crosses the L-BFGS curve, interpolated
linearly between measured points (0 = the start image itself scores better than the network;
">300" = better than 300 iterations). The L-BFGS curves do not depend on the networks, so they
are cached under bench/results/perceptual/ (git-ignored), keyed by everything they do depend on;
after a retraining, `--networks-only` re-evaluates the networks against the cached curves in
seconds.

    .venv/bin/python bench/perceptual.py [--networks-only] [--plot docs/perceptual.png]
        [--network mosaic=PATH ...] [--threads 1] [--start photo noise] [--official]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from app.core.config import Settings
from app.core.heap import restart_with_kept_memory
from app.gatys.optimize import LBFGS_HISTORY
from app.perceptual.backbones import Backbone, LossWeights, load_backbone
from app.perceptual.losses import content_loss, gram_matrix, style_loss, total_variation_loss
from app.training.engine import stylize_array, to_batch
from app.training.options import DEFAULT_TAPS, LossTaps, TrainOptions
from app.weights.checkpoints import load_transformer_net
from app.weights.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "images"
OFFICIAL = SHARED / "reference"
CACHE = ROOT / "bench" / "results" / "perceptual"
STYLES = ("mosaic", "candy", "rain-princess", "udnie")
# Dense early: the curve falls steeply and bends before 25 iterations, where the networks cross
# it, and a straight line from the start to 25 would place each crossing too late.
CHECKPOINTS = (5, 10, 15, 20, 25, 50, 100, 200, 300)
STARTS = ("photo", "noise")
START_COLOURS = {"photo": "tab:blue", "noise": "tab:orange"}
# jcjohnson/neural-style's `-init random`: randn * 0.001 in mean-subtracted 0..255 space.
NOISE_STD = 0.001 / 255
IMAGENET_MEAN_RGB = (123.68 / 255, 116.779 / 255, 103.939 / 255)
# Held out from training: `make train-styles` trains on ../shared/images/training and every photo
# of ../shared/images/photos except amber; the swagger samples are never trained on.
HELD_OUT = {
    256: (SHARED / "photos" / "amber.jpg",),
    512: (ROOT / "swagger-samples" / "chelsea.jpg",),
}


@dataclass(frozen=True)
class Objective:
    """The training objective of app/training/engine.py for one painting, on single images.

    The trainer's random 0-3 px jitter is left out (an evaluation must be deterministic), and so
    is its range term: it is zero on the clamped images that are scored here.
    """

    backbone: Backbone
    taps: LossTaps
    weights: LossWeights
    style_grams: dict[str, Tensor]
    range_weight: float

    def terms(self, image: Tensor, photo_features: dict[str, Tensor]) -> Tensor:
        """(content, style, tv), weighted, of an RGB 0..1 image (already clamped)."""
        features = self.backbone(image, self.taps.content + self.taps.style)
        c_loss = torch.stack(
            [content_loss(features[n], photo_features[n]) for n in self.taps.content]
        ).mean()
        s_loss = torch.stack(
            [style_loss(gram_matrix(features[n]), g) for n, g in self.style_grams.items()]
        ).mean()
        w = self.weights
        return torch.stack(
            [w.content * c_loss, w.style * s_loss, w.tv * total_variation_loss(image)]
        )

    @torch.no_grad()
    def score(self, image: Tensor, photo_features: dict[str, Tensor]) -> float:
        return float(self.terms(image.clamp(0.0, 1.0), photo_features).sum())

    def trained(self, raw: Tensor, photo_features: dict[str, Tensor]) -> Tensor:
        """What L-BFGS minimises: the objective of the clamped image plus the trainer's range
        term, exactly as a training step scores the raw network output."""
        out_of_range = (F.relu(raw - 1.0).pow(2) + F.relu(-raw).pow(2)).mean()
        return self.terms(raw.clamp(0.0, 1.0), photo_features).sum() + (
            self.range_weight * out_of_range
        )

    @torch.no_grad()
    def photo_features(self, photo: Tensor) -> dict[str, Tensor]:
        return self.backbone(photo, self.taps.content)


def recipe_from_makefile(makefile: Path) -> dict[str, tuple[float, int]]:
    """Each style's (style weight, painting size) as `make train-styles` last trains it:
    TRAIN_STYLES holds STYLE:WEIGHT[:SIZE], then TRAIN_MORE's STYLE:WEIGHT[:SIZE[:STEPS]]
    (the objective the shipped network was trained further on) overrides it; TRAIN_STYLE_SIZE
    is the default size. The Makefile is where the in-box recipe is written down."""
    text = makefile.read_text(encoding="utf-8")
    default_size = re.search(r"^TRAIN_STYLE_SIZE \?= (\d+)$", text, re.MULTILINE)
    if default_size is None:
        raise SystemExit(f"{makefile}: no TRAIN_STYLE_SIZE line")
    recipe = {}
    for variable in ("TRAIN_STYLES", "TRAIN_MORE"):
        entries = re.search(rf"^{variable} \?= (.*)$", text, re.MULTILINE)
        if entries is None:
            raise SystemExit(f"{makefile}: no {variable} line")
        for entry in entries.group(1).split():
            name, weight, *size = entry.split(":")
            recipe[name] = (float(weight), int(size[0]) if size else int(default_size.group(1)))
    return recipe


def load_image(path: Path, long_side: int) -> Tensor:
    """RGB 0..1 batch with the longest side `long_side` (Lanczos), as the benches do."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = long_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return to_batch(
            np.asarray(image.resize(size, Image.Resampling.LANCZOS)).copy()
        ).contiguous()


def build_objective(
    backbone: Backbone, painting: Path, style_weight: float, style_size: int
) -> Objective:
    taps = DEFAULT_TAPS[backbone.name]
    options = TrainOptions(style_weight=style_weight, style_size=style_size)
    style = load_image(painting, style_size)
    with torch.no_grad():
        features = backbone(style, taps.style)
    grams = {name: gram_matrix(features[name]) for name in taps.style}
    return Objective(
        backbone, taps, options.weights_for(backbone.name), grams, options.range_weight
    )


def resized(image: Tensor, like: Tensor) -> Tensor:
    """`image` at `like`'s height and width (Lanczos, through 8-bit as any saved output)."""
    array = (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    size = (like.shape[-1], like.shape[-2])
    return to_batch(np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS)))


def official_scores(
    objective: Objective,
    net: torch.nn.Module | None,
    photo_path: Path,
    photo: Tensor,
    targets: dict[str, Tensor],
    style: str,
) -> tuple[float, float | None] | None:
    """(official output, ours at the same full size), both resized to `photo` and scored
    against its `targets`; None where ../shared holds no official output of this photo and
    style."""
    path = OFFICIAL / f"{photo_path.stem}-{style}.jpg"
    if not path.is_file():
        return None
    with Image.open(path) as image:
        official = to_batch(np.asarray(image.convert("RGB")).copy())
    ours = None
    if net is not None:
        full = load_image(photo_path, max(official.shape[-2:]))
        with torch.no_grad():
            ours = objective.score(resized(to_batch(stylize_array(net, full)), photo), targets)
    return objective.score(resized(official, photo), targets), ours


def start_image(kind: str, photo: Tensor) -> Tensor:
    """Where L-BFGS starts: the photo, or the paper's white noise (seeded, so curves cache)."""
    if kind == "photo":
        return photo
    noise = torch.randn(photo.shape, generator=torch.Generator().manual_seed(0)) * NOISE_STD
    return torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1) + noise


def lbfgs_curve(
    objective: Objective,
    photo: Tensor,
    start: Tensor,
    checkpoints: tuple[int, ...],
    partial: Path,
) -> list[float]:
    """The objective after each checkpoint's number of evaluations, the start image first.

    L-BFGS as Gatys jobs run it (app/gatys/optimize.py): lr 1, history 50, no line search, a
    budget of evaluations spread over steps that may stop early. The image and the optimiser's
    state are saved to `partial` at every checkpoint, so a later run with more checkpoints
    continues where this one stopped, exactly as an uninterrupted run would.
    """
    targets = objective.photo_features(photo)
    # L-BFGS flattens gradients with .view(): the image must be contiguous.
    image = start.clone(memory_format=torch.contiguous_format).requires_grad_(True)
    optimiser = torch.optim.LBFGS([image], lr=1.0, history_size=LBFGS_HISTORY)
    evaluations = 0
    curve = [objective.score(start, targets)]
    if partial.is_file():
        saved = torch.load(partial, weights_only=True)
        with torch.no_grad():
            image.copy_(saved["image"])
        optimiser.load_state_dict(saved["optimizer"])
        evaluations, curve = saved["evaluations"], saved["curve"]

    def evaluate() -> Tensor:
        nonlocal evaluations
        optimiser.zero_grad(set_to_none=True)
        value = objective.trained(image, targets)
        value.backward()
        evaluations += 1
        return value

    for target in checkpoints[len(curve) - 1 :]:
        while evaluations < target:
            optimiser.param_groups[0]["max_iter"] = target - evaluations
            optimiser.param_groups[0]["max_eval"] = target - evaluations
            optimiser.step(evaluate)
        curve.append(objective.score(image.detach(), targets))
        state = {"image": image.detach(), "optimizer": optimiser.state_dict(),
                 "evaluations": evaluations, "curve": curve}  # fmt: skip
        torch.save(state, partial)
    return curve


def matched_iterations(curve: list[float], iterations: list[int], value: float) -> float:
    """Where `value` first crosses the curve, linearly interpolated; inf when below its end."""
    if value >= curve[0]:
        return 0.0
    for (i0, v0), (i1, v1) in zip(
        zip(iterations, curve, strict=True),
        zip(iterations[1:], curve[1:], strict=True),
        strict=False,
    ):
        if v1 <= value:
            return i0 + (v0 - value) / (v0 - v1) * (i1 - i0) if v0 != v1 else float(i1)
    return float("inf")


def curve_key(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
    return digest.hexdigest()[:16]


def network_paths(models_dir: Path, overrides: dict[str, Path]) -> dict[str, Path]:
    """The in-box network for each style (the manifest entry standing in for it), unless
    `--network STYLE=PATH` names another file."""
    manifest = load_manifest(models_dir)
    paths: dict[str, Path] = {}
    for entry in manifest.styles.values():
        if entry.stands_in_for in STYLES and (models_dir / entry.file).is_file():
            paths[entry.stands_in_for] = models_dir / entry.file
    return {**paths, **overrides}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in results})
    styles = [s for s in STYLES if any(r["style"] == s for r in results)]
    last = max(r["iterations"][-1] for r in results)
    figure, axes = plt.subplots(
        len(sizes), len(styles), figsize=(3.2 * len(styles), 2.9 * len(sizes)), squeeze=False
    )
    for row, size in enumerate(sizes):
        for column, style in enumerate(styles):
            axis = axes[row][column]
            panel = [r for r in results if r["size"] == size and r["style"] == style]
            for result in panel:
                matched = result["matched"]
                crossing = (
                    ""
                    if matched is None
                    else f" (≈{matched:.0f} it.)"
                    if np.isfinite(matched)
                    else f" (>{result['iterations'][-1]} it.)"
                )
                axis.plot(
                    result["iterations"],
                    result["curve"],
                    "o-",
                    color=START_COLOURS[result["start"]],
                    label=f"L-BFGS from {result['start']}{crossing}",
                )
            if panel and panel[0]["network"] is not None:
                axis.axhline(panel[0]["network"], color="tab:red", linestyle="--", label="network")
            if panel and panel[0].get("official") is not None:
                official, ours = panel[0]["official"]
                axis.axhline(official, color="black", linestyle=":", label="official, full size")
                if ours is not None and ours != panel[0]["network"]:  # equal at full size
                    axis.axhline(ours, color="tab:red", linestyle=":", label="ours, full size")
            if panel:
                axis.set_title(f"{style}, {size} px ({panel[0]['photo']})", fontsize=9)
            axis.set_yscale("log")
            axis.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            axis.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2, 3, 5)))
            axis.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            axis.set_xlim(-5, last + 5)
            axis.set_xlabel("L-BFGS iterations", fontsize=8)
            if column == 0:
                axis.set_ylabel("training objective (VGG-16)", fontsize=8)
            axis.tick_params(labelsize=7)
            axis.legend(fontsize=7)
    figure.suptitle(
        "Perceptual objective: L-BFGS vs one pass of our network (Johnson et al. 2016, Fig. 5)",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def cached_curve(
    args: argparse.Namespace,
    objective: Objective,
    painting: Path,
    photo_path: Path,
    photo: Tensor,
    size: int,
    style_size: int,
    start: str,
) -> list[float] | None:
    """The L-BFGS curve from the cache, continued or computed as far as `--up-to` asks; None
    (named on stdout) where `--networks-only` finds nothing cached."""
    key = curve_key(
        photo_path.read_bytes(),
        painting.read_bytes(),
        size,
        objective.taps,
        objective.weights,
        style_size,
        objective.range_weight,
        CHECKPOINTS,
        objective.backbone.weights_source,
        LBFGS_HISTORY,
        start,
        NOISE_STD,
        IMAGENET_MEAN_RGB,
    )
    style = painting.stem
    cached = args.cache / f"{style}-{photo_path.stem}-{size}-from-{start}-{key}.json"
    partial = cached.with_suffix(".partial.pt")
    wanted = tuple(c for c in CHECKPOINTS if c <= args.up_to)
    so_far = torch.load(partial, weights_only=True)["curve"] if partial.is_file() else []
    if cached.is_file():
        return json.loads(cached.read_text())["curve"]
    if so_far and (args.networks_only or len(so_far) > len(wanted)):
        return so_far
    if args.networks_only:
        print(f"skip {style} {photo_path.name} {size} px from {start}: no cached curve ({cached})")
        return None
    started = time.perf_counter()
    curve = lbfgs_curve(objective, photo, start_image(start, photo), wanted, partial)
    print(
        f"  L-BFGS {style} {photo_path.name} {size} px from {start} to {wanted[-1]}: "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    if len(curve) == len(CHECKPOINTS) + 1:
        cached.write_text(json.dumps({"iterations": [0, *CHECKPOINTS], "curve": curve}))
        partial.unlink()
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(HELD_OUT))
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument(
        "--photo",
        type=Path,
        action="append",
        default=None,
        help="held-out photo(s) for every size (default: one per size)",
    )
    parser.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="STYLE=PATH",
        help="score this TransformerNet file instead of the in-box one",
    )
    parser.add_argument(
        "--networks-only",
        action="store_true",
        help="use cached L-BFGS curves only; skip (and name) any not cached",
    )
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--plot", type=Path, default=None, help="write the figure here")
    parser.add_argument(
        "--up-to",
        type=int,
        default=CHECKPOINTS[-1],
        help="run L-BFGS only this far now; a later run continues the curve",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--official",
        action="store_true",
        help="also score the official network's output where ../shared has it for the photo",
    )
    parser.add_argument(
        "--start",
        nargs="+",
        default=["photo"],
        choices=STARTS,
        help="where L-BFGS starts: the photo, or the paper's white noise (both: one curve each)",
    )
    args = parser.parse_args(argv)
    restart_with_kept_memory(True)  # as `atelier` runs: torch reuses its freed activations
    torch.set_num_threads(args.threads)

    overrides = {}
    for spec in args.network:
        style, _, path = spec.partition("=")
        if style not in STYLES or not path:
            parser.error(f"--network wants STYLE=PATH with STYLE one of {STYLES}, got {spec!r}")
        overrides[style] = Path(path)
    networks = network_paths(args.models_dir, overrides)
    recipe = recipe_from_makefile(ROOT / "Makefile")
    backbone = load_backbone(
        "vgg16", args.models_dir, torch.device("cpu"), cache_dir=Settings().cache_dir
    ).for_training()
    args.cache.mkdir(parents=True, exist_ok=True)
    iterations = [0, *CHECKPOINTS]

    results: list[dict] = []
    for size in args.sizes:
        photos = args.photo or list(HELD_OUT.get(size, HELD_OUT[256]))
        for style in args.styles:
            painting = SHARED / "paintings" / f"{style}.jpg"
            style_weight, style_size = recipe[style]
            objective = build_objective(backbone, painting, style_weight, style_size)
            for photo_path in photos:
                photo = load_image(photo_path, size)
                targets = objective.photo_features(photo)
                network, net = None, None
                if style in networks:
                    net = load_transformer_net(networks[style])
                    with torch.no_grad():
                        output = to_batch(stylize_array(net, photo))
                    network = objective.score(output, targets)
                official = (
                    official_scores(objective, net, photo_path, photo, targets, style)
                    if args.official
                    else None
                )
                for start in args.start:
                    curve = cached_curve(
                        args, objective, painting, photo_path, photo, size, style_size, start
                    )
                    if curve is None:
                        continue
                    result = {"style": style, "photo": photo_path.stem, "size": size,
                              "start": start, "iterations": iterations[: len(curve)],
                              "curve": curve, "network": network, "matched": None,
                              "official": official}  # fmt: skip
                    if network is not None:
                        result["matched"] = matched_iterations(curve, result["iterations"], network)
                    if official is not None:
                        result["official_matched"] = [
                            None
                            if v is None
                            else matched_iterations(curve, result["iterations"], v)
                            for v in official
                        ]
                    results.append(result)

    if not results:
        print("nothing to report")
        return 1
    print(
        "\n| style | size | photo | start | network objective | L-BFGS at "
        + " / ".join(str(i) for i in iterations)
        + " | matched iterations |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        curve = " / ".join(f"{v:.3g}" for v in r["curve"]) + " / -" * (
            len(iterations) - len(r["curve"])
        )
        if r["network"] is None:
            network, matched = "no network", "-"
        else:
            network = f"{r['network']:.3g}"
            matched = _iterations(r["matched"], r["iterations"])
        print(
            f"| {r['style']} | {r['size']} | {r['photo']} | {r['start']} | {network} | {curve} "
            f"| {matched} |"
        )
    at_full = [r for r in results if r.get("official") is not None]
    if at_full:
        print(
            "\nRun at the photo's full size, then resized (objective, matched iterations):\n"
            "\n| style | size | photo | start | official network | ours |"
            "\n|---|---|---|---|---|---|"
        )
    for r in at_full:
        cells = [
            "-" if v is None else f"{v:.3g} ({_iterations(m, r['iterations'])})"
            for v, m in zip(r["official"], r["official_matched"], strict=True)
        ]
        print(
            f"| {r['style']} | {r['size']} | {r['photo']} | {r['start']} | "
            + " | ".join(cells)
            + " |"
        )
    (args.cache / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if args.plot is not None:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _iterations(matched: float | None, iterations: list[int]) -> str:
    if matched is None:
        return "-"
    return f"{matched:.0f}" if np.isfinite(matched) else f">{iterations[-1]}"


if __name__ == "__main__":
    sys.exit(main())
