"""The training loop of Johnson et al.: a TransformerNet against a frozen loss network.

Each step stylizes a batch of photo crops, then asks the loss network that the output keep each
crop's content features and take the painting's Gram matrices. Losses are the scale-free terms
Gatys jobs use (app/perceptual/losses.py), so one set of weights carries across loss networks.

Every random choice flows from `options.seed` through state that a checkpoint saves (network,
Adam moments, crop sampler, iteration), so a resumed run continues exactly as an uninterrupted
one would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from app.core.device import uses_bf16
from app.core.progress import Cancelled
from app.nets.transformer_net import TransformerNet, clean_state_dict
from app.perceptual.backbones import Backbone
from app.perceptual.losses import content_loss, gram_matrix, style_loss, total_variation_loss
from app.training.checkpoint import TrainingCheckpoint
from app.training.options import DEFAULT_TAPS, LossTaps, TrainOptions
from app.training.photos import CropSampler

# The learning rate decays along a half cosine to this fraction of its start: late steps refine
# instead of chasing each batch, which is what keeps quality rising with more iterations.
FINAL_LR_FRACTION = 0.1
RGB_LAYER = "rgb"
_JITTER = 4  # pixels: the period of the two stride-2 layers, so every phase is seen


@dataclass(frozen=True)
class Progress:
    """One finished step. Losses are weighted terms, averaged since the previous report."""

    iteration: int
    total: int
    content_loss: float
    style_loss: float
    tv_loss: float
    images_per_s: float
    elapsed_s: float
    eta_s: float | None


@dataclass(frozen=True)
class TrainResult:
    """The trained network (eval mode, on the CPU) and the final weighted losses."""

    net: TransformerNet
    iterations: int
    content_loss: float
    style_loss: float


def train(
    photos: Sequence[np.ndarray],
    painting: np.ndarray,
    options: TrainOptions,
    backbone: Backbone,
    *,
    start: Mapping[str, Tensor] | None = None,
    resume: TrainingCheckpoint | None = None,
    on_checkpoint: Callable[[TrainingCheckpoint], None] | None = None,
    probe: np.ndarray | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_preview: Callable[[np.ndarray], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a TransformerNet on `photos` (HxWx3 uint8) towards `painting`'s style.

    `start` is the TransformerNet state dict to begin from (a warm start: a network that already
    stylizes converges on a new painting far sooner than random weights); None starts from the
    seeded random initialisation. The caller loads it when `options.warm_start` asks for one.
    `resume` continues a run from its checkpoint (its weights win over `start`);
    `on_checkpoint` receives one every
    `options.checkpoint_interval` steps (and where to keep it is the caller's business).
    `probe` is the photo previews show the current network on. `should_cancel` is read before
    every step; a True raises Cancelled.
    """
    if backbone.name not in DEFAULT_TAPS:
        raise ValueError(f"{backbone.name} cannot be a training loss network")
    taps = DEFAULT_TAPS[backbone.name]
    run = _Run(photos, painting, options, backbone, taps, probe, start=start)
    if resume is not None:
        run.restore(resume)
    while run.iteration < options.iterations:
        if should_cancel is not None and should_cancel():
            # A stop may be a shutdown that wants to resume later: keep where we are.
            if on_checkpoint is not None and run.iteration > 0:
                on_checkpoint(run.checkpoint())
            raise Cancelled
        run.step()
        if on_checkpoint is not None and _due(run.iteration, options.checkpoint_interval):
            on_checkpoint(run.checkpoint())
        if on_progress is not None:
            on_progress(run.progress())
        if on_preview is not None and _due(run.iteration, options.preview_interval):
            on_preview(run.preview())
    return run.result()


def _due(iteration: int, every: int) -> bool:
    return every > 0 and iteration % every == 0


class _Run:
    """The state of one training run, so a checkpoint is simply this object's fields."""

    def __init__(
        self,
        photos: Sequence[np.ndarray],
        painting: np.ndarray,
        options: TrainOptions,
        backbone: Backbone,
        taps: LossTaps,
        probe: np.ndarray | None,
        *,
        start: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.options = options
        self.backbone = backbone.for_training()
        self.taps = taps
        self.weights = options.weights_for(backbone.name)
        self.device = backbone.device
        self.bf16 = uses_bf16(options.precision, self.device)
        self.sampler = CropSampler(photos, options.crop_size, options.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            # Initialised even for a warm start, so the RNG stream after it is the same.
            self.net = TransformerNet().to(self.device).train()
        if start is not None:
            self.net.load_state_dict(
                {k: v.float() for k, v in clean_state_dict(start).items()}, strict=True
            )
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=options.learning_rate)
        self.iteration = 0
        self.style_targets = self._style_targets(painting)
        self.probe = to_batch(probe if probe is not None else photos[0]).to(self.device)
        self._sums = torch.zeros(3)
        self._since_report = 0
        self._started = time.perf_counter()
        self._rate_from: tuple[float, int] | None = None

    @torch.no_grad()
    def _style_targets(self, painting: np.ndarray) -> dict[str, Tensor]:
        style = _resize_long_side(to_batch(painting), self.options.style_size).to(self.device)
        features = self._features(style, self.taps.style)
        return {name: gram_matrix(features[name]) for name in self.taps.style}

    def learning_rate(self) -> float:
        progress = self.iteration / max(1, self.options.iterations)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.options.learning_rate * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)

    def step(self) -> None:
        crops = self.sampler.next_batch(self.options.batch_size).to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            objective, weighted = self._objective(crops)
        objective.backward()
        self.optimizer.step()
        self.iteration += 1
        self._sums += weighted.detach().float().cpu()
        self._since_report += 1

    def _objective(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        raw = self.net(crops * 255.0).float() / 255.0
        # The loss network sees exactly what serving returns (the clamped image); the range term
        # gives clamped pixels the gradient the clamp takes away.
        served = raw.clamp(0.0, 1.0)
        out_of_range = (F.relu(raw - 1.0).pow(2) + F.relu(-raw).pow(2)).mean()
        # The loss network sees output and photo shifted by the same random 0-3 px: its stride-2
        # layers then cannot be fooled by a pattern tuned to one pixel phase (diagonal hatching).
        dy, dx = self.sampler.jitter(_JITTER)
        size = crops.shape[-1] - _JITTER
        seen = served[..., dy : dy + size, dx : dx + size]
        photo = crops[..., dy : dy + size, dx : dx + size]
        # Features leave autocast as fp32, so the loss sums are fp32; the Gram products alone run
        # in bf16 (accumulating in fp32), as gram_matrix documents.
        features = self._features(seen, self.taps.content + self.taps.style)
        with torch.no_grad():
            content_targets = self._features(photo, self.taps.content)
        c_loss = torch.stack(
            [content_loss(features[n], content_targets[n]) for n in self.taps.content]
        ).mean()
        s_loss = torch.stack(
            [
                style_loss(gram_matrix(features[n]), target.expand(crops.shape[0], -1, -1))
                for n, target in self.style_targets.items()
            ]
        ).mean()
        tv_loss = total_variation_loss(served)
        weighted = torch.stack(
            [self.weights.content * c_loss, self.weights.style * s_loss, self.weights.tv * tv_loss]
        )
        return weighted.sum() + self.options.range_weight * out_of_range, weighted

    def _features(self, image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """Loss-network features in fp32; the pseudo-layer "rgb" is the image itself, whose Gram
        matrix is the palette (colour co-occurrence) that feature Grams alone match poorly."""
        network_layers = tuple(name for name in layers if name != RGB_LAYER)
        features = {n: f.float() for n, f in self.backbone(image, network_layers).items()}
        if RGB_LAYER in layers:
            features[RGB_LAYER] = image.float()
        return features

    def progress(self) -> Progress:
        now = time.perf_counter()
        means = (self._sums / max(1, self._since_report)).tolist()
        self._sums.zero_()
        self._since_report = 0
        if self._rate_from is None:
            # The first step includes one-off warm-up (allocation, kernel selection): rate after it.
            self._rate_from = (now, self.iteration)
            rate, eta = 0.0, None
        else:
            since, iteration_then = self._rate_from
            steps = self.iteration - iteration_then
            per_step = (now - since) / steps if steps else 0.0
            rate = self.options.batch_size / per_step if per_step else 0.0
            eta = per_step * (self.options.iterations - self.iteration) if steps else None
        return Progress(
            iteration=self.iteration,
            total=self.options.iterations,
            content_loss=means[0],
            style_loss=means[1],
            tv_loss=means[2],
            images_per_s=rate,
            elapsed_s=now - self._started,
            eta_s=eta,
        )

    @torch.no_grad()
    def preview(self) -> np.ndarray:
        return stylize_array(self.net, self.probe)

    def checkpoint(self) -> TrainingCheckpoint:
        return TrainingCheckpoint(
            iteration=self.iteration,
            model=self.net.state_dict(),
            optimizer=self.optimizer.state_dict(),
            sampler=self.sampler.state(),
            options=self.options.to_dict(),
            backbone=self.backbone.name,
        )

    def restore(self, checkpoint: TrainingCheckpoint) -> None:
        if checkpoint.backbone != self.backbone.name:
            raise ValueError(
                f"checkpoint was trained with {checkpoint.backbone}, not {self.backbone.name}"
            )
        self.net.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.sampler.restore(checkpoint.sampler)
        self.iteration = checkpoint.iteration

    def result(self) -> TrainResult:
        means = (self._sums / max(1, self._since_report)).tolist()
        net = TransformerNet()
        net.load_state_dict({k: v.detach().cpu() for k, v in self.net.state_dict().items()})
        return TrainResult(
            net=net.eval().requires_grad_(False),
            iterations=self.iteration,
            content_loss=means[0],
            style_loss=means[1],
        )


def stylize_array(net: TransformerNet, image: Tensor) -> np.ndarray:
    """Run `net` on a (1,3,H,W) 0..1 batch (padded to multiples of 4), as serving does."""
    height, width = image.shape[-2:]
    pad_h, pad_w = (-height) % 4, (-width) % 4
    padded = F.pad(image, [0, pad_w, 0, pad_h], mode="reflect") if pad_h or pad_w else image
    out = net(padded * 255.0)[..., :height, :width].clamp(0.0, 255.0)
    return out[0].round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def to_batch(image: np.ndarray) -> Tensor:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be HxWx3 uint8 arrays, got {image.dtype} {image.shape}")
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0


def _resize_long_side(image: Tensor, size: int) -> Tensor:
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    target = (max(1, round(height * scale)), max(1, round(width * scale)))
    if target == (height, width):
        return image
    return F.interpolate(
        image, size=target, mode="bicubic", align_corners=False, antialias=True
    ).clamp(0.0, 1.0)
