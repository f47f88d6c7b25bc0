"""The kept-memory tunables: merged into glibc's list, applied by a restart, and effective."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from app.core.config import Settings
from app.core.heap import (
    KEPT_MEMORY,
    TUNABLES,
    keeps_freed_memory,
    wants_kept_memory,
    with_kept_memory,
)

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc tunables")


def test_kept_memory_is_merged_into_other_tunables() -> None:
    merged = with_kept_memory("glibc.malloc.tcache_count=0:glibc.malloc.mmap_max=7")
    entries = dict(item.split("=") for item in merged.split(":"))
    assert entries == {"glibc.malloc.tcache_count": "0", **KEPT_MEMORY}
    assert with_kept_memory(merged) == merged  # so a restarted process does not restart again
    assert keeps_freed_memory({TUNABLES: merged})
    assert not keeps_freed_memory({TUNABLES: "glibc.malloc.mmap_max=7"})
    assert not keeps_freed_memory({})


def _run(code: str, **environ: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != TUNABLES} | environ
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


@glibc_only
@pytest.mark.parametrize("enabled", [True, False])
def test_restart_applies_the_tunables_once(enabled: bool) -> None:
    code = f"""
        import os
        from app.core.heap import TUNABLES, restart_with_kept_memory
        print("run", repr(os.environ.get(TUNABLES, "")))
        restart_with_kept_memory({enabled})
    """
    runs = _run(code).splitlines()
    if enabled:
        assert runs == ["run ''", f"run {with_kept_memory('')!r}"]
    else:
        assert runs == ["run ''"]


FAULTS = """
    import resource
    faults = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = b"x" * (64 * 2**20)  # malloc, then written: 64 MiB, over any mmap threshold
        del block
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(*faults)
"""


@glibc_only
def test_kept_memory_stops_big_blocks_faulting_in_again() -> None:
    """Six 64 MiB blocks, allocated, written and freed in turn: glibc's defaults map each one
    afresh, so each faults its pages in as the first did; kept, the heap reuses the first
    block's pages. The first block's faults are the unit (pages or huge pages, as the kernel
    hands them out)."""
    default = [int(n) for n in _run(FAULTS).split()]
    kept = [int(n) for n in _run(FAULTS, **{TUNABLES: with_kept_memory("")}).split()]
    assert all(n > default[0] // 2 for n in default[1:]), default
    assert all(n < kept[0] // 10 for n in kept[1:]), kept


def test_a_shrinking_onnxruntime_arena_gets_glibc_defaults() -> None:
    """What onnxruntime shrinks its arena by goes back to the heap, which must return it."""
    assert wants_kept_memory(Settings())
    assert not wants_kept_memory(Settings(keep_freed_memory=False))
    assert not wants_kept_memory(Settings(cpu_shrink_arena=True))
