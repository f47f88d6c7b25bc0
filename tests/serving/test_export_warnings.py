"""A cold start exports the networks to ONNX; the warnings torch prints for that are understood
and silenced at the export call, while any other warning still shows."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from conftest import make_settings

from app.serving.onnx_backend import understood_export_warnings_silenced
from app.serving.service import Service

# What `make run` printed at every cold start before (the list).
COLD_START_NOISE = (
    "legacy TorchScript-based ONNX export",
    "Please remove usage of this function",
    "Constant folding",
    "instance_norm",
)


def test_a_cold_load_prints_none_of_the_export_warnings(tmp_path: Path) -> None:
    cold_cache = tmp_path / "empty-cache"
    cold_cache.mkdir()
    service = Service(make_settings(tmp_path, cold_cache))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        service.load(warmup=False)
    assert any(cold_cache.rglob("*.onnx")), "nothing was exported: not a cold load"
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    noise = [
        line
        for line in shown
        if line.startswith("TracerWarning") or any(text in line for text in COLD_START_NOISE)
    ]
    assert noise == []
    service.close()


EXPORT_SAMPLES = (
    ("Constant folding - Only steps=1 can be constant folded", UserWarning),
    ("a real problem", UserWarning),
    ("Converting a tensor to a Python boolean", torch.jit.TracerWarning),
    ("Converting a tensor to a Python float", torch.jit.TracerWarning),
    ("Converting a tensor to a Python index", torch.jit.TracerWarning),
)


def test_other_warnings_still_show_during_an_export() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with understood_export_warnings_silenced():
            for message, category in EXPORT_SAMPLES:
                warnings.warn(message, category, stacklevel=1)
        with understood_export_warnings_silenced(fixed_size=True):
            for message, category in EXPORT_SAMPLES:
                warnings.warn(message, category, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "a real problem",
        "Converting a tensor to a Python float",  # a dynamic-size export: a real bug
        "Converting a tensor to a Python index",
        "a real problem",
        "Converting a tensor to a Python index",
    ]
