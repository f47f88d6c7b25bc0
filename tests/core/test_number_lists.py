"""Comma lists of numbers: what form fields, query parameters and CLI options accept."""

from __future__ import annotations

import pytest

from app.core.number_lists import blend_weights, parse_numbers


def test_numbers_parse_in_order_and_blank_means_absent() -> None:
    assert parse_numbers("512, 1024", int) == (512, 1024)
    assert parse_numbers("0.7,0.3", float) == (0.7, 0.3)
    assert parse_numbers(None, int) is None and parse_numbers("  ", float) is None


@pytest.mark.parametrize(
    ("raw", "kind", "noun"), [("1.5,2", int, "whole numbers"), ("a,b", float, "numbers")]
)
def test_a_bad_list_is_named_in_the_error(raw: str, kind: type, noun: str) -> None:
    with pytest.raises(ValueError, match=f"comma-separated {noun}.*{raw!r}"):
        parse_numbers(raw, kind)


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        ("0.5", 2, "1 weights for 2 style image"),
        ("0,0", 2, "not all zero"),
        ("-1,2", 2, ">= 0"),
        ("inf,1", 2, "finite"),
        ("nan,1", 2, "finite"),
    ],
)
def test_blend_weights_are_one_per_image_finite_and_not_all_zero(
    raw: str, count: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        blend_weights(raw, count)


def test_blend_weights_pass_through() -> None:
    assert blend_weights("3,1", 2) == (3.0, 1.0) and blend_weights(None, 2) is None
