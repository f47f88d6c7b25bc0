"""GatysOptions <-> the job row's JSON column.

JSON has no tuples, so the tuple-valued options are stored as lists and rebuilt on the way out;
building the dataclass again re-runs its validation, so a hand-edited row fails loudly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from app.gatys.optimize import GatysOptions

_TUPLE_FIELDS = ("style_blend", "scales")


def options_to_json(options: GatysOptions) -> dict[str, Any]:
    data = dataclasses.asdict(options)
    for name in _TUPLE_FIELDS:
        if data[name] is not None:
            data[name] = list(data[name])
    return data


def options_from_json(data: dict[str, Any]) -> GatysOptions:
    known = {field.name for field in dataclasses.fields(GatysOptions)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown job option(s): {', '.join(unknown)}")
    values = dict(data)
    for name in _TUPLE_FIELDS:
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return GatysOptions(**values)
