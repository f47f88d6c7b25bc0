"""One bound on the pixels that all uploads being decoded at once may hold.

A decoded image costs about 3-4 bytes a pixel however small it was on the wire (a 7000x7000
single-colour PNG is 160 KB compressed, 147 MB decoded), and uploads are decoded on several
pools: predictions on the inference executor, job inputs on Starlette's thread pool. Without a
shared bound, a few concurrent job submissions hold gigabytes. Every path that decodes an upload
reserves its pixels here first (`reserve_decode`), from the headers alone, and a full budget
answers at once (503 + Retry-After) instead of queueing without limit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from PIL import Image

from app.imaging.decode import ALLOWED_FORMATS, JPEG_DRAFT_SCALES

RETRY_AFTER_S = 1
# After a decode this large ends with nothing else decoding, give freed heap back to the OS.
TRIM_AFTER_PIXELS = 4_000_000


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


class DecodeBudgetFull(RuntimeError):
    """Too many pixels are being decoded right now; retry after `retry_after` seconds."""

    def __init__(self, wanted: int, capacity: int) -> None:
        super().__init__(
            f"the server is decoding too many images at once ({wanted:,} more pixels would "
            f"exceed ATELIER_DECODE_BUDGET_PIXELS = {capacity:,}); retry shortly"
        )
        self.retry_after = RETRY_AFTER_S


class DecodeBudget:
    """A counting bound on decoded pixels in flight, shared by every upload path."""

    def __init__(self, capacity_pixels: int) -> None:
        self.capacity = capacity_pixels
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Hold `pixels` (at most the whole budget, so one large upload still runs alone)."""
        wanted = min(pixels, self.capacity)
        with self._lock:
            if self._in_use + wanted > self.capacity:
                raise DecodeBudgetFull(wanted, self.capacity)
            self._in_use += wanted
        try:
            yield
        finally:
            with self._lock:
                self._in_use -= wanted
                idle = self._in_use == 0
            if idle and wanted >= TRIM_AFTER_PIXELS:
                trim_heap()


def trim_heap() -> None:
    """glibc keeps freed large buffers in its arenas (its mmap threshold grows after the first
    big free), so one burst of large decodes would otherwise stay resident for good."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def decode_cost(data: bytes, max_size: int | None) -> int:
    """Pixels decoding `data` to at most `max_size` will hold at its peak, from the header.

    JPEGs decode at 1/2, 1/4 or 1/8 scale when the target is smaller (draft mode); other
    formats decode whole before they are reduced. Unreadable data costs nothing here: the
    decoder rejects it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
                width, height = image.size
                source_format = image.format
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 0
    if source_format == "JPEG" and max_size is not None and max(width, height) > max_size:
        scale = max(s for s in JPEG_DRAFT_SCALES if max(width, height) / s >= max_size)
        return math.ceil(width / scale) * math.ceil(height / scale)
    return width * height


@contextmanager
def reserve_decode(
    budget: DecodeBudget, uploads: Iterable[tuple[bytes, int | None]]
) -> Iterator[None]:
    """Reserve the decode of every `(data, max_size)` upload a request is about to decode.

    The one call each upload path makes (predictions, style images, style registration, job
    inputs) around its decoding; raises DecodeBudgetFull when the budget cannot take them now.
    """
    with budget.reserve(sum(decode_cost(data, max_size) for data, max_size in uploads)):
        yield
