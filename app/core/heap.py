"""The C heap's policy for big, short-lived buffers: keep freed memory for the next run.

Why: torch allocates and frees its activations, blocks of tens to hundreds of megabytes, on
every layer of every call (Gatys evaluations, training steps, the eager backend; OpenVINO's
compiled graphs and onnxruntime's arena keep theirs). glibc serves blocks that large with a
fresh `mmap` and unmaps them on `free`, so every call page-faults all of that memory in again
and the kernel zeroes it page by page: system time that can rival the model's own compute.
With one arena, no `mmap` for big blocks and no trimming, freed blocks stay in the heap and
the next layer or request reuses them. The price: the process's resident memory stays at its
peak (bounded per request by the tile and upload limits) instead of falling between requests.

glibc reads these tunables only when a process starts, so `atelier` restarts itself once
with them set (`restart_with_kept_memory`); `ATELIER_KEEP_FREED_MEMORY=false` opts out, and
`ATELIER_CPU_SHRINK_ARENA=true` implies it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from app.core.config import Settings

log = logging.getLogger(__name__)

TUNABLES = "GLIBC_TUNABLES"
# One arena: a thread's own arena would still map big blocks afresh; no mmap for big blocks;
# never trim the heap's top (64 GiB: more than any host here holds).
KEPT_MEMORY = {
    "glibc.malloc.arena_max": "1",
    "glibc.malloc.mmap_max": "0",
    "glibc.malloc.trim_threshold": str(64 * 2**30),
}


def with_kept_memory(tunables: str) -> str:
    """`tunables` (glibc's `name=value:name=value` list) with the kept-memory entries set,
    any other entries left as they were."""
    entries = dict(item.split("=", 1) for item in tunables.split(":") if "=" in item)
    return ":".join(f"{name}={value}" for name, value in {**entries, **KEPT_MEMORY}.items())


def heap_environ(environ: Mapping[str, str], *, kept: bool) -> dict[str, str]:
    """A copy of `environ` for a process with the kept-memory tunables, or with none (glibc's
    defaults)."""
    result = {name: value for name, value in environ.items() if name != TUNABLES}
    if kept:
        result[TUNABLES] = with_kept_memory(environ.get(TUNABLES, ""))
    return result


def keeps_freed_memory(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this environment's tunables hold the kept-memory entries."""
    return with_kept_memory(environ.get(TUNABLES, "")) == environ.get(TUNABLES)


def on_glibc() -> bool:
    """Whether this process runs on glibc (asked of the C library, not by scanning the
    interpreter's binary as `platform.libc_ver` does)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # the name is unknown off glibc
        return False


def heap_policy(environ: Mapping[str, str] = os.environ) -> str:
    """A short description for the service's start-up log line."""
    if not on_glibc():
        return "system allocator (not glibc)"
    return "glibc, freed memory kept" if keeps_freed_memory(environ) else "glibc defaults"


def wants_kept_memory(settings: Settings) -> bool:
    """The setting, unless onnxruntime is asked to shrink its arena after every run: what it
    frees would stay in the heap, and resident memory would grow instead of staying flat."""
    return settings.keep_freed_memory and not settings.cpu_shrink_arena


def restart_with_kept_memory(enabled: bool) -> None:
    """Replace this process by the same command with the kept-memory tunables, once.

    A no-op where it is off, already in effect, or not glibc (musl, macOS). Called first
    thing by the `atelier` command: nothing done before it is lost but imports.
    """
    if not enabled or keeps_freed_memory() or not on_glibc():
        return
    try:
        os.execve(sys.executable, sys.orig_argv, heap_environ(os.environ, kept=True))
    except OSError as error:
        log.warning("could not restart with freed memory kept (%s); glibc defaults", error)
