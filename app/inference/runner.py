"""StyleRunner: holds the loaded networks and renders a style choice onto pixels."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.imaging.color import blend, preserve_color
from app.inference.onnx_backend import OnnxModule
from app.nets.multistyle import NUM_STYLES, MultiStyleNet
from app.styles.catalog import Engine, MultiStyleBlend, SingleStyle, Style, StyleChoice
from app.weights.checkpoints import load_transformer_net
from app.weights.onnx_import import multistyle_tensors

# The networks downsample twice by 2 and use 9x9 reflection padding at full resolution.
SIDE_MULTIPLE = 4
MIN_NETWORK_SIDE = 16


def pad_for_network(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Pad (N,C,H,W) to sides that are multiples of 4 and at least 16; return original H, W.

    Reflection keeps borders natural; images too small to reflect are edge-replicated.
    """
    h, w = x.shape[-2:]
    th = max(MIN_NETWORK_SIDE, -(-h // SIDE_MULTIPLE) * SIDE_MULTIPLE)
    tw = max(MIN_NETWORK_SIDE, -(-w // SIDE_MULTIPLE) * SIDE_MULTIPLE)
    pad = (0, tw - w, 0, th - h)
    if pad == (0, 0, 0, 0):
        return x, h, w
    mode = "reflect" if (tw - w) < w and (th - h) < h else "replicate"
    return F.pad(x, pad, mode=mode), h, w


Network = Callable[..., torch.Tensor]
CpuBackend = Literal["onnxruntime", "torch"]


class StyleRunner:
    """Owns every network on one device; `render` is safe to call from worker threads.

    On CPU with the `onnxruntime` backend each network runs as an ONNX export of itself
    (see `onnx_backend`); on CUDA, or with the `torch` backend, the torch modules run directly.
    """

    def __init__(
        self,
        device: torch.device,
        cache_dir: Path,
        *,
        cpu_backend: CpuBackend = "onnxruntime",
        threads: int | None = None,
    ) -> None:
        self.device = device
        self._onnx_dir = cache_dir / "onnx"
        self._threads = threads
        self.uses_onnxruntime = device.type == "cpu" and cpu_backend == "onnxruntime"
        self.multistyle = MultiStyleNet().eval().requires_grad_(False)
        self.multistyle.load_onnx_state(multistyle_tensors(cache_dir))
        self.multistyle.to(device)
        sample = (torch.rand(1, 3, 32, 32), torch.full((NUM_STYLES,), 1.0 / NUM_STYLES))
        self._multistyle_call = self._backend(self.multistyle, sample, ["image", "style_weights"])
        self._transformers: dict[str, Network] = {}
        self._lock = threading.Lock()

    def _backend(
        self, module: nn.Module, sample: tuple[torch.Tensor, ...], names: list[str]
    ) -> Network:
        if not self.uses_onnxruntime:
            return module
        return OnnxModule(module, sample, names, self._onnx_dir, threads=self._threads)

    @property
    def engine_backend(self) -> str:
        return "onnxruntime" if self.uses_onnxruntime else f"torch-{self.device.type}"

    def load_transformer(self, style: Style) -> None:
        """Load a checkpoint style; raises CheckpointError naming the file when it is bad."""
        assert style.checkpoint is not None
        net = load_transformer_net(style.checkpoint).to(self.device)
        call = self._backend(net, (torch.rand(1, 3, 32, 32) * 255.0,), ["image"])
        with self._lock:
            self._transformers[style.name] = call

    def forget(self, name: str) -> None:
        with self._lock:
            self._transformers.pop(name, None)

    @torch.inference_mode()
    def stylize(self, pixels: np.ndarray, choice: StyleChoice) -> np.ndarray:
        """Run the network for `choice` on an HxWx3 uint8 array; same size out."""
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        x = x.permute(2, 0, 1).unsqueeze(0).float()
        x, h, w = pad_for_network(x)
        if isinstance(choice, MultiStyleBlend):
            y = self._multistyle_call(x / 255.0, choice.weights.to(self.device)) * 255.0
        else:
            y = self._run_single(x, choice)
        y = y[..., :h, :w].clamp(0, 255).round().to(torch.uint8)
        return y[0].permute(1, 2, 0).cpu().numpy()

    def _run_single(self, x: torch.Tensor, choice: SingleStyle) -> torch.Tensor:
        style = choice.style
        if style.engine is Engine.multistyle:
            assert style.index is not None
            weights = torch.zeros(NUM_STYLES)
            weights[style.index] = 1.0
            return self._multistyle_call(x / 255.0, weights.to(self.device)) * 255.0
        if style.engine is Engine.transformer:
            with self._lock:
                net = self._transformers.get(style.name)
            if net is None:
                raise LookupError(f"style {style.name!r} has no loaded network")
            return net(x)
        raise LookupError(f"engine {style.engine} is not available for {style.name!r}")

    def render(
        self,
        pixels: np.ndarray,
        choice: StyleChoice,
        *,
        strength: float = 1.0,
        keep_colors: bool = False,
    ) -> np.ndarray:
        """Stylize, then apply colour preservation and the strength blend."""
        stylized = self.stylize(pixels, choice)
        if keep_colors:
            stylized = preserve_color(stylized, pixels)
        return blend(stylized, pixels, strength)
