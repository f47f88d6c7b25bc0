"""Comma-separated numbers, as form fields, query parameters and CLI options spell lists."""

from __future__ import annotations

from typing import overload


@overload
def parse_numbers(raw: str | None, kind: type[int]) -> tuple[int, ...] | None: ...
@overload
def parse_numbers(raw: str | None, kind: type[float]) -> tuple[float, ...] | None: ...
def parse_numbers(raw: str | None, kind: type[int] | type[float]) -> tuple[float, ...] | None:
    """`"0.7,0.3"` -> (0.7, 0.3); None for an absent or blank value. ValueError (with a message
    fit for the user) for anything else."""
    if raw is None or not raw.strip():
        return None
    try:
        return tuple(kind(part) for part in raw.split(","))
    except ValueError:
        noun = "whole numbers" if kind is int else "numbers"
        raise ValueError(f"expected comma-separated {noun} like 2,1, got {raw!r}") from None


def blend_weights(raw: str | None, count: int) -> tuple[float, ...] | None:
    """One finite, non-negative weight per blended image, not all zero; None when not given."""
    weights = parse_numbers(raw, float)
    if weights is None:
        return None
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} style image(s)")
    if not all(0.0 <= w <= 1e6 for w in weights) or sum(weights) <= 0.0:
        raise ValueError("weights must be finite, >= 0 and not all zero")
    return weights
