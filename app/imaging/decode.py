"""Turn untrusted upload bytes into an upright sRGB uint8 array, safely.

Order matters for safety: the format is sniffed from an allow-list, the pixel count is checked
from the header before any pixel is decoded, and JPEGs are decoded at a reduced scale (draft
mode) when the caller will shrink them anyway, so a huge upload never costs a full decode.
Then the embedded ICC profile, if any, converts the pixels to sRGB (`app.imaging.icc`) and the
EXIF orientation turns them upright; no other metadata leaves this module.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, UnidentifiedImageError

from app.imaging.icc import to_srgb

# HEIC/HEIF (the iPhone's default) through pillow-heif's libheif; AVIF is Pillow's own. Depth
# maps, thumbnails and auxiliary images are never read.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

ALLOWED_FORMATS: tuple[str, ...] = (
    "JPEG",
    "PNG",
    "WEBP",
    "HEIF",
    "AVIF",
    "GIF",
    "TIFF",
    "BMP",
)
JPEG_DRAFT_SCALES = (1, 2, 4, 8)  # the reductions libjpeg decodes at directly
# Box-reduce a large decode to no less than this many times the target before the final
# Lanczos resize (Pillow's `reducing_gap`): the full-size copies never exist, output unchanged.
REDUCING_GAP = 2
# Opaque modes only: box-averaging straight (not premultiplied) alpha bleeds hidden colours.
_REDUCIBLE_MODES = ("RGB", "L", "CMYK")
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRejected(ValueError):
    """An upload that cannot be used; `code` is machine-readable, `status` the HTTP hint."""

    status = 400
    code = "invalid_image"


class ImageTooLarge(ImageRejected):
    status = 413
    code = "image_too_large"


@dataclass(frozen=True)
class DecodedImage:
    """Pixels plus what the caller needs to report about the original upload."""

    pixels: np.ndarray
    format: str
    original_size: tuple[int, int]


def target_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """Fit (width, height) inside `max_size` on the long side, keeping the aspect ratio."""
    if max_size is None or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    max_size: int | None = None,
    min_side: int = 1,
) -> DecodedImage:
    """Decode `data` to an upright sRGB uint8 array no larger than `max_size` on its long side.

    Animated images (GIF, WebP, AVIF) use their first frame. Transparency is composited on
    white. An embedded ICC profile (CMYK included) is converted to sRGB.
    Raises `ImageRejected` (400) or `ImageTooLarge` (413) with a message naming the problem.
    """
    if not data:
        raise ImageRejected("the uploaded file is empty")
    image = _open(data, max_pixels)
    source_format = str(image.format)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,} (ATELIER_MAX_PIXELS)"
        )
    if min(width, height) < min_side:
        raise ImageRejected(f"image is {width}x{height}; each side needs {min_side} px or more")
    try:
        if image.format == "JPEG" and max_size is not None and max(width, height) > max_size:
            _draft(image, max_size)
        image.load()
        # Read after load: PNG's getexif() decodes the whole image, and a failed first decode
        # would leave a half-loaded image that a second load() accepts.
        orientation = _exif_orientation(image)
        icc = image.info.get("icc_profile")
        image = to_srgb(_reduce(image, max_size), icc)
        if orientation in _ORIENTATION_TRANSPOSE:
            image = image.transpose(_ORIENTATION_TRANSPOSE[orientation])
        pixels = _to_rgb_array(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageRejected(f"the image is corrupt or truncated ({exc})") from exc
    # The target comes from the declared size, not the draft-decoded one, which libjpeg rounds
    # up: a JPEG and a PNG of the same picture give the same output size.
    upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    tw, th = target_size(upright[0], upright[1], max_size)
    if (tw, th) != (pixels.shape[1], pixels.shape[0]):
        resized = Image.fromarray(pixels).resize((tw, th), Image.Resampling.LANCZOS)
        pixels = np.asarray(resized)
    return DecodedImage(pixels=pixels, format=source_format, original_size=(width, height))


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fires on the header for the largest bombs, before our check.
        raise ImageTooLarge(
            f"image declares more pixels than Pillow will open; the limit is {max_pixels:,} "
            "(ATELIER_MAX_PIXELS)"
        ) from exc
    except UnidentifiedImageError as exc:
        allowed = ", ".join(ALLOWED_FORMATS)
        raise ImageRejected(f"the upload is not a supported image; send one of: {allowed}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected(f"the image header is unreadable ({exc})") from exc


def _exif_orientation(image: Image.Image) -> int:
    """EXIF Orientation (1 = upright; 5-8 swap width and height), 1 when absent or unreadable."""
    try:
        return int(image.getexif().get(0x0112, 1))
    except (OSError, ValueError, TypeError, SyntaxError):
        return 1


def _reduce(image: Image.Image, max_size: int | None) -> Image.Image:
    """A whole-factor box reduction of a decode much larger than the target (drops the
    full-size image before the copies that mode conversion and resizing make)."""
    if max_size is None or image.mode not in _REDUCIBLE_MODES:
        return image
    factor = max(image.size) // (max_size * REDUCING_GAP)
    return image.reduce(factor) if factor >= 2 else image


def _draft(image: Image.Image, max_size: int) -> None:
    """Ask libjpeg for a 1/2, 1/4 or 1/8 scale decode that still covers `max_size`."""
    scale = max_size / max(image.size)
    image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Normalise every mode Pillow may hand back (palette, alpha, CMYK, 16-bit) to RGB uint8."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.asarray(image).astype(np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        gray = np.clip(wide * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if image.mode == "F":
        wide = np.asarray(image).astype(np.float32)
        peak = 1.0 if wide.max() <= 1.0 else 255.0
        gray = np.clip(wide * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return np.asarray(image.convert("RGB"))
