"""Cold against warm start: the perceptual objective on held-out photos against training time.

Two runs of the training engine with the same painting, photos, seed and options: one from
random weights (cold), one from the in-box starting style (warm). Their steps interleave, so a
load change on the shared machine hits both alike; each run's clock counts only its own steps,
in wall and in process CPU seconds. Every --every steps both networks are scored on held-out
photos (../shared/images/photos, never trained on) by the training objective itself: VGG-16
content, style and TV terms with the default weights, in fp32 at --eval-size px. The in-box
network of the same painting is scored the same way: that is the bar "in-box quality".

Results are cached in docs/warm-start.json after every evaluation, with each network's output on
the first held-out photo saved under bench/results/ to look at; `--plot` redraws
docs/warm-start.png (and prints the table) from the cache without training.

    .venv/bin/python bench/warm_start.py [--painting candy] [--steps 400] [--every 25]
    .venv/bin/python bench/warm_start.py --plot
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_flags, cpu_model, load_average
from PIL import Image

from app.core.config import Settings
from app.jobs.kinds.training import warm_start_weights
from app.nets.transformer_net import TransformerNet
from app.perceptual.backbones import Backbone, load_backbone
from app.perceptual.losses import content_loss, gram_matrix, style_loss, total_variation_loss
from app.styles.catalog import manifest_styles
from app.training import TrainOptions
from app.training.engine import _resize_long_side, _Run, stylize_array, to_batch
from app.training.options import DEFAULT_TAPS
from app.weights.checkpoints import load_transformer_net
from app.weights.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "images"
CACHE = ROOT / "docs" / "warm-start.json"
PLOT = ROOT / "docs" / "warm-start.png"
HELD_OUT = ("amber", "bridge", "golden_gate", "hoovertowernight", "tubingen")
CPU = torch.device("cpu")


def rgb(path: Path, long_side: int | None = None) -> np.ndarray:
    with Image.open(path) as image:
        picture = image.convert("RGB")
    if long_side is not None:
        picture.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return np.asarray(picture).copy()


class HeldOutObjective:
    """The training objective of a network on whole held-out photos (no crops, no jitter)."""

    def __init__(self, backbone: Backbone, painting: np.ndarray, size: int, style_size: int):
        self.taps = DEFAULT_TAPS["vgg16"]
        self.backbone = backbone.for_training()
        self.photos = [to_batch(rgb(SHARED / "photos" / f"{n}.jpg", size)) for n in HELD_OUT]
        self.photos = [p[..., : p.shape[-2] // 4 * 4, : p.shape[-1] // 4 * 4] for p in self.photos]
        with torch.no_grad():
            style = _resize_long_side(to_batch(painting), style_size)
            features = self.backbone(style, self.taps.style)
            self.grams = {n: gram_matrix(features[n]) for n in self.taps.style}

    @torch.no_grad()
    def __call__(self, net: TransformerNet) -> dict[str, float]:
        was_training = net.training
        net.eval()
        weights = self.taps.weights
        terms = np.zeros(3)
        for photo in self.photos:
            out = (net(photo * 255.0) / 255.0).clamp(0.0, 1.0)
            layers = self.taps.content + self.taps.style
            features = self.backbone(out, tuple(dict.fromkeys(layers)))
            targets = self.backbone(photo, self.taps.content)
            content = np.mean([float(content_loss(features[n], targets[n])) for n in targets])
            style = np.mean(
                [float(style_loss(gram_matrix(features[n]), self.grams[n])) for n in self.grams]
            )
            tv = float(total_variation_loss(out))
            terms += (weights.content * content, weights.style * style, weights.tv * tv)
        net.train(was_training)
        terms /= len(self.photos)
        return {
            "objective": float(terms.sum()),
            "content": float(terms[0]),
            "style": float(terms[1]),
            "tv": float(terms[2]),
        }


def inbox_network(painting: str) -> tuple[str, TransformerNet] | None:
    models = ROOT / "models"
    for style in manifest_styles(load_manifest(models), models):
        if style.name == f"{painting}-atelier" and style.checkpoint is not None:
            return style.name, load_transformer_net(style.checkpoint)
    return None


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    photos = [rgb(Path(p)) for p in sorted(glob.glob(str(SHARED / "training" / "*.jpg")))]
    painting = rgb(SHARED / "paintings" / f"{args.painting}.jpg")
    backbone = load_backbone("vgg16", ROOT / "models", CPU, cache_dir=ROOT / "data" / "cache")
    settings = Settings(models_dir=ROOT / "models")
    start = warm_start_weights(settings)
    if start is None:
        raise SystemExit(f"the starting style {settings.training_warm_start_style} is missing")
    options = TrainOptions(iterations=args.steps, checkpoint_interval=0, preview_interval=0)
    score = HeldOutObjective(backbone, painting, args.eval_size, options.style_size)
    taps = DEFAULT_TAPS["vgg16"]
    runs = {
        "cold": _Run(photos, painting, options, backbone, taps, None),
        "warm": _Run(photos, painting, options, backbone, taps, None, start=start),
    }
    inbox = inbox_network(args.painting)
    result: dict[str, object] = {
        "machine": f"{cpu_model()}, {len(cpu_flags() & {'avx512_bf16', 'amx_bf16'})} bf16 flags",
        "torch_threads": torch.get_num_threads(),
        "load_average_start": load_average(),
        "painting": args.painting,
        "start_style": settings.training_warm_start_style,
        "photos": f"{len(photos)} photos of ../shared/images/training",
        "held_out": list(HELD_OUT),
        "eval_size": args.eval_size,
        "options": options.to_dict(),
        "bf16": runs["cold"].bf16,
        "inbox": {"name": inbox[0], **score(inbox[1])} if inbox else None,
        "curves": {name: [] for name in runs},
    }
    clocks = {name: [0.0, 0.0] for name in runs}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    probe = score.photos[0]

    def record() -> None:
        for name, run in runs.items():
            # What the objective stands for, to look at: the network on the first held-out photo.
            with torch.no_grad():
                Image.fromarray(stylize_array(run.net.eval(), probe)).save(
                    out / f"warm-start-{name}-{run.iteration:04d}.jpg", quality=90
                )
            run.net.train()
            point = {"step": run.iteration, "wall_s": clocks[name][0], "cpu_s": clocks[name][1]}
            result["curves"][name].append({**point, **score(run.net)})  # type: ignore[index]
        result["load_average_end"] = load_average()
        CACHE.write_text(json.dumps(result, indent=1) + "\n")
        print({n: result["curves"][n][-1] for n in runs}, flush=True)  # type: ignore[index]

    record()
    for step in range(1, args.steps + 1):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run.step()
            clocks[name][0] += time.perf_counter() - wall
            clocks[name][1] += time.process_time() - cpu
        if step % args.every == 0 or step == args.steps:
            record()
    for name, run in runs.items():
        torch.save(run.net.state_dict(), out / f"warm-start-{name}.pth")


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.loads(CACHE.read_text())
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, clock, label in zip(
        axes,
        ("cpu_s", "wall_s"),
        ("CPU minutes (this process)", "wall minutes (shared, loaded machine)"),
        strict=True,
    ):
        for name, colour in (("cold", "tab:blue"), ("warm", "tab:orange")):
            curve = result["curves"][name]
            axis.plot(
                [p[clock] / 60 for p in curve],
                [p["objective"] for p in curve],
                marker="o",
                markersize=3,
                color=colour,
                label=f"{name} start",
            )
        if result.get("inbox"):
            axis.axhline(
                result["inbox"]["objective"],
                color="tab:green",
                linestyle="--",
                label=f"in-box {result['inbox']['name']}",
            )
        axis.set_xlabel(f"training time: {label}")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("objective on held-out photos (lower is better)")
    axes[0].legend()
    figure.suptitle(
        f"Training {result['painting']}: cold start vs warm start from {result['start_style']} "
        f"(batch {result['options']['batch_size']}, {result['options']['crop_size']} px crops)"
    )
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)
    print(f"wrote {PLOT}")


def table() -> str:
    """The cached curve as a markdown table: objective per step, CPU and wall minutes."""
    result = json.loads(CACHE.read_text())
    cold, warm = result["curves"]["cold"], result["curves"]["warm"]
    lines = [
        "| step | cold: objective (content, style) | warm: objective (content, style) "
        "| CPU min (cold / warm) | wall min (cold / warm) |",
        "|---|---|---|---|---|",
    ]
    for c, w in zip(cold, warm, strict=False):
        lines.append(
            f"| {c['step']} | {c['objective']:.3f} ({c['content']:.3f}, {c['style']:.3f}) "
            f"| {w['objective']:.3f} ({w['content']:.3f}, {w['style']:.3f}) "
            f"| {c['cpu_s'] / 60:.1f} / {w['cpu_s'] / 60:.1f} "
            f"| {c['wall_s'] / 60:.1f} / {w['wall_s'] / 60:.1f} |"
        )
    if result.get("inbox"):
        inbox = result["inbox"]
        lines.append(
            f"| in-box {inbox['name']} | {inbox['objective']:.3f} "
            f"({inbox['content']:.3f}, {inbox['style']:.3f}) | | | |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--painting", default="candy")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--plot", action="store_true", help="only redraw the plot from the cache")
    args = parser.parse_args()
    if not args.plot:
        train(args)
    plot()
    print(table())


if __name__ == "__main__":
    main()
