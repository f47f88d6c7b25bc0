"""The studio's Video panel in Debian's chromium: upload a clip with sound, watch it progress,
get back a playable stylized clip of the same length."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import pattern

from app.video.synthetic import pan_frames, write_clip
from web.conftest import OpenStudio, require_browser

require_browser()

from playwright.sync_api import expect  # noqa: E402 (after the skip)

FRAMES = 20
FPS = 25


def test_video_panel_returns_a_playable_clip(
    open_studio: OpenStudio, tmp_path: Path, artifacts: Path
) -> None:
    clip = tmp_path / "pan.mp4"
    write_clip(clip, pan_frames(pattern(480, 240, seed=2), FRAMES, (160, 96)), FPS)
    page = open_studio(1280, 900)
    page.set_input_files("#video-input", str(clip))
    page.select_option("#video-style", "starry-swirls")
    page.fill("#video-size", "160")
    page.click("#video-submit")
    expect(page.locator("#video-result")).to_be_visible(timeout=120_000)
    expect(page.locator("#video-message")).to_have_text("Done.")
    duration = page.evaluate(
        """() => new Promise((resolve) => {
          const player = document.getElementById("video-player");
          if (player.readyState >= 1) { resolve(player.duration); return; }
          player.addEventListener("loadedmetadata", () => resolve(player.duration));
        })"""
    )
    assert duration == pytest.approx(FRAMES / FPS, abs=0.05)
    assert page.locator("#video-download").get_attribute("download") == "stylized.mp4"
    page.locator("#video").screenshot(path=str(artifacts / "video-panel.png"))
