"""HDR clips (HLG and PQ, BT.2020, 10-bit HEVC as phones record them) come out in natural SDR
colours.

The reference is computed here by hand from the standards, independently of the code under
test: each patch starts as an SDR BT.709 colour (ColorChecker light skin, blue sky, foliage and
a grey card), is turned into the light an SDR display shows with reference white at HDR
reference white (203 cd/m², ITU-R BT.2408), then into HLG or PQ BT.2020 code values (ITU-R
BT.2100, BT.2087). A correct conversion back to SDR gives the starting colours; reading the
frames as if they were SDR gives washed-out, wrong ones.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from app.video.pipeline import VideoOptions, stylize_video
from app.video.probe import VideoLimits

WIDTH, HEIGHT = 320, 240
PATCHES = {  # SDR BT.709 8-bit colours, one vertical band each
    "grey card": (109, 109, 109),
    "light skin": (194, 150, 130),
    "blue sky": (98, 122, 157),
    "foliage": (87, 108, 67),
}
REFERENCE_WHITE_NITS = 203.0
SDR_GAMMA = 2.4  # BT.1886
BT709_TO_BT2020 = np.array(
    [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
)
KR, KB = 0.2627, 0.0593  # BT.2020 luma
HLG_A, HLG_B, HLG_C = 0.17883277, 0.28466892, 0.55991073
HLG_PEAK_NITS, HLG_GAMMA = 1000.0, 1.2
PQ_M1, PQ_M2 = 0.1593017578125, 78.84375
PQ_C1, PQ_C2, PQ_C3 = 0.8359375, 18.8515625, 18.6875
TRC = {"hlg": 18, "pq": 16}  # AVCOL_TRC_ARIB_STD_B67, AVCOL_TRC_SMPTE2084
BT2020 = 9  # AVCOL_PRI_BT2020, AVCOL_SPC_BT2020_NCL
TOLERANCE = 6  # 8-bit levels, after 4:2:0 and the H.264 output encode


def _display_nits(sdr: tuple[int, int, int]) -> np.ndarray:
    """BT.2020 RGB light (cd/m²) of an SDR colour shown with white at HDR reference white."""
    linear_709 = (np.array(sdr) / 255.0) ** SDR_GAMMA
    return BT709_TO_BT2020 @ linear_709 * REFERENCE_WHITE_NITS


def _hlg_signal(nits: np.ndarray) -> np.ndarray:
    """BT.2100 HLG: inverse OOTF (1000 cd/m² display, system gamma 1.2), then the OETF."""
    luminance = KR * nits[0] + (1 - KR - KB) * nits[1] + KB * nits[2]
    scene_y = (luminance / HLG_PEAK_NITS) ** (1 / HLG_GAMMA)
    scene = nits / (HLG_PEAK_NITS * scene_y ** (HLG_GAMMA - 1))
    low = np.sqrt(3 * scene)
    high = HLG_A * np.log(np.maximum(12 * scene - HLG_B, 1e-9)) + HLG_C
    return np.where(scene <= 1 / 12, low, high)


def _pq_signal(nits: np.ndarray) -> np.ndarray:
    """BT.2100 PQ inverse EOTF."""
    y = (nits / 10000.0) ** PQ_M1
    return ((PQ_C1 + PQ_C2 * y) / (1 + PQ_C3 * y)) ** PQ_M2


def _ycbcr10(signal: np.ndarray) -> tuple[int, int, int]:
    """BT.2020 non-constant-luminance Y'CbCr, 10-bit limited range."""
    red, green, blue = signal
    luma = KR * red + (1 - KR - KB) * green + KB * blue
    cb = (blue - luma) / (2 * (1 - KB))
    cr = (red - luma) / (2 * (1 - KR))
    return round(64 + 876 * luma), round(512 + 896 * cb), round(512 + 896 * cr)


def write_hdr_clip(path: Path, transfer: str, frames: int = 4) -> None:
    """10-bit HEVC (lossless, so the test measures the conversion alone) tagged BT.2020."""
    to_signal = _hlg_signal if transfer == "hlg" else _pq_signal
    planes = [
        np.zeros((HEIGHT, WIDTH), np.uint16),
        np.zeros((HEIGHT // 2, WIDTH // 2), np.uint16),
        np.zeros((HEIGHT // 2, WIDTH // 2), np.uint16),
    ]
    band = WIDTH // len(PATCHES)
    for index, sdr in enumerate(PATCHES.values()):
        y, cb, cr = _ycbcr10(to_signal(_display_nits(sdr)))
        planes[0][:, index * band : (index + 1) * band] = y
        planes[1][:, index * band // 2 : (index + 1) * band // 2] = cb
        planes[2][:, index * band // 2 : (index + 1) * band // 2] = cr
    with av.open(str(path), "w") as out:
        stream = out.add_stream(
            "libx265", rate=25, options={"x265-params": "lossless=1:log-level=error"}
        )
        stream.width, stream.height = WIDTH, HEIGHT
        stream.pix_fmt = "yuv420p10le"
        context = stream.codec_context
        context.color_primaries, context.colorspace = BT2020, BT2020
        context.color_trc, context.color_range = TRC[transfer], 1
        for index in range(frames):
            frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p10le")
            for plane, values in zip(frame.planes, planes, strict=True):
                rows = np.frombuffer(plane, np.uint16).reshape(-1, plane.line_size // 2)
                rows[: values.shape[0], : values.shape[1]] = values
            frame.color_primaries, frame.colorspace = BT2020, BT2020
            frame.color_trc, frame.color_range = TRC[transfer], 1
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _patch_means(pixels: np.ndarray) -> dict[str, np.ndarray]:
    height, width = pixels.shape[:2]
    band = width // len(PATCHES)
    means = {}
    for index, name in enumerate(PATCHES):
        middle = pixels[
            height // 4 : -height // 4, index * band + band // 4 : (index + 1) * band - band // 4
        ]
        means[name] = middle.reshape(-1, 3).mean(axis=0)
    return means


@pytest.mark.parametrize("transfer", ["hlg", "pq"])
def test_hdr_clip_comes_out_in_its_sdr_colours(tmp_path: Path, transfer: str) -> None:
    source = tmp_path / f"{transfer}.mp4"
    write_hdr_clip(source, transfer)
    with av.open(str(source)) as container:
        naive = next(container.decode(video=0)).to_ndarray(format="rgb24")
    dest = tmp_path / "out.mp4"
    limits = VideoLimits(10**7, 30, 500, 10**6)
    stylize_video(source, dest, lambda frames: frames, VideoOptions(limits))
    with av.open(str(dest)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 4
    Image.fromarray(frames[0]).save(tmp_path / "sdr.png")
    for name, mean in _patch_means(frames[-1]).items():
        expected = np.array(PATCHES[name])
        assert np.abs(mean - expected).max() <= TOLERANCE, f"{name}: {mean} vs {expected}"
    # The same frames read as SDR are far off: the check above can tell the difference.
    errors = [np.abs(m - PATCHES[n]).max() for n, m in _patch_means(naive).items()]
    assert max(errors) > 4 * TOLERANCE
