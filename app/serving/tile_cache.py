"""Exact whole-image statistics with every network segment computed once (eager torch only).

`exact` statistics in `app.serving.tiling` rerun each tile from the image up to norm layer k,
for every k: the sum of the network's prefixes. Here each tile runs the network once instead,
and *pauses* at every norm layer: it sums the layer's input over the region it owns, moves its
live activations to a file and waits. When every tile has paused at layer k, their sums combine
into layer k's whole-image statistics (exact, as before); each tile in turn then reads its
activations back, normalises with them and runs on to layer k + 1. The last resumption runs to
the output, which is composited as in `render_tiles`. Compute is one inference per tile; the
extra cost is writing and reading the activations at every norm layer.

How a tile pauses: each tile's forward pass runs in its own thread (one at a time, handed a
token by the caller), under a `NormPlan` whose `moments` blocks. A dispatch mode records every
tensor the pass creates; at a pause the storages of those still alive (the paused frames'
locals and temporaries alike) are written to the tile's spill file and shrunk to nothing, so
only one tile's activations are in memory at any time. Resuming regrows them and reads the
bytes back (bit-exact). The module's parameters and the caller's inputs are never touched.

This needs the torch module itself, so it runs eager torch whatever the CPU backend (the
ONNX/OpenVINO graphs cannot stop half-way and resume); on CUDA it is the native path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import queue
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from app.nets.norm_stats import NormPlan, norm_plan
from app.serving.pixels import network_input
from app.serving.tiling import (
    AxisTiles,
    TileOptions,
    axis_tiles,
    axis_weights,
    combine_moments,
    composite,
    owned_mask,
    tile_crop,
)

# Storages smaller than this stay in memory while paused: not worth a write.
_SPILL_MIN_BYTES = 1 << 16
# Spill and restore copy GPU storages through a host buffer of this size.
_CHUNK_BYTES = 1 << 24


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _load_trim() -> Callable[[], object]:
    """Make freed activations go back to the system (glibc; a no-op elsewhere).

    glibc keeps freed memory in per-thread arenas, and after each large free it raises its
    mmap threshold (up to 32 MiB) so that later tensors of that size land in those arenas:
    a paused tile's spilled activations would still count as resident. A fixed threshold of
    1 MiB keeps every large tensor in its own mapping, unmapped when freed (process-wide, set
    on the first cached tiling); malloc_trim hands back what the arenas still hold."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim, mallopt = getattr(libc, "malloc_trim", None), getattr(libc, "mallopt", None)
    if trim is None or mallopt is None:
        return lambda: None
    configured: list[bool] = []

    def release() -> None:
        if not configured:
            mallopt(_M_MMAP_THRESHOLD, 1 << 20)
            configured.append(True)
        trim(0)

    return release


_trim = _load_trim()


class _Cancelled(Exception):
    """Ends a paused tile's thread when the image fails elsewhere."""


class _Track(TorchDispatchMode):
    """Remembers (weakly) every tensor created in the tile's thread."""

    def __init__(self) -> None:
        super().__init__()
        self.tensors: list[weakref.ref[torch.Tensor]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, tuple | list) else (out,):
            if isinstance(item, torch.Tensor):
                self.tensors.append(weakref.ref(item))
        return out

    def alive(self) -> list[torch.Tensor]:
        self.tensors = [ref for ref in self.tensors if ref() is not None]
        return [t for ref in self.tensors if (t := ref()) is not None]


@dataclass
class _Message:
    kind: str  # "paused", "done" or "error"
    tile: int
    payload: Any


class _PausingPlan(NormPlan):
    """Every norm layer: sum the input over the owned region, pause, then normalise with the
    whole-image statistics the caller hands back."""

    def __init__(self, tile: _Tile, **fields: Any) -> None:
        super().__init__(**fields)
        self.tile = tile

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._accumulate(x)
        part = torch.stack([self.shifts[-1], self.sums[-1], self.squares[-1]])
        part_np = part.double().cpu().numpy()
        self.shifts.clear(), self.sums.clear(), self.squares.clear()
        del part
        mean, var = self.tile.pause(self._layer, part_np)
        self._layer += 1
        return mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)


class _Tile:
    """One tile's forward pass in its own thread, paused at every norm layer."""

    def __init__(
        self,
        index: int,
        crop: np.ndarray,
        module: nn.Module,
        condition: Sequence[torch.Tensor],
        rows: np.ndarray,
        cols: np.ndarray,
        scales: tuple[int, ...],
        device: torch.device,
        spill: Path,
        keep: frozenset[int],
        outbox: queue.Queue[_Message],
    ) -> None:
        self.index = index
        self.crop = crop
        self.module = module
        self.condition = condition
        self.masks = (rows, cols)
        self.scales = scales
        self.device = device
        self.spill = spill
        self.keep = keep  # storage addresses never spilled (parameters, inputs)
        self.outbox = outbox
        self.inbox: queue.Queue[tuple[torch.Tensor, torch.Tensor] | None] = queue.Queue()
        self.track: _Track | None = None
        self.spilled: list[tuple[torch.UntypedStorage, int]] = []
        self.thread = threading.Thread(target=self._run, name=f"tile-{index}", daemon=True)

    def _run(self) -> None:
        try:
            if self.inbox.get() is None:
                return
            with torch.no_grad(), _Track() as track:
                self.track = track
                x = torch.from_numpy(network_input(self.crop)).to(self.device, copy=True)
                rows, cols = (torch.from_numpy(m).to(self.device, copy=True) for m in self.masks)
                self.crop = np.empty(0, np.uint8)
                plan = _PausingPlan(self, rows=rows, cols=cols, scales=self.scales)
                with norm_plan(plan):
                    out = self.module(x, *self.condition)
                del x, plan
                result = out[0].cpu().numpy()
            self.outbox.put(_Message("done", self.index, result))
        except _Cancelled:
            return
        except BaseException as error:  # handed to the caller, which re-raises it
            self.outbox.put(_Message("error", self.index, error))

    def pause(self, layer: int, part: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Report this layer's sums, spill, wait for the layer's statistics, restore."""
        self._spill()
        self.outbox.put(_Message("paused", self.index, (layer, part)))
        stats = self.inbox.get()
        if stats is None:
            raise _Cancelled
        self._restore()
        return stats[0].to(self.device), stats[1].to(self.device)

    def _spill(self) -> None:
        assert self.track is not None
        seen: set[int] = set()
        storages = []
        for tensor in self.track.alive():
            storage = tensor.untyped_storage()
            address = storage.data_ptr()
            small = storage.nbytes() < _SPILL_MIN_BYTES
            if address in seen or address in self.keep or small or not storage.resizable():
                continue
            seen.add(address)
            storages.append(storage)
        self.spilled = []
        with self.spill.open("wb") as file:
            for storage in storages:
                size = storage.nbytes()
                _write(file, storage)
                storage.resize_(0)
                self.spilled.append((storage, size))
        _trim()

    def _restore(self) -> None:
        with self.spill.open("rb") as file:
            for storage, size in self.spilled:
                storage.resize_(size)
                _read(file, storage)
        self.spilled = []


def _write(file: BinaryIO, storage: torch.UntypedStorage) -> None:
    """A storage's bytes to the file: straight from its memory on the CPU (a numpy view
    would pin the storage, which could then not shrink), through a buffer from a GPU."""
    if storage.device.type == "cpu":
        file.write(memoryview(_cpu_bytes(storage)))
        return
    data, chunk = _bytes_of(storage), np.empty(_CHUNK_BYTES, np.uint8)
    staging = torch.from_numpy(chunk)
    for start in range(0, storage.nbytes(), _CHUNK_BYTES):
        stop = min(storage.nbytes(), start + _CHUNK_BYTES)
        staging[: stop - start].copy_(data[start:stop])
        file.write(chunk[: stop - start].data)


def _read(file: BinaryIO, storage: torch.UntypedStorage) -> None:
    """The inverse of `_write`, into a storage regrown to its size."""
    if storage.device.type == "cpu":
        if file.readinto(memoryview(_cpu_bytes(storage))) != storage.nbytes():
            raise OSError("spill file ended early")
        return
    data, chunk = _bytes_of(storage), np.empty(_CHUNK_BYTES, np.uint8)
    staging = torch.from_numpy(chunk)
    for start in range(0, storage.nbytes(), _CHUNK_BYTES):
        stop = min(storage.nbytes(), start + _CHUNK_BYTES)
        file.readinto(chunk[: stop - start].data)
        data[start:stop].copy_(staging[: stop - start])


def _cpu_bytes(storage: torch.UntypedStorage) -> ctypes.Array[ctypes.c_char]:
    """The storage's memory as a ctypes buffer (valid while the storage keeps its size)."""
    return (ctypes.c_char * storage.nbytes()).from_address(storage.data_ptr())


def _float32(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32))


def _bytes_of(storage: torch.UntypedStorage) -> torch.Tensor:
    """A uint8 tensor over a whole storage (spill and restore copy through it)."""
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def stylize_cached(
    image: np.ndarray,
    module: nn.Module,
    condition: Sequence[torch.Tensor],
    scales: tuple[int, ...],
    options: TileOptions,
    device: torch.device,
    spill_dir: Path | None = None,
) -> np.ndarray:
    """Stylize an HxWx3 uint8 image (sides multiples of 4) in tiles with the whole image's
    statistics, each tile's network run once (see the module docstring). `module` maps
    (1,3,h,w) floats in 0..255 and `condition` to (1,h,w,3) uint8; `scales` is its norm
    layout's (`probe_layout`)."""
    height, width = image.shape[:2]
    rows = axis_tiles(height, options.tile_size, options.context, options.blend)
    cols = axis_tiles(width, options.tile_size, options.context, options.blend)
    keep = frozenset(
        t.untyped_storage().data_ptr()
        for t in (*module.parameters(), *module.buffers(), *condition)
    )
    _trim()
    outbox: queue.Queue[_Message] = queue.Queue()
    folder = Path(tempfile.mkdtemp(prefix="atelier-tiles-", dir=spill_dir))
    grid = [(i, j) for i in range(len(rows.starts)) for j in range(len(cols.starts))]
    tiles = [
        _Tile(
            index,
            tile_crop(image, rows, cols, i, j),
            module,
            condition,
            owned_mask(rows, i),
            owned_mask(cols, j),
            scales,
            device,
            folder / f"tile-{index}.bin",
            keep,
            outbox,
        )
        for index, (i, j) in enumerate(grid)
    ]
    try:
        for tile in tiles:
            tile.thread.start()
        return _drive(image, tiles, grid, rows, cols, scales, options.blend)
    finally:
        for tile in tiles:
            if tile.thread.is_alive():
                tile.inbox.put(None)
        for tile in tiles:
            tile.thread.join()
        shutil.rmtree(folder, ignore_errors=True)


def _drive(
    image: np.ndarray,
    tiles: list[_Tile],
    grid: list[tuple[int, int]],
    rows: AxisTiles,
    cols: AxisTiles,
    scales: tuple[int, ...],
    blend: int,
) -> np.ndarray:
    """Layer by layer, run each tile to its next pause; combine; finally render."""

    def step(tile: _Tile, stats: tuple[torch.Tensor, torch.Tensor] | None) -> _Message:
        tile.inbox.put(stats)
        message = tile.outbox.get()
        if message.kind == "error":
            raise message.payload
        return message

    start = (torch.zeros(0), torch.zeros(0))  # the first "go": nothing injected yet
    stats: tuple[torch.Tensor, torch.Tensor] = start
    for layer, scale in enumerate(scales):
        parts = []
        for tile, (i, j) in zip(tiles, grid, strict=True):
            message = step(tile, stats)
            if message.kind != "paused" or message.payload[0] != layer:
                raise RuntimeError(f"tile {tile.index} did not stop at norm layer {layer}")
            count = float(owned_mask(rows, i)[::scale].sum() * owned_mask(cols, j)[::scale].sum())
            shift, s1, s2 = message.payload[1]
            parts.append((count, shift, s1, s2))
        mean, var = combine_moments(parts)
        stats = (
            torch.from_numpy(mean.astype(np.float32)),
            torch.from_numpy(var.astype(np.float32)),
        )
    return _render(image.shape, tiles, grid, rows, cols, blend, lambda tile: step(tile, stats))


def _render(
    shape: tuple[int, ...],
    tiles: list[_Tile],
    grid: list[tuple[int, int]],
    rows: AxisTiles,
    cols: AxisTiles,
    blend: int,
    finish: Callable[[_Tile], _Message],
) -> np.ndarray:
    """Each tile run to its output and composited in raster order, as `render_tiles` does."""
    canvas = np.empty(shape, np.uint8)
    row_before = np.zeros(shape[0])
    by_position = dict(zip(grid, tiles, strict=True))
    for i in range(len(rows.starts)):
        wy = axis_weights(rows, i, blend)
        top = rows.starts[i]
        col_before = np.zeros(shape[1])
        for j in range(len(cols.starts)):
            wx = axis_weights(cols, j, blend)
            left = cols.starts[j]
            message = finish(by_position[(i, j)])
            if message.kind != "done":
                raise RuntimeError(f"tile {message.tile} has norm layers beyond the probed ones")
            yb = row_before[top : top + rows.length]
            xb = col_before[left : left + cols.length]
            composite(canvas, message.payload, top, left, wy, wx, yb, xb)
            col_before[left : left + cols.length] += wx
        row_before[top : top + rows.length] += wy
    return canvas
