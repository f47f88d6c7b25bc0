"""POST /jobs/video end to end: submit a clip with sound, poll, fetch the stylized clip; bad
clips and parameters get problem+json 4xx answers before any frame is decoded."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import av
import httpx
import pytest
from conftest import assert_problem, encode, pattern
from fastapi.testclient import TestClient

from app.jobs.kinds import video as video_kind

JOB_TIMEOUT_S = 120


@pytest.fixture
def video_client(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> Iterator[TestClient]:
    with make_client(video_chunk_frames=4, job_poll_interval_s=0.1) as client:
        yield client


def submit(client: TestClient, clip: Path, **form: str) -> dict:
    response = client.post(
        "/jobs/video", files={"video": (clip.name, clip.read_bytes())}, data=form
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/jobs/{response.json()['id']}"
    return response.json()


def finished(client: TestClient, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}"
        time.sleep(0.1)


def test_clip_with_sound_comes_back_stylized_with_sound(
    video_client: TestClient, clips: dict[str, Path], tmp_path: Path
) -> None:
    job = submit(video_client, clips["mp4"], style="starry-swirls", stabilize="0.7")
    assert job["kind"] == "video" and job["progress"]["total"] == 12
    assert job["options"]["source"]["audio"] == "aac"
    done = finished(video_client, job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"]["iteration"] == 12
    result = video_client.get(f"/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(result.content)) as out, av.open(str(clips["mp4"])) as source:
        assert out.streams.video[0].frames == 12
        assert out.streams.audio and out.streams.audio[0].codec_context.name == "aac"
        assert out.duration == pytest.approx(source.duration, rel=0.02)
    preview = video_client.get(f"/jobs/{job['id']}/preview")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
    # The embedded worker borrowed the app's loaded networks instead of loading its own.
    settings = video_client.app.state.service.settings
    assert all(known is not settings for known, _ in video_kind._loaded)


def test_gif_with_a_painting_style(video_client: TestClient, clips: dict[str, Path]) -> None:
    painting = encode(pattern(64, 64, seed=4), "PNG")
    response = video_client.post(
        "/jobs/video",
        files=[
            ("video", ("pan.gif", clips["gif"].read_bytes())),
            ("style_image", ("p.png", painting)),
        ],
        data={"strength": "0.8"},
    )
    assert response.status_code == 202, response.text
    done = finished(video_client, response.json()["id"])
    assert done["state"] == "succeeded", done["error"]
    result = video_client.get(f"/jobs/{done['id']}/result")
    assert result.headers["content-type"] == "image/gif"


def test_bad_clips_are_refused_up_front(
    make_client: Callable[..., AbstractContextManager[TestClient]], clips: dict[str, Path]
) -> None:
    size = clips["mp4"].stat().st_size
    with make_client(video_max_bytes=size - 1, video_max_frames=5) as client:

        def post(data: bytes, name: str = "clip.mp4", **form: str) -> httpx.Response:
            return client.post("/jobs/video", files={"video": (name, data)}, data=form)

        too_big = assert_problem(post(clips["mp4"].read_bytes()), 413, "upload_too_large")
        assert "ATELIER_VIDEO_MAX_BYTES" in too_big["detail"]
        assert_problem(post(b"not a video at all"), 400, "invalid_video")
        assert_problem(post(clips["webp"].read_bytes(), "a.webp"), 422, "video_too_long")
    with make_client() as client:

        def post2(data: bytes, **form: str) -> httpx.Response:
            return client.post("/jobs/video", files={"video": ("c.mp4", data)}, data=form)

        clip = clips["mp4"].read_bytes()
        for cut in (300, len(clip) // 2):
            assert_problem(post2(clip[:cut]), 400, "invalid_video")
        assert_problem(post2(clip, format="webm"), 422, "invalid_parameter")  # AAC in WebM
        assert_problem(post2(clips["gif"].read_bytes(), format="mp4"), 422, "invalid_parameter")
        assert_problem(post2(clip, stabilize="1.5"), 422, "invalid_parameter")
        assert_problem(post2(clip, style="no-such-style"), 404, "unknown_style")
        assert_problem(post2(clip, max_size="99999"), 422, "invalid_parameter")
        assert client.get("/jobs").json()["total"] == 0
