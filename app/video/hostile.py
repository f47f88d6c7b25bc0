"""Small H.264 MP4s that declare huge frames, for the probe's memory tests and benchmark.

Encoding a real 16000x16000 clip would itself take gigabytes; instead a small clip is encoded
and its sequence parameter set (the H.264 header that gives the frame size) is rewritten in
place to declare another size, optionally in the MP4 sample entry too. A decoder that trusts the
header allocates frames of the declared size; what is left of the picture data is garbage to
it, as in a crafted upload.
"""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np

# profile_idc values whose SPS carries chroma format and bit depths (H.264 7.3.2.1.1).
HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
SOURCE_SIZE = (320, 240)  # a multiple of 16 both ways: the SPS needs no cropping
SAMPLE_ENTRY_SIZE_AT = 28  # 'avc1' + reserved, data ref, pre-defined: then width, height


def write_declaring(path: Path, width: int, height: int, *, container: bool = True) -> None:
    """An MP4 of 8 small frames whose H.264 header declares width x height (multiples of 16);
    `container=False` leaves the MP4 sample entry at the real size, so only the bitstream lies."""
    _write_small(path)
    data = bytearray(path.read_bytes())
    config = data.index(b"avcC")
    length = int.from_bytes(data[config + 10 : config + 12], "big")
    sps = bytes(data[config + 12 : config + 12 + length])
    data[config + 12 : config + 12 + length] = _resized_sps(sps, width, height)
    if container:
        entry = data.index(b"avc1", data.index(b"stsd"))
        struct.pack_into(">HH", data, entry + SAMPLE_ENTRY_SIZE_AT, width, height)
    path.write_bytes(bytes(data))


def _write_small(path: Path) -> None:
    width, height = SOURCE_SIZE
    noise = np.random.default_rng(0)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        for _ in range(8):
            pixels = noise.integers(0, 256, (height, width, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.bits = "".join(f"{byte:08b}" for byte in data)
        self.pos = 0

    def u(self, count: int) -> int:
        value = int(self.bits[self.pos : self.pos + count] or "0", 2)
        self.pos += count
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bits[self.pos] == "0":
            zeros += 1
            self.pos += 1
        self.pos += 1
        return (1 << zeros) - 1 + self.u(zeros)


def _ue(value: int) -> str:
    coded = f"{value + 1:b}"
    return "0" * (len(coded) - 1) + coded


def _resized_sps(nal: bytes, width: int, height: int) -> bytes:
    """The SPS with another size and without its VUI (optional timing and colour hints), padded
    with zero bytes to its old length so no MP4 box size changes."""
    bits = _Bits(_unescape(nal[1:]))
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    if profile in HIGH_PROFILES:
        if bits.ue() == 3:  # chroma_format_idc 4:4:4 has a separate-planes flag
            bits.u(1)
        bits.ue()
        bits.ue()  # bit depths
        bits.u(1)  # qpprime_y_zero_transform_bypass
        if bits.u(1):
            raise ValueError("scaling matrices are not supported")
    bits.ue()  # log2_max_frame_num
    order = bits.ue()
    if order == 0:
        bits.ue()
    elif order == 1:
        raise ValueError("pic_order_cnt_type 1 is not supported")
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_allowed
    head = bits.bits[: bits.pos]
    bits.ue()
    bits.ue()  # the old size in macroblocks
    if not bits.u(1):
        raise ValueError("interlaced streams are not supported")
    direct_8x8 = bits.u(1)
    if bits.u(1):
        raise ValueError("cropped streams are not supported")
    out = head + _ue(width // 16 - 1) + _ue(height // 16 - 1)
    out += "1" + str(direct_8x8) + "0" + "0" + "1"  # frame_mbs_only, no crop, no VUI, stop bit
    out += "0" * (-len(out) % 8)
    resized = nal[:1] + _escape(int(out, 2).to_bytes(len(out) // 8, "big"))
    if len(resized) > len(nal):
        raise ValueError("the new size does not fit in the old header")
    return resized + bytes(len(nal) - len(resized))


def _unescape(payload: bytes) -> bytes:
    return payload.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape(payload: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in payload:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)
