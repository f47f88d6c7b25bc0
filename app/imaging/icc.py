"""Colour management: decoded pixels are converted from their embedded ICC profile to sRGB.

The networks, the strength blend and every encoder assume sRGB, and browsers show untagged
pixels as sRGB. A Display P3 (recent phones), Adobe RGB or ProPhoto photo read as if it were
sRGB comes out dull and shifted, and a CMYK file converted without its profile gets the wrong
inks. LittleCMS (Pillow's ImageCms) does the conversion; outputs are tagged with the same sRGB
profile it converts to, so what a viewer shows is what the service meant.
"""

from __future__ import annotations

import io
import logging
from functools import lru_cache

from PIL import Image, ImageCms

log = logging.getLogger(__name__)

SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
SRGB_ICC: bytes = SRGB_PROFILE.tobytes()
# Perceptual: what a profile's maker intends for photos (and, for matrix/TRC profiles, the
# same as relative colorimetric).
INTENT = ImageCms.Intent.PERCEPTUAL
# The Pillow mode each ICC colour space describes.
_MODE_OF_SPACE = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}
_TRANSFORM_CACHE = 32


def to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """`image` (decoded) converted from the profile `icc` to sRGB: RGB, or RGBA when it has an
    alpha channel. Unchanged when there is no profile, or one that does not describe the
    image's colours (unreadable, or for another colour space): viewers treat those as sRGB too.
    """
    # Our own outputs (and inputs the service stores for its jobs) carry exactly SRGB_ICC.
    if not icc or icc == SRGB_ICC or image.mode not in ("RGB", "RGBA", "L", "LA", "P", "CMYK"):
        return image
    space = _space(icc)
    if space is None:
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    colours = image.convert(image.mode[:-1]) if alpha is not None else image
    if _MODE_OF_SPACE.get(space) != colours.mode:
        return image
    transform = _transform(icc, colours.mode)
    if transform is None:
        return image
    try:
        converted = ImageCms.applyTransform(colours, transform)
    except ImageCms.PyCMSError as exc:
        log.info("ignoring an ICC profile LittleCMS cannot apply: %s", exc)
        return image
    assert converted is not None
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


@lru_cache(maxsize=_TRANSFORM_CACHE)
def _space(icc: bytes) -> str | None:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.info("ignoring an unreadable ICC profile: %s", exc)
        return None
    return str(profile.profile.xcolor_space).strip()


@lru_cache(maxsize=_TRANSFORM_CACHE)
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """One LittleCMS transform per profile and mode (building one costs more than applying
    it to a live frame); transforms are safe to share between threads."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.buildTransform(profile, SRGB_PROFILE, mode, "RGB", INTENT)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.info("ignoring an ICC profile LittleCMS cannot use: %s", exc)
        return None
