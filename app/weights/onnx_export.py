"""The one ONNX export of our torch modules, for the serving cache and for weight downloads.

torch.onnx.export keeps global state: two exports at once (two apps loading in one process, or a
weights download racing a first-use export) corrupt each other, so every export holds one lock.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

OPSET = 17
# Input or output name -> {axis: symbolic name}, as torch.onnx.export takes them.
DynamicAxes = dict[str, dict[int, str]]
_EXPORT_LOCK = threading.Lock()

# What every cold export prints, each understood: (category, message regex, why it is harmless).
UNDERSTOOD_EXPORT_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # Deliberate: the TorchScript exporter (dynamo=False) handles our dynamic-size graphs.
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    # Raised by torch's own legacy exporter internals, not by our call.
    (DeprecationWarning, r"The feature will be removed\. Please remove usage of this function"),
    # Reflection padding's reversed slices (step -1) stay Slice ops: correct, only not folded.
    (UserWarning, r"Constant folding - Only steps=1 can be constant folded"),
    # Instance norm always normalises with the input's own statistics, as the nets were trained.
    (UserWarning, r"ONNX export mode is set to TrainingMode\.EVAL, but operator 'instance_norm'"),
    # A shape check (the transformer's minimum side) traced once; the runner checks sizes first.
    (torch.jit.TracerWarning, r"Converting a tensor to a Python boolean"),
)
# Only for fixed-size exports (the style predictor, always 256x256): TF "SAME" paddings computed
# from the traced shape are exact there. With dynamic sizes this warning would be a real bug.
FIXED_SIZE_EXPORT_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (torch.jit.TracerWarning, r"Converting a tensor to a Python float"),
)


@contextlib.contextmanager
def understood_export_warnings_silenced(*, fixed_size: bool = False) -> Iterator[None]:
    """Hide exactly the warnings above during an export; anything else still shows."""
    understood = UNDERSTOOD_EXPORT_WARNINGS + (FIXED_SIZE_EXPORT_WARNINGS if fixed_size else ())
    with warnings.catch_warnings():
        for category, message in understood:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def export_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    destination: Path | BinaryIO,
    *,
    input_names: list[str],
    dynamic_axes: DynamicAxes | None,
    output_names: list[str] | None = None,
) -> None:
    """Export `module` under the export lock; no dynamic axes means a fixed-size graph.
    One output, named "output", unless `output_names` names several."""
    with _EXPORT_LOCK, understood_export_warnings_silenced(fixed_size=dynamic_axes is None):
        torch.onnx.export(
            module,
            example,
            destination if not isinstance(destination, Path) else str(destination),
            input_names=input_names,
            output_names=output_names or ["output"],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
