"""The registry of job kinds: name -> where its `JobKind` lives.

Kinds are imported on first use, so a process that never runs video jobs never imports PyAV,
and an API host that only submits jobs never imports an engine.
"""

from __future__ import annotations

import functools
import importlib

from app.jobs.kinds.base import JobContext, JobKind, JobResult, ProgressUpdate, queue_name

KINDS: dict[str, str] = {
    "gatys": "app.jobs.kinds.gatys:GatysKind",
    "training": "app.jobs.kinds.training:TrainingKind",
    "video": "app.jobs.kinds.video:VideoKind",
}


class UnknownJobKind(LookupError):
    pass


@functools.cache
def get_kind(name: str) -> JobKind:
    target = KINDS.get(name)
    if target is None:
        raise UnknownJobKind(f"unknown job kind {name!r}; known: {', '.join(KINDS)}")
    module_name, _, class_name = target.partition(":")
    kind_class = getattr(importlib.import_module(module_name), class_name)
    return kind_class()


__all__ = [
    "KINDS",
    "JobContext",
    "JobKind",
    "JobResult",
    "ProgressUpdate",
    "UnknownJobKind",
    "get_kind",
    "queue_name",
]
