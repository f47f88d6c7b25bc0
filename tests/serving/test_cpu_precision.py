"""The CPU precision choice: bf16 only where the CPU is fast at it, fp32 everywhere else."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
from conftest import make_settings

from app.core import cpu_features
from app.serving.cpu_precision import choose_cpu_precision
from app.serving.service import Service
from app.serving.tiling import DEFAULT_TILE_SIZE

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma", "avx512f"})
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}


@pytest.mark.parametrize("requested", ["auto", "bf16"])
def test_fast_bf16_cpus_get_bf16(requested: str) -> None:
    assert choose_cpu_precision(requested, SAPPHIRE_RAPIDS) == "bf16"
    assert choose_cpu_precision(requested, AVX2_ONLY | {"avx512_bf16"}) == "bf16"


def test_without_the_flags_auto_falls_back_to_fp32(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert choose_cpu_precision("auto", AVX2_ONLY) == "fp32"
        assert choose_cpu_precision("auto", frozenset()) == "fp32"  # no /proc/cpuinfo
    assert caplog.records == []  # the normal case on older CPUs: nothing to warn about


def test_bf16_asked_on_a_cpu_without_it_warns_and_runs_fp32(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert choose_cpu_precision("bf16", AVX2_ONLY | {"avx512_vnni"}) == "fp32"
    assert "no fast bf16" in caplog.text


def test_fp32_is_kept_even_where_bf16_is_fast() -> None:
    assert choose_cpu_precision("fp32", SAPPHIRE_RAPIDS) == "fp32"


def test_missing_openvino_falls_back_to_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name)
    )
    assert choose_cpu_precision("auto", SAPPHIRE_RAPIDS) == "fp32"


def test_the_service_runs_fp32_onnxruntime_when_the_flags_are_absent(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: AVX2_ONLY)
    service = Service(make_settings(tmp_path, cache_dir))  # cpu_precision defaults to auto
    service.load(warmup=False)
    assert service.runner is not None
    assert service.runner.cpu_precision == "fp32"
    assert service.runner.backend_name == "onnxruntime"
    assert service.runner.tiles.tile_size == DEFAULT_TILE_SIZE["fp32"]
    service.close()


def test_the_service_picks_bf16_where_the_flags_say_so(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    service = Service(make_settings(tmp_path, cache_dir))
    service.load(warmup=False)
    assert service.runner is not None
    assert service.runner.backend_name == "openvino-bf16"
    assert service.runner.tiles.tile_size == DEFAULT_TILE_SIZE["bf16"]
    service.close()


def test_fp32_backends_run_half_the_pixels_whole_and_in_bands() -> None:
    """fp32 activations take twice the bytes of bf16 ones: the same working memory holds half
    as many pixels."""
    bf16, fp32 = DEFAULT_TILE_SIZE["bf16"] ** 2, DEFAULT_TILE_SIZE["fp32"] ** 2
    assert abs(2 * fp32 - bf16) <= 0.01 * bf16
    assert all(side % 4 == 0 for side in DEFAULT_TILE_SIZE.values())


def test_an_explicit_tile_size_is_kept_on_every_precision(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: AVX2_ONLY)
    service = Service(make_settings(tmp_path, cache_dir, tile_size=1024))
    service.load(warmup=False)
    assert service.runner is not None
    assert service.runner.tiles.tile_size == 1024
    service.close()
