"""A style network cut at its instance norms into segments that run one after another.

Tiled inference needs every instance norm's statistics over the whole image, and those of
layer k depend on the output of every layer before it. Running the network whole per tile
cannot give them without recomputing prefixes; cut at the norms instead, the network becomes
a chain of segments: segment k takes the values alive at cut k (the input of norm k - 1, a
residual branch, ...) plus norm k - 1's mean and variance, and returns the values alive at
cut k + 1. A caller can then run segment k over all tiles, sum what norm k needs, and only
then start segment k + 1: every layer computed once, and each segment's receptive field is a
few pixels, not the network's.

The cut is found by tracing the network's own forward with torch.fx (`moments` in
`app.nets.norm_stats` is a leaf there), so the segments cannot drift from the network.
Each segment also reports the moments that the next norm needs over a band of rows of its
output (the `rows` weight), so the sums run inside whichever backend runs the segment.
Segments take and give float32; a backend that computes in 16 bits may carry the maps handed
between segments in 16 bits too (`Segment.handed_on` says which inputs those are).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from app.nets import norm_stats
from app.nets.norm_stats import NormPlan, norm_plan

# Names of the inputs every segment may take besides live values.
MEAN, VAR, ROWS = "mean", "var", "rows"


@dataclass(frozen=True)
class Value:
    """A tensor passed between segments. `scale` is the input side over its side for maps
    of the image (H/scale x W/scale); 0 for small tensors that are the same for every tile (a
    style's conditioning, say). Segments take and give maps in the network's own layout:
    "nchw", where a band of rows is one contiguous block per channel, or "nhwc" for its final
    pixels. (Channels-last sides cost the backends a transpose per map at every cut.)"""

    name: str
    scale: int
    channels: int
    layout: str = "nchw"

    @property
    def spatial(self) -> bool:
        return self.scale > 0


@dataclass(frozen=True)
class Segment:
    """One piece of the chain. `module(*inputs)` returns a tuple: `outputs` in order, then,
    when `collects` is not None, a (3, C) tensor for that norm layer's input over the rows
    weighted by `rows` (see `band_moments`)."""

    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[Value, ...]
    norm: int | None  # the norm layer whose mean and var this segment applies
    collects: int | None  # the norm layer whose input this segment sums
    collected: str | None  # that input's value name
    collect_scale: int
    reach: int  # input rows (at full resolution) an output row depends on, above or below
    input_shapes: tuple[tuple[int, ...], ...]  # of `inputs` on the sample: for exports
    handed_on: tuple[bool, ...]  # per input: a map another segment made
    whole: bool = False  # a merged run (`merge`): valid on the whole image only, never in bands

    def example(self) -> tuple[torch.Tensor, ...]:
        """Inputs of the right shapes to export this segment with."""
        return tuple(torch.rand(shape) + 0.5 for shape in self.input_shapes)

    @property
    def maps_in(self) -> tuple[str, ...]:
        """Names of the inputs that are maps earlier segments handed on."""
        return tuple(n for n, handed in zip(self.inputs, self.handed_on, strict=True) if handed)

    @property
    def maps_out(self) -> tuple[str, ...]:
        """Names of the outputs that are maps handed to later segments (not the pixels)."""
        return tuple(v.name for v in self.outputs if v.spatial and v.layout == "nchw")


@dataclass(frozen=True)
class SegmentedNetwork:
    segments: tuple[Segment, ...]
    inputs: tuple[Value, ...]  # the network's own inputs: the image, then its conditions
    channels: tuple[int, ...]  # per norm layer

    def maps(self, segment: Segment) -> list[Value]:
        """The maps `segment` reads and writes."""
        values = self.values()
        read = [values[name] for name in segment.inputs if name in values]
        return [v for v in [*read, *segment.outputs] if v.spatial]

    def values(self) -> dict[str, Value]:
        """Every value by name: the network's inputs and every segment's outputs."""
        found = {v.name: v for v in self.inputs}
        found.update((v.name, v) for s in self.segments for v in s.outputs)
        return found


class _ImageOnly(nn.Module):
    """Fixed arity for tracing: torch.fx cannot trace a `*condition` signature."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class _ImageAndCondition(_ImageOnly):
    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(image, condition)


class _SegmentModule(nn.Module):
    """A segment's graph, then (`collect` set) the moments of one of its outputs over the
    rows weighted by the last input."""

    def __init__(self, graph: torch.fx.GraphModule, arity: int, collect: int | None) -> None:
        super().__init__()
        self.graph = graph
        self.arity = arity  # the graph's own inputs; `rows` follows when it collects
        self.collect = collect

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.graph(*inputs[: self.arity])
        if self.collect is None:
            return tuple(outputs)
        return (*outputs, band_moments(outputs[self.collect], inputs[-1]))


def band_moments(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(3, C): a shift m near the band's channel mean, and the sums of (x - m) and (x - m)^2
    over the rows that `rows` weights 1. Any m gives the exact moments (`combine_moments`);
    one near the mean keeps float32 sums of squares from cancelling, and a sparse sample of
    the band finds one without another full pass."""
    shift = x[:, :, ::8, ::8].mean(dim=(0, 2, 3), keepdim=True)
    deviation = x - shift
    weights = rows.view(1, 1, -1)  # applied to row sums: no full-size product
    return torch.stack(
        [
            shift.flatten(),
            (deviation.sum(dim=3) * weights).sum(dim=(0, 2)),
            ((deviation * deviation).sum(dim=3) * weights).sum(dim=(0, 2)),
        ]
    )


class _MergedModule(nn.Module):
    """Consecutive segments as one graph. Each inner norm's statistics are those of the map
    the graph holds, so it computes the network exactly when that map is the whole image."""

    def __init__(self, segments: Sequence[Segment], inputs: tuple[str, ...], outputs: list[str]):
        super().__init__()
        self.parts = nn.ModuleList(s.module for s in segments)
        self.reads = [s.inputs for s in segments]
        self.makes = [[v.name for v in s.outputs] for s in segments]
        self.inputs = inputs
        self.outputs = outputs

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = dict(zip(self.inputs, inputs, strict=True))
        last = len(self.parts) - 1
        moments: tuple[torch.Tensor, ...] = ()
        steps = zip(self.parts, self.reads, self.makes, strict=True)
        for k, (part, reads, makes) in enumerate(steps):
            assert isinstance(part, _SegmentModule)
            if k < last:
                results = part.graph(*(values[name] for name in reads[: part.arity]))
                assert part.collect is not None  # every inner segment ends at a norm
                var, mean = torch.var_mean(results[part.collect], dim=(2, 3), correction=0)
                values[MEAN], values[VAR] = mean, var
            else:
                results = part(*(values[name] for name in reads))
                moments = tuple(results[len(makes) :])  # the closing norm's, if it sums one
                results = results[: len(makes)]
            values.update(zip(makes, results, strict=True))
        return (*(values[name] for name in self.outputs), *moments)


def deepest_run(network: SegmentedNetwork) -> tuple[int, int] | None:
    """The longest run of two or more segments whose maps all lie at the network's coarsest
    scale (a residual stack): the part with the fewest values per image pixel, so the part
    that can run on the whole image at sizes where the full-resolution layers cannot."""
    scales = [[v.scale for v in network.maps(s)] for s in network.segments]
    deepest = max(scale for found in scales for scale in found)
    best: tuple[int, int] | None = None
    start: int | None = None
    for k, found in enumerate([*scales, []]):
        if found and all(scale == deepest for scale in found):
            start = k if start is None else start
            continue
        if start is not None and k - start >= 2 and (best is None or k - start > best[1] - best[0]):
            best = (start, k - 1)
        start = None
    return best


def merge(network: SegmentedNetwork, first: int, last: int) -> Segment:
    """Segments `first`..`last` as one segment that runs on the whole image (`whole`): no
    cut between them, so no maps handed on and one graph to compile, for the memory of their
    maps at the whole image's size."""
    chain = network.segments[first : last + 1]
    later = {name for s in network.segments[last + 1 :] for name in s.inputs}
    final = network.segments[-1].outputs[-1].name
    made: set[str] = set()
    inputs: dict[str, tuple[tuple[int, ...], bool]] = {}
    for k, segment in enumerate(chain):
        for name, shape, handed in zip(
            segment.inputs, segment.input_shapes, segment.handed_on, strict=True
        ):
            inner = name in made or (k > 0 and name in (MEAN, VAR))
            if not inner and (name != ROWS or k == len(chain) - 1):
                inputs.setdefault(name, (shape, handed))
        made.update(v.name for v in segment.outputs)
    outputs = [v for s in chain for v in s.outputs if v.name in later or v.name == final]
    names = tuple(inputs)
    closing = chain[-1]
    return Segment(
        module=_MergedModule(chain, names, [v.name for v in outputs]),
        inputs=names,
        outputs=tuple(outputs),
        norm=chain[0].norm,
        collects=closing.collects,
        collected=closing.collected,
        collect_scale=closing.collect_scale,
        reach=sum(s.reach for s in chain),
        input_shapes=tuple(shape for shape, _ in inputs.values()),
        handed_on=tuple(handed for _, handed in inputs.values()),
        whole=True,
    )


def split_at_norms(module: nn.Module, sample: Sequence[torch.Tensor]) -> SegmentedNetwork:
    """Cut `module` (called as module(image, *conditions)) at every instance norm.

    `sample` is an example input (image first, square, sides a multiple of 4 and at least 64)
    used to learn each value's shape and each segment's reach (around its middle row).
    """
    if len(sample) not in (1, 2):
        raise ValueError("networks take an image and at most one condition")
    positional = _ImageOnly(module) if len(sample) == 1 else _ImageAndCondition(module)
    with norm_plan(NormPlan()):
        traced = torch.fx.symbolic_trace(positional)
    nodes = list(traced.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder" and n.users]
    part: dict[torch.fx.Node, int] = {}
    cuts: list[torch.fx.Node] = []
    for node in nodes:
        if node.op == "call_function" and node.target is norm_stats.moments:
            cuts.append(node)
        part[node] = len(cuts)
    output = next(n for n in nodes if n.op == "output")
    last_use: dict[torch.fx.Node, int] = {}
    for node in nodes:
        for used in node.all_input_nodes:
            last_use[used] = max(last_use.get(used, 0), part[node])
    graphs = [_segment_graph(traced, nodes, part, cuts, last_use, k) for k in range(len(cuts) + 1)]
    shapes = _probe(graphs, [n.name for n in placeholders], sample, cuts)
    side = sample[0].shape[2]
    norm_inputs = [c.args[0].name for c in cuts]  # type: ignore[union-attr]
    given = frozenset(n.name for n in placeholders)
    probed = _Probed(shapes, side, _output_name(output), given)
    segments = tuple(
        _segment(k, graph, inputs, outputs, norm_inputs, probed)
        for k, (graph, inputs, outputs) in enumerate(graphs)
    )
    inputs = tuple(_value(n.name, shapes[n.name], side, nhwc=False) for n in placeholders)
    channels = tuple(int(shapes[name][1]) for name in norm_inputs)
    return SegmentedNetwork(segments, inputs, channels)


@dataclass(frozen=True)
class _Probed:
    """The network as probed on the sample: what every segment is described with."""

    shapes: dict[str, torch.Size]  # of every value on the sample
    side: int  # the sample's
    final: str  # the value the network returns
    given: frozenset[str]  # the network's own inputs


def _segment(
    k: int,
    graph: torch.fx.GraphModule,
    inputs: list[str],
    outputs: list[str],
    norm_inputs: list[str],
    network: _Probed,
) -> Segment:
    """Segment k described: its values, the norm input it sums (norm k's, unless it is the
    last segment), its reach, and its graph with the moments it reports."""
    shapes, side, final = network.shapes, network.side, network.final
    values = tuple(_value(name, shapes[name], side, nhwc=name == final) for name in outputs)
    collects = k if k < len(norm_inputs) else None
    index = outputs.index(norm_inputs[k]) if collects is not None else None
    collect_scale = values[index].scale if index is not None else 0
    applied = int(shapes[norm_inputs[k - 1]][1]) if k > 0 else 0
    input_shapes = [(1, applied) if name in (MEAN, VAR) else tuple(shapes[name]) for name in inputs]
    handed_on = tuple(
        name not in (MEAN, VAR) and name not in network.given and _is_map(shapes[name])
        for name in inputs
    )
    module = _SegmentModule(graph, len(inputs), index)
    if collects is not None:
        input_shapes.append((side // collect_scale,))
        handed_on = (*handed_on, False)
    return Segment(
        module=module,
        inputs=tuple(inputs) + ((ROWS,) if collects is not None else ()),
        outputs=values,
        norm=k - 1 if k > 0 else None,
        collects=collects,
        collected=norm_inputs[k] if collects is not None else None,
        collect_scale=collect_scale,
        reach=_reach(graph, inputs, values, shapes, side),
        input_shapes=tuple(input_shapes),
        handed_on=handed_on,
    )


def _output_name(output: torch.fx.Node) -> str:
    result = output.args[0]
    assert isinstance(result, torch.fx.Node), "the network returns one tensor"
    return result.name


def _segment_graph(
    traced: torch.fx.GraphModule,
    nodes: list[torch.fx.Node],
    part: dict[torch.fx.Node, int],
    cuts: list[torch.fx.Node],
    last_use: dict[torch.fx.Node, int],
    k: int,
) -> tuple[torch.fx.GraphModule, list[str], list[str]]:
    """Segment k's own graph: its nodes, with values made outside as inputs and the values
    later segments (or the network's output) use as outputs. The norm call opening the
    segment becomes the `mean` and `var` inputs."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    inputs: list[str] = []

    def outside(node: torch.fx.Node) -> torch.fx.Node:
        if node not in env:
            if node.op == "get_attr":
                env[node] = graph.node_copy(node)
            else:
                env[node] = graph.placeholder(node.name)
                inputs.append(node.name)
        return env[node]

    own = [n for n in nodes if part[n] == k and n.op not in ("placeholder", "output")]
    opening = cuts[k - 1] if k > 0 else None
    for node in own:
        if node is opening:
            mean, var = graph.placeholder(MEAN), graph.placeholder(VAR)
            inputs += [MEAN, VAR]
            env[node] = graph.call_function(_pair, (mean, var))
            continue
        if node.op == "get_attr":
            env[node] = graph.node_copy(node)
            continue
        for used in node.all_input_nodes:
            if part[used] != k or used.op == "placeholder":
                outside(used)
        env[node] = graph.node_copy(node, lambda n: env[n])
    final = next(n for n in nodes if n.op == "output")
    result = [
        n
        for n in own
        if n.op != "get_attr" and (last_use.get(n, 0) > k or n in final.all_input_nodes)
    ]
    graph.output(tuple(env[n] for n in result))
    return torch.fx.GraphModule(traced, graph), inputs, [n.name for n in result]


def _pair(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What `moments` returns, from the segment's inputs; (1, C) in, (1, C, 1, 1) out."""
    return mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)


def _probe(
    graphs: list[tuple[torch.fx.GraphModule, list[str], list[str]]],
    placeholders: list[str],
    sample: Sequence[torch.Tensor],
    cuts: list[torch.fx.Node],
) -> dict[str, torch.Size]:
    """Run the chain once on `sample` (each norm with the tensor's own statistics) and note
    every value's shape."""
    values: dict[str, torch.Tensor] = dict(zip(placeholders, sample, strict=False))
    with torch.no_grad():
        for k, (graph, inputs, outputs) in enumerate(graphs):
            if k > 0:
                source = values[cuts[k - 1].args[0].name]  # type: ignore[union-attr]
                var, mean = torch.var_mean(source, dim=(2, 3), correction=0)
                values[MEAN], values[VAR] = mean, var
            results = graph(*(values[name] for name in inputs))
            values.update(zip(outputs, results, strict=True))
    return {name: tensor.shape for name, tensor in values.items() if name not in (MEAN, VAR)}


def _reach(
    graph: torch.fx.GraphModule,
    inputs: list[str],
    outputs: tuple[Value, ...],
    shapes: dict[str, torch.Size],
    side: int,
) -> int:
    """How far (in full-resolution rows) a segment's outputs reach into its inputs: change
    every spatial input below the middle row, and again above it, and see which output rows
    move. Measured on the segment itself, so a tile's margin never has to be guessed."""
    generator = torch.Generator().manual_seed(0)
    base = {name: _random(shapes.get(name), name, generator) for name in inputs}
    middle = side // 2
    reach = 0
    with torch.no_grad():
        reference = graph(*base.values())
        for below in (True, False):
            changed = dict(base)
            for name in inputs:
                shape = shapes.get(name)
                if shape is None or len(shape) != 4 or shape[2] <= 1:
                    continue
                step = side // int(shape[2])
                cut = middle // step
                tensor = base[name].clone()
                rows = slice(cut, None) if below else slice(None, cut)
                tensor[:, :, rows] += torch.rand(tensor[:, :, rows].shape, generator=generator)
                changed[name] = tensor
            result = graph(*changed.values())
            for value, before, after in zip(outputs, reference, result, strict=True):
                if not value.spatial:
                    continue
                axis = 1 if value.layout == "nhwc" else 2
                moved = (before != after).flatten(0, axis - 1).transpose(0, 1).flatten(1).any(1)
                rows_moved = torch.nonzero(moved).flatten() * value.scale
                if len(rows_moved):
                    edge = rows_moved.min() if below else rows_moved.max() + value.scale - 1
                    reach = max(reach, int(abs(middle - edge)) + 1)
    return reach


def _random(shape: torch.Size | None, name: str, generator: torch.Generator) -> torch.Tensor:
    if name in (MEAN, VAR):
        return torch.rand(1, 1, generator=generator) + 0.5
    assert shape is not None
    return torch.rand(shape, generator=generator) * 2.0


def _is_map(shape: torch.Size) -> bool:
    return len(shape) == 4 and shape[2] > 1


def _value(name: str, shape: torch.Size, side: int, *, nhwc: bool) -> Value:
    if nhwc:
        return Value(name, side // int(shape[1]), int(shape[3]), "nhwc")
    if _is_map(shape):
        return Value(name, side // int(shape[2]), int(shape[1]))
    return Value(name, 0, int(shape[-1]) if len(shape) else 1)
