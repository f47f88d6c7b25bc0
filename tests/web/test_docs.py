"""Swagger UI at /docs works with no internet: every request to anything but the service is
blocked, and the page still lists the operations and runs "Try it out" on a prediction."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from web.conftest import LiveServer, require_browser

require_browser()

from playwright.sync_api import Browser, Page, Route, expect  # noqa: E402 (after the skip)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "swagger-samples" / "chelsea.jpg"
PREDICT_BLOCK = "#operations-model-predict_model_predict_post"
RESPONSE_TIMEOUT_MS = 60_000


def offline_page(browser: Browser, server: LiveServer, blocked: list[str]) -> Page:
    """A page whose every request to a host other than the live server is aborted (and
    recorded in `blocked`)."""
    local = urlsplit(server.url).netloc
    context = browser.new_context(viewport={"width": 1280, "height": 1000})

    def only_local(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == local or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    context.route("**/*", only_local)
    return context.new_page()


def test_swagger_ui_works_offline(browser: Browser, live_server: LiveServer) -> None:
    blocked: list[str] = []
    page = offline_page(browser, live_server, blocked)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    operations = sum(
        1
        for item in live_server.openapi_paths().values()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    )
    page.goto(live_server.url + "/docs")

    expect(page.locator(".opblock")).to_have_count(operations)
    block = page.locator(PREDICT_BLOCK)
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    block.locator("input[type=file]").first.set_input_files(SAMPLE)
    block.get_by_role("button", name="Execute").click()

    status = block.locator(".live-responses-table .response .response-col_status")
    expect(status).to_have_text("200", timeout=RESPONSE_TIMEOUT_MS)
    image = block.locator(".live-responses-table img")
    expect(image).to_be_visible()
    width = image.evaluate("(img) => img.decode().then(() => img.naturalWidth)")
    assert width == 451, f"the response image is {width} px wide, the sample 451"
    assert blocked == [], f"the docs page asked for external resources: {blocked}"
    assert script_errors == []
    page.context.close()
