"""Decoded video frames as SDR BT.709 RGB, tone-mapping HDR (PQ, HLG) and BT.2020 clips.

The style networks learned from SDR pictures: an HLG or PQ frame read as if it were BT.709 comes
out flat and desaturated. FFmpeg 8's swscale converts colour as it scales, from the frame's own
tags (primaries, transfer, matrix) to BT.709: into linear light, through the BT.2020 to BT.709
primaries, back to the BT.709 transfer. Its default (relative colorimetric) intent puts HDR
reference white (203 cd/m², ITU-R BT.2408: HLG 75 %, PQ 58 %) at SDR white, keeps everything
below it where an SDR rendering has it (skin, grey cards) and clips highlights above it. The
bundled FFmpeg has no zscale, and its `tonemap` and `colorspace` filters do not read PQ/HLG, so
this is the FFmpeg path there is.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorTrc, VideoReformatter

HDR_TRANSFERS = frozenset({int(ColorTrc.SMPTE2084), int(ColorTrc.ARIB_STD_B67)})
WIDE_PRIMARIES = frozenset({int(ColorPrimaries.BT2020)})


def needs_mapping(frame: av.VideoFrame) -> bool:
    """True for frames tagged HDR (PQ, HLG) or with BT.2020 primaries."""
    return frame.color_trc in HDR_TRANSFERS or frame.color_primaries in WIDE_PRIMARIES


class SdrFrames:
    """Converts one clip's frames; the swscale context (and the colour map it builds, which
    costs far more than a frame's conversion) is made once and reused for every frame."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        """`frame` scaled to width x height as RGB uint8 in BT.709 (SDR) colours."""
        if not needs_mapping(frame):
            rgb = self._reformatter.reformat(
                frame, self.width, self.height, format="rgb24", interpolation="AREA"
            )
            return rgb.to_ndarray()
        rgb = self._reformatter.reformat(
            frame,
            self.width,
            self.height,
            format="rgb24",
            interpolation="AREA",
            src_color_range=frame.color_range,
            dst_colorspace="ITU709",
            dst_color_range="JPEG",
            dst_color_trc=ColorTrc.BT709,
            dst_color_primaries=ColorPrimaries.BT709,
        )
        return rgb.to_ndarray()
