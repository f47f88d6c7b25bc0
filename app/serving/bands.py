"""Exact tiled inference: a network's segments run band by band, each layer computed once.

`app.nets.segments` cuts a network at its instance norms. Here each segment runs over the
image in full-width bands of rows, with a margin of `reach` rows that is computed and then
cut away, so every band computes exactly the rows the whole image would. The values one
segment hands the next (the activations alive at a cut) are written to files in `TMPDIR`,
one per value, in planes of channels, so a band is one contiguous read per channel; the page
cache keeps them in memory when there is room, and a file is reused as soon as its last
reader is done. While a segment runs, each band also reports the moments of the next norm's
input over its own rows; combined in float64 they are the whole image's statistics, which the
next segment applies. The last segment writes its pixels straight into the uint8 result.

Working memory is one band's activations (`band_pixels` bounds a band with its margins);
compute is one inference plus the margins; the price is writing and reading every cut's
activations once. Where the image is small enough, the network's coarsest part (its residual
stack, a `WholeRun`) runs as one graph over the whole image instead (`plan`): its maps hold
the fewest values per pixel, and every cut it saves is a hand-on, a compile and a pass of
moments saved.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from app.nets.segments import MEAN, ROWS, VAR, Segment, SegmentedNetwork, Value
from app.serving.pixels import SIDE_MULTIPLE
from app.serving.tiling import combine_moments


class SegmentBackend(Protocol):
    """A segment on some backend (`OnnxModule`, `OpenVinoSegment`, `TorchNetwork`)."""

    map_dtype: np.dtype  # of the maps handed between segments that it takes and gives

    def run_all(self, *inputs: np.ndarray) -> Sequence[np.ndarray]:
        """numpy inputs in `Segment.inputs` order in; every output out."""
        ...

    def release(self) -> None:
        """Free the working memory kept between runs: called after a segment's last band."""
        ...


@dataclass(frozen=True)
class Band:
    """Rows [top, bottom) are this band's own; [start, stop) is what it reads, with margins."""

    top: int
    bottom: int
    start: int
    stop: int


def bands(height: int, width: int, band_pixels: int, reach: int) -> list[Band]:
    """Full-width bands whose rows, margins included, hold at most `band_pixels` pixels
    (at least one row group of 4 of its own each); all boundaries on multiples of 4, so every
    band's strided layers sample the whole image's grid."""
    margin = -(-reach // SIDE_MULTIPLE) * SIDE_MULTIPLE
    own = (band_pixels // width - 2 * margin) // SIDE_MULTIPLE * SIDE_MULTIPLE
    own = max(SIDE_MULTIPLE, own)
    result = []
    for top in range(0, height, own):
        bottom = min(height, top + own)
        result.append(Band(top, bottom, max(0, top - margin), min(height, bottom + margin)))
    return result


class _Scratch:
    """Files for the values in flight, reused once a value is done: writing over pages a file
    already has is several times faster than growing a file (block allocation, new pages)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._free: list[int] = []
        self._count = 0

    def take(self) -> int:
        """The largest free file (big values come first in these networks), else a new one."""
        if self._free:
            self._free.sort(key=lambda fd: os.fstat(fd).st_size)
            return self._free.pop()
        self._count += 1
        path = self.folder / f"value-{self._count}.raw"
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def give(self, fd: int) -> None:
        self._free.append(fd)

    def close(self) -> None:
        for fd in self._free:
            os.close(fd)
        self._free.clear()


class _SpatialFile:
    """One value at full extent, (C, H, W) on disk in the dtype its segment gave: a band of
    rows is one block per channel."""

    def __init__(
        self, scratch: _Scratch, value: Value, height: int, width: int, dtype: np.dtype
    ) -> None:
        self.value = value
        self.dtype = dtype
        self.rows = height // value.scale
        self.cols = width // value.scale
        self._scratch = scratch
        self._fd = scratch.take()

    def _offset(self, channel: int, row: int) -> int:
        return (channel * self.rows + row) * self.cols * self.dtype.itemsize

    def write(self, array: np.ndarray, row: int) -> None:
        """`array` is (1, C, h, W) for rows [row, row + h)."""
        for channel, plane in enumerate(array[0]):  # each plane's rows are one block already
            data = np.ascontiguousarray(plane, dtype=self.dtype)
            os.pwrite(self._fd, _bytes(data), self._offset(channel, row))

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((1, self.value.channels, stop - start, self.cols), dtype=self.dtype)
        for channel, plane in enumerate(out[0]):
            view = _bytes(plane)
            if os.preadv(self._fd, [view], self._offset(channel, start)) != len(view):
                raise OSError(f"short read of {self.value.name} in {self._scratch.folder}")
        return out

    def close(self) -> None:
        self._scratch.give(self._fd)


class _Values:
    """The values in flight while one image runs: the image itself, the maps segments hand on
    (in scratch files), the small values (conditions), and the result being filled."""

    def __init__(
        self,
        image: np.ndarray,
        network: SegmentedNetwork,
        condition: Sequence[np.ndarray],
        scratch: _Scratch,
    ) -> None:
        self.image = image
        self.image_name = network.inputs[0].name
        self.result = np.empty_like(image)
        self.small = {
            v.name: np.asarray(c) for v, c in zip(network.inputs[1:], condition, strict=True)
        }
        self.files: dict[str, _SpatialFile] = {}
        self._scratch = scratch

    def feed(self, name: str, band: Band, dtype: np.dtype) -> np.ndarray:
        """Value `name` over the band's rows, margins included, as a segment takes it (a
        handed-on map in `dtype`)."""
        if name == self.image_name:
            rows = self.image[band.start : band.stop].transpose(2, 0, 1)[None]
            return np.ascontiguousarray(rows, dtype=np.float32)
        if name in self.files:
            scale = self.files[name].value.scale
            rows = self.files[name].read(band.start // scale, band.stop // scale)
            return rows.astype(dtype, copy=False)  # a copy only where backends were mixed
        return self.small[name]

    def store(self, value: Value, result: np.ndarray, band: Band) -> None:
        """A segment output's own rows, to the result (pixels), its file, or kept whole."""
        if not value.spatial:
            self.small.setdefault(value.name, np.array(result))  # a copy: results may be views
            return
        first = (band.top - band.start) // value.scale
        last = (band.bottom - band.start) // value.scale
        if value.layout == "nhwc":
            self.result[band.top : band.bottom] = result[0, first:last]
            return
        if value.name not in self.files:
            height, width = self.image.shape[:2]
            self.files[value.name] = _SpatialFile(self._scratch, value, height, width, result.dtype)
        self.files[value.name].write(result[:, :, first:last], band.top // value.scale)

    def drop(self, names: Sequence[str]) -> None:
        """Hand the files of values no later segment reads back to the scratch pool."""
        for name in names:
            if name in self.files:
                self.files.pop(name).close()

    def close(self) -> None:
        self.drop(list(self.files))


@dataclass(frozen=True)
class WholeRun:
    """Segments `first`..`last` merged into one (`app.nets.segments.merge`) on a backend: run
    on the whole image instead of band by band where its maps fit the budget (`plan`)."""

    first: int
    last: int
    segment: Segment
    call: SegmentBackend


# What a merged run holds per value of its widest map, over what the whole network holds per
# value of its own widest map: its inputs, outputs and inner maps are alive together in the
# request's buffers (measured on TransformerNet, docs/print-size.md).
WHOLE_RUN_COST = 2.5


def plan(
    network: SegmentedNetwork,
    calls: Sequence[SegmentBackend],
    whole: WholeRun | None,
    pixels: int,
    largest_whole: int,
) -> tuple[SegmentedNetwork, list[SegmentBackend]]:
    """The segments an image of `pixels` runs: the merged run in place of its segments where
    it costs no more memory than the whole network at `largest_whole` pixels (the largest
    image that runs untiled), else every segment in bands."""
    if whole is None:
        return network, list(calls)
    widest = max(_values_per_pixel(network, s) for s in network.segments)
    if pixels * _values_per_pixel(network, whole.segment) * WHOLE_RUN_COST > largest_whole * widest:
        return network, list(calls)
    segments = network.segments
    chosen = (*segments[: whole.first], whole.segment, *segments[whole.last + 1 :])
    runs = [*calls[: whole.first], whole.call, *calls[whole.last + 1 :]]
    return dataclasses.replace(network, segments=chosen), runs


def _values_per_pixel(network: SegmentedNetwork, segment: Segment) -> float:
    """Values per image pixel of the widest map a segment reads or writes."""
    return max(v.channels / (v.scale * v.scale) for v in network.maps(segment))


def stylize_banded(
    image: np.ndarray,
    network: SegmentedNetwork,
    calls: Sequence[SegmentBackend],
    condition: Sequence[np.ndarray],
    band_pixels: int,
) -> np.ndarray:
    """Stylize an HxWx3 uint8 image (sides multiples of 4) band by band; same size out. A
    `whole` segment (a merged run, see `plan`) runs once, over the whole image."""
    height, width = image.shape[:2]
    segments = network.segments
    last_reader = {name: k for k, s in enumerate(segments) for name in s.inputs}
    stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # by norm layer
    with tempfile.TemporaryDirectory(prefix="atelier-bands-") as folder:
        scratch = _Scratch(Path(folder))
        values = _Values(image, network, condition, scratch)
        try:
            for k, (segment, call) in enumerate(zip(segments, calls, strict=True)):
                parts = []
                pieces = (
                    [Band(0, height, 0, height)]
                    if segment.whole
                    else _largest_first(bands(height, width, band_pixels, segment.reach))
                )
                for band in pieces:
                    feeds = []
                    for name in segment.inputs:
                        if name in (MEAN, VAR):
                            assert segment.norm is not None
                            feeds.append(stats[segment.norm][0 if name == MEAN else 1][None])
                        elif name == ROWS:
                            feeds.append(_own_rows(band, segment.collect_scale))
                        else:
                            feeds.append(values.feed(name, band, call.map_dtype))
                    results = list(call.run_all(*feeds))
                    if segment.collects is not None:
                        moments = results.pop().astype(np.float64)
                        scale = segment.collect_scale
                        count = (band.bottom - band.top) // scale * (width // scale)
                        parts.append((float(count), moments[0], moments[1], moments[2]))
                    for value, result in zip(segment.outputs, results, strict=True):
                        values.store(value, result, band)
                call.release()
                if segment.collects is not None:
                    mean, var = combine_moments(parts)
                    stats[segment.collects] = (mean.astype(np.float32), var.astype(np.float32))
                values.drop([n for n, last in last_reader.items() if last == k])
        finally:
            values.close()
            scratch.close()
    return values.result


def _own_rows(band: Band, scale: int) -> np.ndarray:
    """1 on the band's own rows, 0 on its margins, at the collected value's resolution."""
    rows = np.zeros((band.stop - band.start) // scale, dtype=np.float32)
    rows[(band.top - band.start) // scale : (band.bottom - band.start) // scale] = 1.0
    return rows


def _bytes(array: np.ndarray) -> memoryview:
    """A contiguous array's bytes (ml_dtypes' bfloat16 offers no buffer of its own)."""
    return memoryview(array.view(np.uint8)).cast("B")


def _largest_first(pieces: list[Band]) -> list[Band]:
    """Bands in order of size, largest first (stable): a segment's graph allocates its
    buffers for the first shape it runs and reuses them for any smaller one, while a larger
    shape after a smaller one allocates (and touches) them afresh."""
    return sorted(pieces, key=lambda band: band.start - band.stop)
