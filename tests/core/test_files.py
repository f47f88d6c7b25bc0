"""The atomic write: whole files only, readable by other users, nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from app.core.files import atomic_path, write_atomic


def test_a_written_file_is_whole_and_readable_by_everyone(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "weights.bin"
    old_umask = os.umask(0o077)  # the strictest umask a worker might run with
    try:
        write_atomic(target, b"payload")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"payload"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["weights.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "thumb.jpg"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("the writer crashed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["thumb.jpg"]
