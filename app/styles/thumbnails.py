"""Style thumbnails: each style rendered on one reference photo, cached on disk.

Rendering is lazy (first request) so start-up stays fast; the cache lives in the data dir and
is keyed by style name, so a re-registered user style must call `invalidate`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from app.core.files import write_atomic
from app.imaging.encode import OutputFormat, encode_image

REFERENCE_CREDIT = "Chelsea the cat, Stefan van der Walt, CC0 (scikit-image sample data)"


def reference_photo() -> np.ndarray:
    """The 256 px photo every thumbnail is rendered on (shipped inside the package)."""
    path = resources.files("app.styles") / "reference.jpg"
    with resources.as_file(path) as file, Image.open(file) as image:
        return np.asarray(image.convert("RGB"))


class ThumbnailCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.jpg"

    def get(self, name: str, render: Callable[[np.ndarray], np.ndarray]) -> bytes:
        """Cached JPEG bytes for `name`, rendering and storing them atomically when missing."""
        path = self.path(name)
        if path.exists():
            return path.read_bytes()
        data = encode_image(render(reference_photo()), OutputFormat.jpeg, quality=85)
        write_atomic(path, data)
        return data

    def invalidate(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)
