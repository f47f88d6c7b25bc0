"""End-to-end behaviour of the Gatys optimiser on small real images (CPU, EfficientNet-Lite0)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.gatys import Backbone, Cancelled, GatysOptions, Progress, load_backbone, optimize, run
from app.gatys.optimize import OptimizerName
from app.perceptual.backbones import VGG16Backbone

CPU = torch.device("cpu")
SIZE = 96


def load_small(path: Path, size: int = SIZE) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        return np.array(image)


def mean_colour(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, 3).astype(np.float64).mean(axis=0)


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(mean_colour(a) - mean_colour(b)))


def chroma(image: np.ndarray) -> np.ndarray:
    """Cb and Cr planes by Pillow's converter (independent of the code under test)."""
    return np.array(Image.fromarray(image).convert("YCbCr"))[..., 1:].astype(np.float64)


def luma(image: np.ndarray) -> np.ndarray:
    return np.array(Image.fromarray(image).convert("YCbCr"))[..., 0].astype(np.float64)


class Recorder:
    """Collects callbacks and can ask for cancellation after a number of evaluations."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.cancel_after = cancel_after
        self.progress: list[Progress] = []
        self.previews: list[np.ndarray] = []

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)

    def on_preview(self, image: np.ndarray) -> None:
        self.previews.append(image)

    def should_cancel(self) -> bool:
        return self.cancel_after is not None and len(self.progress) >= self.cancel_after


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    return load_backbone("efficientnet-lite0", tmp_path_factory.mktemp("no-vgg"), CPU)


@pytest.fixture(scope="module")
def content(shared_images: Path) -> np.ndarray:
    return load_small(shared_images / "photos" / "tubingen.jpg")


@pytest.fixture(scope="module")
def style(shared_images: Path) -> np.ndarray:
    return load_small(shared_images / "paintings" / "starry_night.jpg")


@pytest.fixture(scope="module")
def second_style(shared_images: Path) -> np.ndarray:
    return load_small(shared_images / "paintings" / "candy.jpg")


@pytest.fixture(scope="module")
def default_run(
    backbone: Backbone, content: np.ndarray, style: np.ndarray
) -> tuple[np.ndarray, Recorder]:
    """One 30-evaluation L-BFGS run shared by the tests that only inspect its outcome."""
    recorder = Recorder()
    options = GatysOptions(iterations=30, size=SIZE, preview_every=10)
    output = run(
        content,
        [style],
        options,
        backbone,
        on_progress=recorder.on_progress,
        on_preview=recorder.on_preview,
    )
    return output, recorder


def total(progress: Progress) -> float:
    return progress.content_loss + progress.style_loss + progress.tv_loss


def test_output_is_uint8_with_content_aspect(
    default_run: tuple[np.ndarray, Recorder], content: np.ndarray
) -> None:
    output, _ = default_run
    assert output.dtype == np.uint8
    assert max(output.shape[:2]) == SIZE
    assert output.shape[2] == 3
    content_aspect = content.shape[1] / content.shape[0]
    assert output.shape[1] / output.shape[0] == pytest.approx(content_aspect, rel=0.03)


def test_total_loss_falls_by_more_than_half(default_run: tuple[np.ndarray, Recorder]) -> None:
    _, recorder = default_run
    assert total(recorder.progress[-1]) < 0.5 * total(recorder.progress[0])


def test_colours_move_toward_the_style(
    default_run: tuple[np.ndarray, Recorder], content: np.ndarray, style: np.ndarray
) -> None:
    output, _ = default_run
    assert colour_distance(output, style) < 0.7 * colour_distance(content, style)


def test_progress_counts_every_evaluation_and_estimates_time(
    default_run: tuple[np.ndarray, Recorder],
) -> None:
    _, recorder = default_run
    progress = recorder.progress
    assert [p.iteration for p in progress] == list(range(1, 31))
    assert {p.total for p in progress} == {30}
    assert {p.scale for p in progress} == {SIZE}
    assert progress[0].eta_s is None  # the first evaluation includes warm-up
    etas = [p.eta_s for p in progress[1:]]
    assert all(eta is not None and eta >= 0 for eta in etas)
    assert progress[-1].eta_s == 0.0
    elapsed = [p.elapsed_s for p in progress]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0


class SteppingClock:
    """Stands in for the `time` module: each reading is one second after the previous one."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_eta_extrapolates_the_rate_after_warm_up(
    backbone: Backbone, content: np.ndarray, style: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SteppingClock()
    monkeypatch.setattr(optimize, "time", clock)
    recorder = Recorder()
    run(
        content,
        [style],
        GatysOptions(iterations=6, size=32),
        backbone,
        on_progress=recorder.on_progress,
    )
    # Start is read at t0 and every evaluation reads the clock once: evaluation k at t0 + k.
    assert [p.elapsed_s for p in recorder.progress] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # One second per evaluation after the first, so the estimate is the evaluations left.
    assert [p.eta_s for p in recorder.progress] == [None, 4.0, 3.0, 2.0, 1.0, 0.0]


def test_previews_arrive_every_n_evaluations(default_run: tuple[np.ndarray, Recorder]) -> None:
    output, recorder = default_run
    assert len(recorder.previews) == 3
    assert all(p.dtype == np.uint8 and p.shape == output.shape for p in recorder.previews)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
@pytest.mark.parametrize("iterations", [1, 2, 7])
def test_evaluation_budget_is_exact(
    backbone: Backbone,
    content: np.ndarray,
    style: np.ndarray,
    optimizer: OptimizerName,
    iterations: int,
) -> None:
    recorder = Recorder()
    options = GatysOptions(iterations=iterations, size=32, optimizer=optimizer)
    run(content, [style], options, backbone, on_progress=recorder.on_progress)
    assert len(recorder.progress) == iterations


def test_adam_also_lowers_the_loss(
    backbone: Backbone, content: np.ndarray, style: np.ndarray
) -> None:
    recorder = Recorder()
    options = GatysOptions(iterations=20, size=64, optimizer="adam")
    run(content, [style], options, backbone, on_progress=recorder.on_progress)
    assert total(recorder.progress[-1]) < 0.8 * total(recorder.progress[0])


def test_seeded_runs_reproduce_bit_exactly(
    backbone: Backbone, content: np.ndarray, style: np.ndarray
) -> None:
    def once(seed: int) -> np.ndarray:
        options = GatysOptions(iterations=8, size=64, init="noise", seed=seed)
        return run(content, [style], options, backbone)

    first, second = once(7), once(7)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, once(8))  # the seed really drives the noise


@pytest.mark.parametrize("cancel_after", [0, 1, 4])
def test_cancellation_stops_within_one_evaluation(
    backbone: Backbone, content: np.ndarray, style: np.ndarray, cancel_after: int
) -> None:
    recorder = Recorder(cancel_after=cancel_after)
    with pytest.raises(Cancelled):
        run(
            content,
            [style],
            GatysOptions(iterations=20, size=48),
            backbone,
            on_progress=recorder.on_progress,
            should_cancel=recorder.should_cancel,
        )
    assert len(recorder.progress) == cancel_after


def test_multi_scale_runs_coarse_to_fine_within_the_budget(
    backbone: Backbone, content: np.ndarray, style: np.ndarray
) -> None:
    recorder = Recorder()
    options = GatysOptions(iterations=11, scales=(32, 64))
    output = run(content, [style], options, backbone, on_progress=recorder.on_progress)
    assert [p.scale for p in recorder.progress] == [32] * 6 + [64] * 5
    assert [p.iteration for p in recorder.progress] == list(range(1, 12))
    assert max(output.shape[:2]) == 64


def test_luminance_transfer_keeps_the_content_chroma(
    backbone: Backbone, content: np.ndarray, style: np.ndarray
) -> None:
    options = GatysOptions(iterations=20, size=SIZE, preserve_color="luminance")
    output = run(content, [style], options, backbone)
    assert output.shape == content.shape  # content is already SIZE on its long side
    to_content = np.abs(chroma(output) - chroma(content)).mean()
    style_mean_chroma = chroma(style).reshape(-1, 2).mean(axis=0)
    to_style = np.abs(chroma(output) - style_mean_chroma).mean()
    content_to_style = np.abs(chroma(content) - style_mean_chroma).mean()
    assert to_content < 2.0  # rounding and gamut clipping only
    assert to_style > 0.8 * content_to_style
    assert np.abs(luma(output) - luma(content)).mean() > 2.0  # but it was stylised


def test_histogram_matching_keeps_colours_nearer_the_content(
    backbone: Backbone,
    content: np.ndarray,
    style: np.ndarray,
    default_run: tuple[np.ndarray, Recorder],
) -> None:
    plain, _ = default_run
    options = GatysOptions(iterations=30, size=SIZE, preserve_color="histogram")
    matched = run(content, [style], options, backbone)
    assert colour_distance(matched, content) < 0.5 * colour_distance(plain, content)


def test_style_blend_weights_are_normalised_and_zero_weights_ignored(
    backbone: Backbone, content: np.ndarray, style: np.ndarray, second_style: np.ndarray
) -> None:
    def stylise(styles: list[np.ndarray], blend: tuple[float, ...] | None) -> np.ndarray:
        options = GatysOptions(iterations=5, size=48, style_blend=blend)
        return run(content, styles, options, backbone)

    alone = stylise([style], None)
    assert np.array_equal(stylise([style, second_style], (2.0, 0.0)), alone)
    assert not np.array_equal(stylise([style, second_style], (1.0, 1.0)), alone)


def test_style_init_and_style_scale_run(
    backbone: Backbone, content: np.ndarray, style: np.ndarray
) -> None:
    options = GatysOptions(iterations=3, size=48, init="style", style_scale=0.5)
    output = run(content, [style], options, backbone)
    assert max(output.shape[:2]) == 48


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"iterations": 0}, "iterations"),
        ({"size": 8}, "size"),
        ({"content_weight": -1.0}, "content_weight"),
        ({"style_weight": float("nan")}, "style_weight"),
        ({"tv_weight": -0.1}, "tv_weight"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"init": "zeros"}, "init"),
        ({"preserve_color": "sepia"}, "preserve_color"),
        ({"seed": -1}, "seed"),
        ({"style_scale": 0.0}, "style_scale"),
        ({"style_blend": (0.0, 0.0)}, "style_blend"),
        ({"style_blend": (1.0, -1.0)}, "style_blend"),
        ({"scales": (128, 64)}, "increasing"),
        ({"scales": (8, 64)}, "scale"),
        ({"scales": (32, 64, 128), "iterations": 2}, "number of scales"),
        ({"preview_every": -1}, "preview_every"),
    ],
)
def test_invalid_options_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatysOptions(**overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make_call", "message"),
    [
        (lambda c, s: (c, [], GatysOptions()), "style"),
        (lambda c, s: (c, [s], GatysOptions(style_blend=(1.0, 1.0))), "style_blend"),
        (lambda c, s: (c.astype(np.float32), [s], GatysOptions()), "uint8"),
        (lambda c, s: (c[..., 0], [s], GatysOptions()), "HxWx3"),
        (lambda c, s: (c, [s[..., :2]], GatysOptions()), "HxWx3"),
    ],
)
def test_invalid_inputs_are_rejected(
    backbone: Backbone,
    content: np.ndarray,
    style: np.ndarray,
    make_call: Callable[[np.ndarray, np.ndarray], tuple],
    message: str,
) -> None:
    image, styles, options = make_call(content, style)
    with pytest.raises(ValueError, match=message):
        run(image, styles, options, backbone)


def test_device_must_match_the_backbone(
    backbone: Backbone, content: np.ndarray, style: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="backbone lives on"):
        run(content, [style], GatysOptions(), backbone, device=torch.device("meta"))


@pytest.mark.parametrize("name", ["vgg16", "efficientnet-lite0"])
def test_weights_left_unset_take_the_backbones_defaults(name: str, tmp_path: Path) -> None:
    """The first evaluation starts from the photo, so its content term is 0 and its TV term is
    the backbone's default TV weight times the photo's TV, computed here in numpy."""
    backbone = load_backbone(name, tmp_path, CPU, cache_dir=tmp_path / "cache")
    rng = np.random.default_rng(7)
    photo = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    style = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    seen: list[Progress] = []
    run(photo, [style], GatysOptions(iterations=1, size=32), backbone, on_progress=seen.append)
    pixels = photo.astype(np.float64) / 255.0
    dx, dy = np.diff(pixels, axis=1), np.diff(pixels, axis=0)
    tv = ((dx**2).sum() + (dy**2).sum()) / (dx.size + dy.size)
    assert seen[0].content_loss == 0.0
    assert seen[0].tv_loss == pytest.approx(backbone.default_weights.tv * tv, rel=1e-4)
    explicit = GatysOptions(iterations=1, size=32, tv_weight=0.0)
    seen.clear()
    run(photo, [style], explicit, backbone, on_progress=seen.append)
    assert seen[0].tv_loss == 0.0


@pytest.fixture
def random_vgg_job() -> tuple[VGG16Backbone, np.ndarray, np.ndarray]:
    """VGG-16's layout with random weights, a 288x200 noise photo and a 64 px noise style: for
    the tiling, not the pretrained look."""
    torch.manual_seed(0)
    generator = np.random.default_rng(4)
    content = generator.integers(0, 256, (288, 200, 3), dtype=np.uint8)
    style = generator.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return VGG16Backbone().freeze(), content, style


def run_whole_and_tiled(
    job: tuple[VGG16Backbone, np.ndarray, np.ndarray], options: GatysOptions
) -> list[tuple[np.ndarray, Recorder]]:
    """The same job run whole, then with every scale above 224x224 pixels in tiles."""
    vgg, content, style = job
    outcomes = []
    for tile_pixels in (0, 224 * 224):
        recorder = Recorder()
        image = run(
            content,
            [style],
            options,
            vgg,
            tile_pixels=tile_pixels,
            on_progress=recorder.on_progress,
        )
        outcomes.append((image, recorder))
    return outcomes


def test_tiled_scales_give_the_whole_image_result(
    monkeypatch: pytest.MonkeyPatch,
    random_vgg_job: tuple[VGG16Backbone, np.ndarray, np.ndarray],
) -> None:
    """A scale above `tile_pixels` runs through the backbone in tiles, with the same objective
    and gradient, so the same steps: the result matches the whole-image run to the level, and
    the progress reports the same losses."""
    options = GatysOptions(iterations=3, size=288)
    tiled_calls: list[int] = []
    tiled = optimize.tiled_objective
    monkeypatch.setattr(
        optimize, "tiled_objective", lambda *a, **k: tiled_calls.append(1) or tiled(*a, **k)
    )
    outcomes = run_whole_and_tiled(random_vgg_job, options)
    results = [image for image, _ in outcomes]
    losses = [
        [p.style_loss + p.content_loss + p.tv_loss for p in recorder.progress]
        for _, recorder in outcomes
    ]
    assert len(losses[1]) == 3 and len(tiled_calls) == 3
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    difference = np.abs(results[0].astype(int) - results[1].astype(int))
    assert difference.max() <= 1


def test_eta_weighs_a_tiled_scale_by_its_margins_and_extra_pass(
    monkeypatch: pytest.MonkeyPatch,
    random_vgg_job: tuple[VGG16Backbone, np.ndarray, np.ndarray],
) -> None:
    """A coarse whole scale's rate, extrapolated to a fine tiled scale, counts every pixel the
    tiles compute (margins included) and their extra forward pass: the same job tiled expects
    more time per fine evaluation than whole, by the tiles' processed pixels (counted here from
    the plan's spans) over the image's, times 4/3."""
    vgg = random_vgg_job[0]
    monkeypatch.setattr(optimize, "time", SteppingClock())
    outcomes = run_whole_and_tiled(random_vgg_job, GatysOptions(iterations=6, scales=(64, 288)))
    etas = [recorder.progress[1].eta_s for _, recorder in outcomes]
    plan = optimize.measure_reach(vgg, ["relu4_2", *vgg.style_layers]).plan(224 * 224)
    spans = plan.tiles(288, 200)
    processed = sum(
        (t.rows.high - t.rows.low) * (t.cols.high - t.cols.low) for r in spans for t in r
    )
    coarse = 64 * 44
    # Evaluation 2 is the second of three at 64 px: one coarse evaluation left, then three fine.
    whole_left, tiled_left = coarse + 3 * 288 * 200, coarse + 3 * processed * 4 / 3
    assert len(spans) * len(spans[0]) > 1
    assert etas[1] / etas[0] == pytest.approx(tiled_left / whole_left, rel=1e-6)


def test_a_backbone_that_cannot_be_cut_runs_whole(backbone: Backbone, content, style) -> None:
    """EfficientNet's TensorFlow padding depends on the input's size, so it never runs in
    tiles: `tile_pixels` changes nothing."""
    assert not backbone.runs_in_tiles
    options = GatysOptions(iterations=2, size=SIZE, seed=0)
    whole = run(content, [style], options, backbone)
    asked = run(content, [style], options, backbone, tile_pixels=64)
    np.testing.assert_array_equal(whole, asked)
