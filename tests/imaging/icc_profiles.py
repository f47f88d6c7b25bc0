"""ICC profiles built in code for the colour-management tests, and their maths in numpy.

Pillow's ImageCms only creates sRGB, Lab and XYZ profiles, and no profile file may be read at
test time, so the wide-gamut RGB profiles (matrix/TRC, ICC v2) and a CMYK printer profile (an
A2B0 lut16 table) are written here byte by byte from the ICC specification (ICC.1:2001-04).
The same colour maths, in numpy, gives each test its expected pixels independently of
LittleCMS.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

D50 = np.array([0.9642, 1.0, 0.8249])
BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)


def xy_to_xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def rgb_to_xyz_matrix(
    primaries: tuple[tuple[float, float], ...], white: tuple[float, float]
) -> np.ndarray:
    """Linear RGB -> XYZ for the given chromaticities, adapted to D50 (the PCS) by Bradford."""
    columns = np.stack([xy_to_xyz(*p) for p in primaries], axis=1)
    white_xyz = xy_to_xyz(*white)
    matrix = columns * np.linalg.solve(columns, white_xyz)
    cone_src = BRADFORD @ white_xyz
    cone_dst = BRADFORD @ D50
    adapt = np.linalg.inv(BRADFORD) @ np.diag(cone_dst / cone_src) @ BRADFORD
    return adapt @ matrix


def srgb_decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def gamma(exponent: float) -> tuple[Callable[[np.ndarray], np.ndarray], ...]:
    return (lambda v: np.clip(v, 0, 1) ** exponent, lambda v: np.clip(v, 0, 1) ** (1 / exponent))


@dataclass(frozen=True)
class RgbSpace:
    name: str
    primaries: tuple[tuple[float, float], ...]
    white: tuple[float, float]
    decode: Callable[[np.ndarray], np.ndarray]
    encode: Callable[[np.ndarray], np.ndarray]

    @property
    def to_xyz(self) -> np.ndarray:
        return rgb_to_xyz_matrix(self.primaries, self.white)


D65_XY = (0.3127, 0.3290)
SRGB = RgbSpace(
    "sRGB", ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06)), D65_XY, srgb_decode, srgb_encode
)
PROPHOTO = RgbSpace(
    "ProPhoto RGB",
    ((0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001)),
    (0.3457, 0.3585),
    *gamma(1.8),
)
DISPLAY_P3 = RgbSpace(
    "Display P3", ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)), D65_XY, srgb_decode, srgb_encode
)
ADOBE_RGB = RgbSpace(
    "Adobe RGB (1998)", ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06)), D65_XY, *gamma(563 / 256)
)


def convert_srgb(pixels: np.ndarray, space: RgbSpace) -> np.ndarray:
    """sRGB uint8 pixels re-expressed in `space` (8-bit), by the profile maths in numpy."""
    linear = SRGB.decode(pixels.astype(np.float64) / 255.0)
    xyz = linear @ SRGB.to_xyz.T
    target = xyz @ np.linalg.inv(space.to_xyz).T
    return np.clip(np.rint(space.encode(target) * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# A CMYK "press" whose colours are known in closed form
# --------------------------------------------------------------------------------------------


def press_to_srgb(cmyk: np.ndarray) -> np.ndarray:
    """The made-up press: inks that absorb imperfectly and a black that is not quite black.
    Deliberately unlike Pillow's naive `255 * (1 - c) * (1 - k)`. Ink fractions 0..1 in,
    sRGB-encoded values 0..1 out."""
    c, m, y, k = (cmyk[..., i] for i in range(4))
    ink = 1.0 - 0.9 * k
    r = (1.0 - 0.85 * c) * (1.0 - 0.15 * m) * ink
    g = (1.0 - 0.80 * m) * (1.0 - 0.10 * c) * (1.0 - 0.05 * y) * ink
    b = (1.0 - 0.90 * y) * (1.0 - 0.20 * m) * ink
    return np.stack([r, g, b], axis=-1)


# --------------------------------------------------------------------------------------------
# ICC writing
# --------------------------------------------------------------------------------------------


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz: np.ndarray) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in xyz)


def _desc_tag(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_)) + ascii_ + bytes(4 + 4 + 2 + 1 + 67)


def _text_tag(text: str) -> bytes:
    return b"text" + bytes(4) + text.encode("ascii") + b"\0"


def _curve_tag(encode_to_linear: Callable[[np.ndarray], np.ndarray], entries: int = 1024) -> bytes:
    table = encode_to_linear(np.linspace(0.0, 1.0, entries))
    values = np.clip(np.rint(table * 65535), 0, 65535).astype(">u2")
    return b"curv" + bytes(4) + struct.pack(">I", entries) + values.tobytes()


def _profile(
    device_class: bytes, space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]
) -> bytes:
    offset = 128 + 4 + 12 * len(tags)
    table = b""
    data = b""
    for signature, payload in tags:
        while (offset + len(data)) % 4:
            data += b"\0"
        table += signature + struct.pack(">II", offset + len(data), len(payload))
        data += payload
    body = struct.pack(">I", len(tags)) + table + data
    size = 128 + len(body)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + device_class
        + space
        + pcs
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8)
        + struct.pack(">I", 0)  # perceptual
        + b"".join(_s15(v) for v in D50)
        + bytes(4)
    )
    header += bytes(128 - len(header))
    return header + body


def rgb_profile(space: RgbSpace) -> bytes:
    """A matrix/TRC display profile for `space`."""
    matrix = space.to_xyz
    curve = _curve_tag(space.decode)
    return _profile(
        b"mntr",
        b"RGB ",
        b"XYZ ",
        [
            (b"desc", _desc_tag(space.name)),
            (b"cprt", _text_tag("No copyright, test fixture")),
            (b"wtpt", _xyz_tag(D50)),
            (b"rXYZ", _xyz_tag(matrix[:, 0])),
            (b"gXYZ", _xyz_tag(matrix[:, 1])),
            (b"bXYZ", _xyz_tag(matrix[:, 2])),
            (b"rTRC", curve),
            (b"gTRC", curve),
            (b"bTRC", curve),
        ],
    )


def cmyk_profile(grid: int = 9) -> bytes:
    """An output profile whose A2B0 table (CMYK -> PCS XYZ) samples `press_to_srgb`."""
    axis = np.linspace(0.0, 1.0, grid)
    c, m, y, k = np.meshgrid(axis, axis, axis, axis, indexing="ij")  # first input slowest
    rgb = press_to_srgb(np.stack([c, m, y, k], axis=-1).reshape(-1, 4))
    xyz = SRGB.decode(rgb) @ SRGB.to_xyz.T
    clut = np.clip(np.rint(xyz * 32768.0), 0, 65535).astype(">u2")  # 1.0 = 0x8000
    identity = np.linspace(0, 65535, 2).astype(">u2")
    lut = (
        b"mft2"
        + bytes(4)
        + struct.pack(">BBBB", 4, 3, grid, 0)
        + b"".join(_s15(v) for v in np.eye(3).ravel())
        + struct.pack(">HH", 2, 2)
        + identity.tobytes() * 4
        + clut.tobytes()
        + identity.tobytes() * 3
    )
    return _profile(
        b"prtr",
        b"CMYK",
        b"XYZ ",
        [
            (b"desc", _desc_tag("Atelier test press")),
            (b"cprt", _text_tag("No copyright, test fixture")),
            (b"wtpt", _xyz_tag(D50)),
            (b"A2B0", lut),
        ],
    )


def gray_profile(encode_to_linear: Callable[[np.ndarray], np.ndarray]) -> bytes:
    """A grey display profile whose tone curve maps stored values to linear light."""
    return _profile(
        b"mntr",
        b"GRAY",
        b"XYZ ",
        [
            (b"desc", _desc_tag("Test grey")),
            (b"cprt", _text_tag("No copyright, test fixture")),
            (b"wtpt", _xyz_tag(D50)),
            (b"kTRC", _curve_tag(encode_to_linear)),
        ],
    )
