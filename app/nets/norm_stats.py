"""Instance-norm statistics as data, so a network can run on tiles of an image as if whole.

Instance norm normalises every channel with the mean and variance of the whole feature map. A
tile normalised with its own statistics differs from the same region of the whole image, which
is what makes naive tiles show seams. Under a `NormPlan` every instance norm of a network (each
net routes its norms through `normalize` / `moments` here) takes its statistics from the plan
instead, in call order:

- `record`: use the feature map's own statistics, as usual, and hand them out (a whole image,
  or a downscaled copy of it, gives the statistics the tiles then run with);
- `inject`: use given per-layer mean and variance (the tiles of the final render);
- `collect_all` with `rows`/`cols` weights: inject the given statistics into every layer and
  sum every layer's input over the tile's own region, in one whole pass. A pass over all tiles
  gives statistics one step closer to the whole image's than the injected ones (the layers'
  inputs were normalised with the injected, not yet exact, statistics of the layers before):
  the fixed-point refinement that `bench/tile_refine_convergence.py` measures (it diverges,
  docs/print-size.md: kept for that measurement, not used in serving).

Without an active plan nothing changes: the nets export and run exactly as before.

`moments` is also a leaf for torch.fx, which is how `app.nets.segments` finds where to cut a
network for exact tiled inference.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

_PLAN: contextvars.ContextVar[NormPlan | None] = contextvars.ContextVar("norm_plan", default=None)


@dataclass
class NormPlan:
    """What the instance norms of one forward pass do; see the module docstring."""

    mean: torch.Tensor | None = None  # flat, every layer's channels in call order
    var: torch.Tensor | None = None
    rows: torch.Tensor | None = None  # (H,) 0/1 weight of each input row in the sums
    cols: torch.Tensor | None = None  # (W,)
    scales: tuple[int, ...] = ()  # input side / feature side of each norm layer
    collect_all: bool = False  # with rows/cols: sum every layer, injecting as it goes
    recorded_mean: list[torch.Tensor] = field(default_factory=list)
    recorded_var: list[torch.Tensor] = field(default_factory=list)
    shifts: list[torch.Tensor] = field(default_factory=list)
    sums: list[torch.Tensor] = field(default_factory=list)
    squares: list[torch.Tensor] = field(default_factory=list)
    shapes: list[tuple[int, int, int]] = field(default_factory=list)  # (channels, h, w)
    _offset: int = 0
    _layer: int = 0

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, biased variance), each (N, C, 1, 1), for the next norm layer given its input."""
        channels = x.shape[1]
        if not torch.jit.is_tracing():  # the layout is probed eagerly; traced sizes are symbolic
            self.shapes.append((int(channels), int(x.shape[2]), int(x.shape[3])))
        if self.mean is None or self.var is None:
            var, mean = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
            self.recorded_mean.append(mean.flatten())
            self.recorded_var.append(var.flatten())
        else:
            if self.collect_all:
                self._accumulate(x)
            start, stop = self._offset, self._offset + channels
            mean = self.mean[start:stop].view(1, -1, 1, 1)
            var = self.var[start:stop].view(1, -1, 1, 1)
        self._offset += channels
        self._layer += 1
        return mean, var

    def _accumulate(self, x: torch.Tensor) -> None:
        """Sums of (x - m) and its square over the weighted rows and columns, with m the
        tile's own channel mean: shifting keeps float32 sums of squares from cancelling."""
        assert self.rows is not None and self.cols is not None
        step = self.scales[self._layer]
        rows = self.rows[::step].view(1, 1, -1, 1)
        cols = self.cols[::step].view(1, 1, 1, -1)
        shift = x.mean(dim=(0, 2, 3), keepdim=True)
        deviation = (x - shift) * rows * cols
        self.shifts.append(shift.flatten())
        self.sums.append(deviation.sum(dim=(0, 2, 3)))
        self.squares.append((deviation * deviation).sum(dim=(0, 2, 3)))


def active_plan() -> NormPlan | None:
    return _PLAN.get()


@contextmanager
def norm_plan(plan: NormPlan) -> Iterator[NormPlan]:
    """Every instance norm run inside this block (this thread or task) follows `plan`."""
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased variance) over H and W: the feature map's own, or the active plan's."""
    plan = _PLAN.get()
    if plan is None:
        var, mean = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
        return mean, var
    return plan.moments(x)


# A leaf when torch.fx traces a network: `app.serving.segments` cuts the graph at these calls.
torch.fx.wrap("moments")


def normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Affine-free instance norm; without a plan exactly `F.instance_norm` (one fused op)."""
    plan = _PLAN.get()
    if plan is None:
        return F.instance_norm(x, eps=eps)
    mean, var = moments(x)
    return (x - mean) * torch.rsqrt(var + eps)


class PlannedInstanceNorm2d(nn.InstanceNorm2d):
    """`nn.InstanceNorm2d` (same parameters, same state-dict keys) that follows a plan."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _PLAN.get() is None:
            return super().forward(x)
        y = normalize(x, self.eps)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


@dataclass(frozen=True)
class NormLayout:
    """Channels and scale (input side / feature side) of a network's norm layers, in order."""

    channels: tuple[int, ...]
    scales: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.channels)


def probe_layout(run: Callable[[torch.Tensor], object], side: int = 32) -> NormLayout:
    """Run `run` once on a side x side input and read off its norm layers' layout."""
    with torch.no_grad(), norm_plan(NormPlan()) as plan:
        run(torch.rand(1, 3, side, side))
    return NormLayout(
        channels=tuple(c for c, _, _ in plan.shapes),
        scales=tuple(side // h for _, h, _ in plan.shapes),
    )


class RecordStats(nn.Module):
    """Exportable: image (and conditions) in; (2, channels): own flat per-layer mean, var out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.export_name = f"{getattr(net, 'export_name', type(net).__name__)}-RecordStats"

    def forward(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        with norm_plan(NormPlan()) as plan:
            self.net(x, *condition)
        return torch.stack([torch.cat(plan.recorded_mean), torch.cat(plan.recorded_var)])


class InjectStats(nn.Module):
    """Exportable: image, conditions, flat mean and var in; the network's output out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.export_name = f"{getattr(net, 'export_name', type(net).__name__)}-InjectStats"

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        *condition, mean, var = inputs
        with norm_plan(NormPlan(mean=mean, var=var)):
            return self.net(x, *condition)


class CollectAllStats(nn.Module):
    """Exportable: image, conditions, flat mean and var of every layer, row and column weights
    in; (3, channels of all layers) out: per layer, the tile's channel mean m and the sums of
    (x - m) and (x - m)^2 over the weighted region of the layer's input, with the given
    statistics injected into every layer. One whole pass: the refinement step that
    bench/tile_refine_convergence.py measures.
    """

    def __init__(self, net: nn.Module, layout: NormLayout) -> None:
        super().__init__()
        self.net = net
        self.scales = layout.scales
        name = getattr(net, "export_name", type(net).__name__)
        self.export_name = f"{name}-CollectAllStats"

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """Inputs: conditions, then mean, var, rows, cols."""
        *condition, mean, var, rows, cols = inputs
        plan = NormPlan(
            mean=mean, var=var, rows=rows, cols=cols, scales=self.scales, collect_all=True
        )
        with norm_plan(plan):
            self.net(x, *condition)
        return torch.stack([torch.cat(plan.shifts), torch.cat(plan.sums), torch.cat(plan.squares)])
