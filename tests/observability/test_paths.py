"""`without_paths`: server temp-file paths never reach a client's error detail."""

from __future__ import annotations

import tempfile

import pytest

from app.observability.paths import without_paths

TMP = tempfile.gettempdir()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"the clip is corrupt ([Errno 1094995529] Invalid data found when processing input: "
            f"'{TMP}/atelier-probe-k2j_x9')",
            "the clip is corrupt ([Errno 1094995529] Invalid data found when processing input)",
        ),
        (f'cannot open "{TMP}/atelier-video-1/in.mp4" now', "cannot open now"),
        (f"reading {TMP}/x.png failed", "reading failed"),
        ("POST /jobs/video and /live/token stay", "POST /jobs/video and /live/token stay"),
        ("a style named 'my-style' already exists", "a style named 'my-style' already exists"),
    ],
)
def test_temporary_paths_are_removed(text: str, expected: str) -> None:
    assert without_paths(text) == expected
