"""Job options <-> the job row's JSON column.

The column holds the engine's GatysOptions plus job-level fields the engine never sees:
`allow_downscale` (the client lets a job that ran out of memory be retried once, smaller) and
`downscaled_to` (the long side the worker then used). Keeping them in the same column means a
client reads everything it asked for, and what the worker changed, in one `options` object.

JSON has no tuples, so the tuple-valued options are stored as lists and rebuilt on the way out;
building the dataclass again re-runs its validation, so a hand-edited row fails loudly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from app.gatys.optimize import MIN_SIZE, GatysOptions

DOWNSCALE_FACTOR = 0.7  # about half the pixels, so roughly half the activation memory

_TUPLE_FIELDS = ("style_blend", "scales")
_JOB_FIELDS = ("allow_downscale", "downscaled_to")


@dataclass(frozen=True)
class JobOptions:
    """What a worker needs from the options column: the engine's options and the job's own."""

    gatys: GatysOptions
    allow_downscale: bool = False
    downscaled_to: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.allow_downscale, bool):
            raise ValueError("allow_downscale must be true or false")
        size = self.downscaled_to
        if size is not None and not (
            isinstance(size, int)
            and not isinstance(size, bool)
            and MIN_SIZE <= size < self.gatys.output_size
        ):
            raise ValueError(
                f"downscaled_to must be a whole number in [{MIN_SIZE}, {self.gatys.output_size})"
            )

    @property
    def effective(self) -> GatysOptions:
        """The options to run with: the downscaled ones once a run has been downscaled, so a
        retry after a lost worker does not start over at the size known to run out of memory."""
        if self.downscaled_to is None:
            return self.gatys
        return resized(self.gatys, self.downscaled_to)


def options_to_json(options: GatysOptions, *, allow_downscale: bool = False) -> dict[str, Any]:
    data = dataclasses.asdict(options)
    for name in _TUPLE_FIELDS:
        if data[name] is not None:
            data[name] = list(data[name])
    data["allow_downscale"] = allow_downscale
    return data


def options_from_json(data: dict[str, Any]) -> JobOptions:
    known = {field.name for field in dataclasses.fields(GatysOptions)} | set(_JOB_FIELDS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown job option(s): {', '.join(unknown)}")
    values = {name: value for name, value in data.items() if name not in _JOB_FIELDS}
    for name in _TUPLE_FIELDS:
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return JobOptions(
        gatys=GatysOptions(**values),
        allow_downscale=data.get("allow_downscale", False),
        downscaled_to=data.get("downscaled_to"),
    )


def downscaled(options: GatysOptions, factor: float = DOWNSCALE_FACTOR) -> GatysOptions | None:
    """`options` at `factor` times the output's long side, or None when it cannot shrink."""
    target = max(MIN_SIZE, round(options.output_size * factor))
    if target >= options.output_size:
        return None
    return resized(options, target)


def resized(options: GatysOptions, long_side: int) -> GatysOptions:
    """`options` with output long side `long_side`; a multi-scale schedule shrinks by the same
    ratio (scales that collide at the minimum size merge, as the engine needs them increasing)."""
    ratio = long_side / options.output_size
    size = max(MIN_SIZE, round(options.size * ratio))
    if options.scales is None:
        return dataclasses.replace(options, size=long_side)
    scales = sorted({max(MIN_SIZE, round(scale * ratio)) for scale in options.scales[:-1]})
    scales = [scale for scale in scales if scale < long_side] + [long_side]
    return dataclasses.replace(options, size=size, scales=tuple(scales))
