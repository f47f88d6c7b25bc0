"""`atelier stylize clip.mp4 -s ... -o out.mp4`: clips are recognised by content, not name."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest
from PIL import Image
from typer.testing import CliRunner

from app.cli.commands import cli


@pytest.fixture
def env(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, clean_env_settings: None
) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cache").symlink_to(cache_dir, target_is_directory=True)
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("ATELIER_DATA_DIR", str(data))
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("ATELIER_WARMUP", "false")
    return tmp_path


def test_a_video_named_like_an_image_is_stylized_as_video(
    env: Path, clips: dict[str, Path]
) -> None:
    source = env / "holiday.jpg"  # the name lies; the content is an MP4 with sound
    shutil.copy(clips["mp4"], source)
    target = env / "out.mp4"
    result = CliRunner().invoke(
        cli, ["stylize", str(source), "-s", "starry-swirls", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert "12 frames" in result.output and "frame/s" in result.output  # the progress bar
    with av.open(str(target)) as out:
        assert out.streams.video[0].frames == 12 and out.streams.audio


def test_a_folder_of_mixed_inputs(env: Path, clips: dict[str, Path]) -> None:
    inputs = env / "in"
    inputs.mkdir()
    shutil.copy(clips["gif"], inputs / "loop.gif")
    shutil.copy(clips["webm"], inputs / "clip.webm")
    Image.new("RGB", (32, 24), "teal").save(inputs / "still.png")
    result = CliRunner().invoke(
        cli,
        ["stylize", str(inputs), "-s", "golden-haze", "-o", str(env / "out"), "--stabilize", "0"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (env / "out").iterdir()) == ["clip.mp4", "loop.gif", "still.jpeg"]
    with Image.open(env / "out" / "loop.gif") as gif:
        assert gif.n_frames == 6


def test_a_clip_to_an_image_name_is_refused(env: Path, clips: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["stylize", str(clips["mp4"]), "-o", str(env / "x.png")])
    assert result.exit_code == 1 and ".mp4, .webm, .gif or .webp" in result.output
