"""The bf16 rule shared by training and Gatys jobs."""

from __future__ import annotations

import pytest
import torch

from app.core import device as device_module
from app.core.device import uses_bf16

CPU = torch.device("cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_explicit_precision_wins_over_the_cpu(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    monkeypatch.setattr(device_module, "has_fast_bf16", lambda: fast)
    assert uses_bf16("bf16", CPU) is True and uses_bf16("fp32", CPU) is False


def test_auto_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "has_fast_bf16", lambda: True)
    assert uses_bf16("auto", CPU) is True
    monkeypatch.setattr(device_module, "has_fast_bf16", lambda: False)
    assert uses_bf16("auto", CPU) is False
