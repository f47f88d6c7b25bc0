"""Schemathesis over the whole OpenAPI schema: no 5xx, and every response is documented.

Bounded (a few examples per operation, no shrinking) so the suite stays fast. The checks are
Schemathesis' own: no server errors, status codes and content types documented, bodies matching
their schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.core.config import Settings
from app.main import create_app
from tests.conftest import make_settings, running

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory, cache_dir) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("fuzz")
    app = create_app(make_settings(root, cache_dir, embedded_worker=False, max_size_limit=256))
    with running(app) as client:
        yield client


def operation_labels() -> list[str]:
    """Every documented operation, read from the schema without starting an app."""
    spec = create_app(Settings(data_dir=Path("data"), warmup=False)).openapi()
    methods = {"get", "post", "put", "patch", "delete"}
    return [
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in methods
    ]


def as_httpx_files(files: list | None) -> list | None:
    """Schemathesis emits `requests`-style multipart parts, which may hold numbers; httpx
    wants text or bytes."""
    if files is None:
        return None
    parts = []
    for name, (filename, value, *rest) in files:
        if not isinstance(value, str | bytes):
            value = str(value).lower() if isinstance(value, bool) else str(value)
        parts.append((name, (filename, value, *rest)))
    return parts


@pytest.mark.parametrize("label", operation_labels())
def test_operation_conforms_to_its_schema(started: TestClient, label: str) -> None:
    # Schemathesis' own ASGI calls would run the app's lifespan (and close it) per request, so
    # requests go through the one running client and Schemathesis only validates responses.
    schema = schemathesis.openapi.from_dict(started.app.openapi())
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        # Schema-valid is not always acceptable here: an upload must also decode as an image,
        # and `style` or `style_name` is required (a cross-field rule OpenAPI cannot express);
        # those answer a documented 4xx, which every other check still validates.
        kwargs = case.as_transport_kwargs(base_url=str(started.base_url))
        kwargs["files"] = as_httpx_files(kwargs.get("files"))
        request = started.build_request(**kwargs)
        request.read()  # buffer multipart bodies: the checks re-read what was sent
        response = started.send(request)
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()
