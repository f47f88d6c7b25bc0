"""Every upload path decodes under the one decode budget: when it is full, predictions (photo
and paintings), style registration and job submission answer 503 `busy` with Retry-After at
once, and work again as soon as it has room."""

from __future__ import annotations

from conftest import assert_problem, image_bytes

PHOTO = ("photo.png", image_bytes(40, 30), "image/png")
PAINTING = ("painting.png", image_bytes(64, 64, seed=9), "image/png")


def requests(client):
    return {
        "predict": lambda: client.post(
            "/model/predict?style=crimson-fire&max_size=32", files={"image": PHOTO}
        ),
        "predict with a painting": lambda: client.post(
            "/model/predict?max_size=32", files=[("image", PHOTO), ("style_image", PAINTING)]
        ),
        "register a style": lambda: client.post(
            "/model/styles", files={"image": PAINTING}, data={"name": "budget-test"}
        ),
        "submit a job": lambda: client.post(
            "/jobs",
            files=[("content", PHOTO), ("style", PAINTING)],
            data={"iterations": "2", "size": "24"},
        ),
    }


def test_a_full_decode_budget_answers_503_on_every_upload_path(make_client) -> None:
    with make_client(embedded_worker=False, decode_budget_pixels=10_000) as client:
        budget = client.app.state.service.decode_budget
        with budget.reserve(budget.capacity):
            for name, send in requests(client).items():
                response = send()
                body = assert_problem(response, 503, "busy")
                assert int(response.headers["retry-after"]) > 0, name
                assert "ATELIER_DECODE_BUDGET_PIXELS" in body["detail"], name
        assert budget.in_use == 0
        for name, send in requests(client).items():
            assert send().status_code in (200, 201, 202), name
        assert budget.in_use == 0
