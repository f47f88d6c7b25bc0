"""Small clips that declare huge frames cost the server almost nothing: refused (413) from the
container header before any decode, or by a decoder capped at the pixel limit when only the
H.264 header declares the size; the probe decodes under the shared decode budget; an animation
over the writer's pixel limit says so (413 `animation_too_large`).

Memory is measured as the peak resident size (VmHWM) of a fresh Python process probing the
clips, so FFmpeg's own allocations count (tracemalloc would not see them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from conftest import assert_problem
from fastapi.testclient import TestClient

from app.video import pipeline
from app.video.hostile import write_declaring

ROOT = Path(__file__).resolve().parents[2]
SIDE = 16000
PROBE = """
import sys, threading
from pathlib import Path
from app.video.probe import VideoLimits, VideoRejected, probe

paths = [Path(p) for p in sys.argv[1:]]
codes = []
def run(path):
    try:
        probe(path, VideoLimits(10**8, 60, 1800, 1920 * 1080))
        codes.append("accepted")
    except VideoRejected as exc:
        codes.append(exc.code)
def peak_kib():  # this process's own high-water mark (ru_maxrss counts the parent's, pre-exec)
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
run(paths[0])  # a harmless clip first: FFmpeg's first-use setup is not the hostile clips' cost
before = peak_kib()
threads = [threading.Thread(target=run, args=(p,)) for p in paths[1:]]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
grown = peak_kib() - before
print(" ".join(sorted(set(codes[1:]))), grown // 1024)
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    clips = {"container": folder / "container.mp4", "bitstream": folder / "bitstream.mp4"}
    write_declaring(clips["container"], SIDE, SIDE)
    write_declaring(clips["bitstream"], SIDE, SIDE, container=False)
    return clips


def _probe_peak_mib(warm_up: Path, paths: list[Path]) -> tuple[str, int]:
    """(the codes the probes answered, peak RSS growth in MiB) of probing `paths` at once,
    after a probe of `warm_up`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(warm_up), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=True,
    )
    codes, grown = done.stdout.split()
    return codes, int(grown)


def test_hostile_clips_are_small(hostile: dict[str, Path]) -> None:
    assert all(path.stat().st_size < 1_000_000 for path in hostile.values())


def test_a_size_declared_by_the_container_is_refused_without_decoding(
    hostile: dict[str, Path], clips: dict[str, Path]
) -> None:
    codes, grown = _probe_peak_mib(clips["mp4"], [hostile["container"]])
    assert codes == "video_too_large"
    assert grown < 20, f"probing one 16000x16000 clip grew the process by {grown} MiB"


def test_a_size_only_the_bitstream_declares_is_refused_by_the_capped_decoder(
    hostile: dict[str, Path], clips: dict[str, Path]
) -> None:
    """The decoder allocates its per-macroblock tables for the declared size before refusing
    the frame (tens of MiB at 16000x16000), never the frame itself (about 370 MiB)."""
    codes, grown = _probe_peak_mib(clips["mp4"], [hostile["bitstream"]])
    assert codes == "video_too_large"
    assert grown < 150, f"probing one 16000x16000 clip grew the process by {grown} MiB"


def test_concurrent_hostile_probes_stay_bounded(
    hostile: dict[str, Path], clips: dict[str, Path]
) -> None:
    codes, grown = _probe_peak_mib(clips["mp4"], [hostile["bitstream"]] * 4)
    assert codes == "video_too_large"
    assert grown < 250, f"four 16000x16000 clips at once grew the process by {grown} MiB"


@pytest.fixture
def api(make_client: Callable[..., AbstractContextManager[TestClient]]):
    with make_client(embedded_worker=False) as client:
        yield client


def _post(client: TestClient, path: Path, name: str = "c.mp4"):
    return client.post("/jobs/video", files={"video": (name, path.read_bytes())})


def test_hostile_uploads_get_413_naming_the_size(api: TestClient, hostile: dict[str, Path]):
    for path in hostile.values():
        body = assert_problem(_post(api, path), 413, "video_too_large")
        assert "16000x16000" in body["detail"]
        assert "ATELIER_VIDEO_MAX_FRAME_PIXELS" in body["detail"]


def test_the_video_probe_decodes_under_the_decode_budget(
    api: TestClient, clips: dict[str, Path]
) -> None:
    budget = api.app.state.service.decode_budget
    with budget.reserve(budget.capacity):
        for name in ("mp4", "gif"):
            response = _post(api, clips[name], f"c.{name}")
            assert_problem(response, 503, "busy")
            assert int(response.headers["retry-after"]) > 0
    assert budget.in_use == 0
    assert _post(api, clips["mp4"]).status_code == 202
    assert budget.in_use == 0


def test_an_animation_over_the_writer_limit_is_not_called_too_long(
    api: TestClient, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "ANIMATION_MAX_PIXELS", 10_000)
    body = assert_problem(_post(api, clips["gif"], "a.gif"), 413, "animation_too_large")
    assert "max_size" in body["detail"]
