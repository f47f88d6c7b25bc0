"""The studio page at `/`, driven in Debian's chromium: stylize a photo, run a Gatys job, show
an API error, and fit a phone-width screen."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from web.conftest import LiveServer, OpenStudio, require_browser

require_browser()

from playwright.sync_api import Page, expect  # noqa: E402 (after the skip)

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO / "swagger-samples" / "chelsea.jpg"
PHOTO_SIZE = (451, 300)
PAINTINGS = [
    REPO.parent / "shared" / "images" / "paintings" / "starry_night.jpg",
    REPO / "docs" / "styles" / "starry-swirls.jpg",
]
PAINTING = next((path for path in PAINTINGS if path.is_file()), PAINTINGS[-1])
DOCS_SCREENSHOT = REPO / "docs" / "studio.png"
DOCS_SCREENSHOT_ENV = "ATELIER_DOCS_SCREENSHOT"
SCREAM = REPO.parent / "shared" / "images" / "paintings" / "the_scream.jpg"
DOCS_JOB_PAINTING = SCREAM if SCREAM.is_file() else PAINTING
DESKTOP = (1280, 900)
PHONE = (390, 844)
PICKED_STYLE = "Crimson Fire"
RESULT_TIMEOUT_MS = 60_000
JOB_TIMEOUT_MS = 180_000

COMPARE_PIXELS = """() => {
  const before = document.getElementById("before-image");
  const after = document.getElementById("result-image");
  const width = after.naturalWidth;
  const height = after.naturalHeight;
  const pixels = (image) => {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0, width, height);
    return context.getImageData(0, 0, width, height).data;
  };
  const a = pixels(before);
  const b = pixels(after);
  let total = 0;
  for (let i = 0; i < a.length; i += 4) {
    total += Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2]);
  }
  return { width, height, meanAbsDiff: total / (width * height * 3) };
}"""

THUMBNAILS_SHOWN = """() => document.querySelectorAll(".style-tile img.loaded").length > 0
  && document.querySelectorAll(".style-tile img:not(.loaded)").length === 0"""

UNLABELLED_CONTROLS = """() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((control) => control.type !== "hidden")
  .filter((control) => {
    const named = control.labels?.length || control.getAttribute("aria-label")
      || control.getAttribute("aria-labelledby") || control.textContent.trim();
    return !named;
  })
  .map((control) => control.outerHTML.slice(0, 120))"""

OVERFLOWING = """(limit) => [...document.querySelectorAll("body *")]
  .filter((element) => element.getBoundingClientRect().right > limit + 0.5)
  .filter((element) => element.checkVisibility())
  .map((element) => `${element.tagName.toLowerCase()}#${element.id}.${element.className}`)
  .slice(0, 10)"""


def stylize_photo(page: Page, style_title: str | None = None) -> None:
    """Upload the photo (it is stylized with the selected style at once), optionally pick
    another style by its title, and wait until the selected style's result is on screen."""
    page.set_input_files("#photo-input", PHOTO)
    if style_title is not None:
        page.locator(".style-tile label", has_text=style_title).click()
        expect(page.get_by_role("radio", name=style_title, exact=True)).to_be_checked()
    style = page.locator("input[name=style]:checked").get_attribute("value")
    expect(page.locator(f"#compare[data-style='{style}']")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#stage")).to_have_attribute("aria-busy", "false")


def run_job(page: Page, painting: Path, iterations: int, size: int) -> None:
    page.set_input_files("#job-content-input", PHOTO)
    page.set_input_files("#job-style-input", painting)
    page.fill("#job-iterations", str(iterations))
    page.fill("#job-size", str(size))
    page.get_by_role("button", name="Start job").click()
    expect(page.locator("#job-view")).to_be_visible()
    expect(page.locator("#job-state")).to_have_attribute(
        "data-state", "succeeded", timeout=JOB_TIMEOUT_MS
    )


def test_stylizes_a_photo_with_a_catalog_style(
    open_studio: OpenStudio, live_server: LiveServer, artifacts: Path
) -> None:
    catalog = httpx.get(f"{live_server.url}/model/styles").json()
    page = open_studio(*DESKTOP)
    expect(page.locator(".style-tile")).to_have_count(len(catalog["styles"]))

    stylize_photo(page, PICKED_STYLE)

    result: dict[str, Any] = page.evaluate(COMPARE_PIXELS)
    assert (result["width"], result["height"]) == PHOTO_SIZE
    assert result["meanAbsDiff"] > 20, f"the result looks like the photo: {result}"
    download = page.locator("#download")
    expect(download).to_be_visible()
    expect(download).to_have_attribute("href", re.compile(r"^blob:"))
    expect(download).to_have_attribute("download", "chelsea-crimson-fire.jpg")
    expect(page.locator("#result-meta")).to_contain_text("451 \N{MULTIPLICATION SIGN} 300 px")

    page.locator("#compare-slider").fill("35")
    split = page.locator("#compare").evaluate("(el) => el.style.getPropertyValue('--split')")
    assert split == "35%"
    page.wait_for_function(THUMBNAILS_SHOWN, timeout=RESULT_TIMEOUT_MS)
    page.screenshot(path=artifacts / "studio-desktop.png", full_page=True)


def test_gatys_job_reports_progress_and_shows_the_result(
    open_studio: OpenStudio, live_server: LiveServer, artifacts: Path
) -> None:
    assert "/jobs" in live_server.openapi_paths(), "the jobs API (POST /jobs) is missing"
    page = open_studio(*DESKTOP)

    run_job(page, PAINTING, iterations=10, size=80)

    expect(page.locator("#job-progress")).to_have_js_property("value", 100)
    expect(page.locator("#job-percent")).to_have_text("100%")
    expect(page.locator("#job-iteration")).to_have_text("10 of 10 iterations")
    for loss in ("#loss-content", "#loss-style", "#loss-tv"):
        expect(page.locator(loss)).to_have_text(re.compile(r"\d"))
    # The loss curve has every one of the 10 iterations (a short job is not thinned).
    expect(page.locator("#job-chart")).to_have_attribute("data-points", "10")
    image = page.locator("#job-image[data-kind=result]")
    expect(image).to_be_visible()
    assert image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [80, 53]
    expect(page.locator("#job-download")).to_have_attribute("href", re.compile(r"^blob:"))
    expect(page.locator("#job-cancel")).to_be_disabled()
    page.screenshot(path=artifacts / "studio-job.png", full_page=True)


def test_api_errors_are_shown_in_words(
    open_studio: OpenStudio, live_server: LiveServer, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    answer = httpx.post(
        f"{live_server.url}/model/predict", files={"image": ("notes.txt", notes.read_bytes())}
    )
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    page = open_studio(*DESKTOP)

    page.set_input_files("#photo-input", notes)

    error = page.get_by_role("alert").filter(has_text=re.compile(re.escape(detail), re.IGNORECASE))
    expect(error).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#compare")).to_be_hidden()


def test_fits_a_phone_screen(open_studio: OpenStudio, artifacts: Path) -> None:
    page = open_studio(*PHONE)

    stylize_photo(page)

    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE[0], f"horizontal scroll: {page.evaluate(OVERFLOWING, PHONE[0])}"
    page.wait_for_function(THUMBNAILS_SHOWN, timeout=RESULT_TIMEOUT_MS)
    page.screenshot(path=artifacts / "studio-phone.png", full_page=True)


def test_every_control_has_a_label(open_studio: OpenStudio) -> None:
    page = open_studio(*DESKTOP)
    expect(page.locator(".style-tile").first).to_be_visible()

    assert page.evaluate(UNLABELLED_CONTROLS) == []


def test_stylizes_with_a_dropped_painting(open_studio: OpenStudio, live_server: LiveServer) -> None:
    assert accepts_style_image(live_server), "POST /model/predict takes no `style_image`"
    page = open_studio(*DESKTOP)
    page.set_input_files("#photo-input", PHOTO)

    page.set_input_files("#painting-input", PAINTING)

    expect(page.locator("#compare[data-style='@painting']")).to_be_visible(
        timeout=RESULT_TIMEOUT_MS
    )
    result: dict[str, Any] = page.evaluate(COMPARE_PIXELS)
    assert result["meanAbsDiff"] > 20, f"the result looks like the photo: {result}"


def test_saves_a_painting_as_a_named_style(
    open_studio: OpenStudio, live_server: LiveServer
) -> None:
    assert "post" in live_server.openapi_paths().get("/model/styles", {}), (
        "POST /model/styles (save a painting as a style) is missing"
    )
    page = open_studio(*DESKTOP)
    page.set_input_files("#painting-input", PAINTING)

    page.fill("#style-name", "studio-test-painting")
    page.fill("#style-title", "Studio Test Painting")
    page.get_by_role("button", name="Save style").click()

    try:
        expect(page.get_by_role("status").filter(has_text="Saved")).to_be_visible(
            timeout=RESULT_TIMEOUT_MS
        )
        expect(page.get_by_role("radio", name="Studio Test Painting")).to_be_checked()
        expect(page.locator("#studio-error")).to_be_hidden()
    finally:
        httpx.delete(f"{live_server.url}/model/styles/studio-test-painting")


@pytest.mark.skipif(
    not os.environ.get(DOCS_SCREENSHOT_ENV),
    reason=f"set {DOCS_SCREENSHOT_ENV}=1 to refresh {DOCS_SCREENSHOT.relative_to(REPO)}",
)
def test_refresh_docs_screenshot(open_studio: OpenStudio) -> None:
    """Not a check: renders the README's screenshot of the studio with real results."""
    page = open_studio(*DESKTOP)
    stylize_photo(page, "Starry Swirls")
    page.locator("#compare-slider").fill("42")
    run_job(page, DOCS_JOB_PAINTING, iterations=200, size=384)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.mouse.move(0, 0)
    page.wait_for_function(THUMBNAILS_SHOWN, timeout=RESULT_TIMEOUT_MS)
    page.screenshot(path=DOCS_SCREENSHOT, full_page=True)


def accepts_style_image(server: LiveServer) -> bool:
    schemas = httpx.get(f"{server.url}/openapi.json", timeout=10).json()["components"]["schemas"]
    body = server.openapi_paths()["/model/predict"]["post"]["requestBody"]
    reference = body["content"]["multipart/form-data"]["schema"]["$ref"]
    return "style_image" in schemas[reference.rsplit("/", 1)[-1]]["properties"]
