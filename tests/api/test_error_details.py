"""What error details may say: the problem, never where the server keeps its files."""

from __future__ import annotations

import tempfile

from conftest import assert_problem
from fastapi.testclient import TestClient


def test_a_corrupt_clip_is_described_without_the_servers_temp_path(
    shared_client: TestClient,
) -> None:
    # An MP4 box header followed by garbage: FFmpeg names the file it could not read.
    clip = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 12 + b"garbage!" * 400
    response = shared_client.post("/jobs/video", files={"video": ("clip.mp4", clip)})
    body = assert_problem(response, 400, "invalid_video")
    assert "corrupt" in body["detail"]
    assert tempfile.gettempdir() not in body["detail"]
    assert "atelier-probe" not in body["detail"]
