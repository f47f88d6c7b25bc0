"""The decode budget: reservations add up and release, a full budget refuses at once, and the
cost read from the header reflects how the decoder shrinks large uploads."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from conftest import encode, pattern, png_header_only
from PIL import Image

from app.imaging.decode import decode_image
from app.imaging.decode_budget import DecodeBudget, DecodeBudgetFull, decode_cost, reserve_decode


def test_reservations_add_up_and_are_released() -> None:
    budget = DecodeBudget(100)
    with budget.reserve(60):
        assert budget.in_use == 60
        with pytest.raises(DecodeBudgetFull) as refused:
            budget.reserve(41).__enter__()
        assert refused.value.retry_after > 0
        with budget.reserve(40):
            assert budget.in_use == 100
    assert budget.in_use == 0


def test_a_failed_decode_releases_its_reservation() -> None:
    budget = DecodeBudget(100)
    with pytest.raises(ValueError), budget.reserve(70):
        raise ValueError("corrupt")
    assert budget.in_use == 0


def test_one_upload_larger_than_the_budget_still_runs_alone() -> None:
    budget = DecodeBudget(100)
    with budget.reserve(10_000):
        assert budget.in_use == 100
        with pytest.raises(DecodeBudgetFull):
            budget.reserve(1).__enter__()


def test_concurrent_reservations_never_exceed_the_capacity() -> None:
    budget = DecodeBudget(10)
    peak: list[int] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(200):
            try:
                with budget.reserve(3):
                    peak.append(budget.in_use)
            except DecodeBudgetFull:
                continue

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(peak) <= 10 and budget.in_use == 0


def test_cost_comes_from_the_header() -> None:
    assert decode_cost(png_header_only(7000, 7000), max_size=1024) == 49_000_000
    assert decode_cost(b"not an image", max_size=1024) == 0


def test_a_large_jpeg_costs_its_draft_scale() -> None:
    jpeg = encode(pattern(1600, 1200), "JPEG")
    assert decode_cost(jpeg, max_size=None) == 1600 * 1200
    assert decode_cost(jpeg, max_size=1600) == 1600 * 1200
    assert decode_cost(jpeg, max_size=400) == 400 * 300  # 1/4 still covers 400
    assert decode_cost(jpeg, max_size=300) == 400 * 300
    assert decode_cost(jpeg, max_size=150) == 200 * 150  # 1/8
    drafted = Image.open(io.BytesIO(jpeg))
    drafted.draft("RGB", (300, 225))
    assert drafted.size == (400, 300), "Pillow's draft disagrees with the cost model"


def test_reserve_decode_sums_every_upload() -> None:
    budget = DecodeBudget(60_000_000)
    big = png_header_only(7000, 7000)
    with reserve_decode(budget, [(big, 1024)]):
        assert budget.in_use == 49_000_000
        with pytest.raises(DecodeBudgetFull):
            reserve_decode(budget, [(big, 1024)]).__enter__()
    assert budget.in_use == 0


def test_reducing_a_large_decode_keeps_the_output() -> None:
    """The box reduction before the final resize (less memory) gives what a direct Lanczos
    resize of the full decode gives, to within rounding."""
    pixels = pattern(2400, 1600, seed=4)
    reduced = decode_image(encode(pixels), max_pixels=10**8, max_size=300).pixels
    direct = np.asarray(Image.fromarray(pixels).resize((300, 200), Image.Resampling.LANCZOS))
    assert reduced.shape == direct.shape == (200, 300, 3)
    assert np.abs(reduced.astype(int) - direct.astype(int)).mean() < 1.5
