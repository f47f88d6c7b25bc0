"""The registry of job kinds: name -> where its `JobKind` lives.

Kinds are imported on first use, so a process that never runs video jobs never imports PyAV,
and an API host that only submits jobs never imports an engine.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

from app.jobs.kinds.base import JobContext, JobKind, JobResult, ProgressUpdate, queue_name


@dataclass(frozen=True)
class KindInfo:
    """What the API needs to know about a kind without importing it."""

    target: str  # "module:Class" of its JobKind
    image_result: bool  # its result is a still image that may be served in another format
    preview_option: tuple[str, ...] = ()  # path to its preview interval in the stored options

    def preview_interval(self, options: dict[str, Any]) -> int:
        """Every how many iterations the job saves a preview; 0 when it never does."""
        if not self.preview_option:
            return 0
        value: Any = options
        for key in self.preview_option:
            value = value.get(key) if isinstance(value, dict) else None
        return int(value) if isinstance(value, int | float) else 0


KINDS: dict[str, KindInfo] = {
    "gatys": KindInfo("app.jobs.kinds.gatys:GatysKind", True, ("preview_every",)),
    "training": KindInfo(
        "app.jobs.kinds.training:TrainingKind", False, ("train", "preview_interval")
    ),
    "video": KindInfo("app.jobs.kinds.video:VideoKind", False),
}


class UnknownJobKind(LookupError):
    pass


def kind_info(name: str) -> KindInfo:
    info = KINDS.get(name)
    if info is None:
        raise UnknownJobKind(f"unknown job kind {name!r}; known: {', '.join(KINDS)}")
    return info


@functools.cache
def get_kind(name: str) -> JobKind:
    module_name, _, class_name = kind_info(name).target.partition(":")
    kind_class = getattr(importlib.import_module(module_name), class_name)
    return kind_class()


__all__ = [
    "KINDS",
    "JobContext",
    "JobKind",
    "JobResult",
    "KindInfo",
    "ProgressUpdate",
    "UnknownJobKind",
    "get_kind",
    "kind_info",
    "queue_name",
]
