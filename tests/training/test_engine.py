"""The training engine: it learns, it resumes exactly, it stops when asked, it checks options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.gatys.optimize import Cancelled
from app.perceptual.backbones import Backbone, load_backbone
from app.perceptual.losses import gram_matrix
from app.training import TrainOptions, train
from app.training.checkpoint import (
    TrainingCheckpoint,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    save_checkpoint,
)
from app.training.engine import stylize_array, to_batch
from app.training.photos import CropSampler

CPU = torch.device("cpu")


def photo(seed: int, height: int = 72, width: int = 96) -> np.ndarray:
    """Smooth colour blobs with edges: something a content loss can tell apart."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [
        np.sin(xx * rng.uniform(3, 9) + rng.uniform(0, 6)) + np.cos(yy * rng.uniform(3, 9))
        for _ in range(3)
    ]
    image = (np.stack(channels, axis=-1) * 60 + 128).clip(0, 255)
    image[height // 3 : height // 2, width // 4 : width // 2] = rng.uniform(0, 255, 3)
    return image.astype(np.uint8)


def stripes(size: int = 96) -> np.ndarray:
    """A painting with one unmistakable texture: red and blue diagonal stripes."""
    yy, xx = np.mgrid[0:size, 0:size]
    red = ((xx + yy) // 6) % 2 == 0
    image = np.zeros((size, size, 3), np.uint8)
    image[red] = (220, 30, 30)
    image[~red] = (30, 40, 200)
    return image


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    return load_backbone("efficientnet-lite0", tmp_path_factory.mktemp("no-vgg"), CPU)


def tiny(**overrides: object) -> TrainOptions:
    values: dict[str, object] = {
        "iterations": 6,
        "batch_size": 1,
        "crop_size": 64,
        "style_size": 64,
        "precision": "fp32",
        "checkpoint_interval": 0,
        "preview_interval": 0,
        "backbone": "efficientnet-lite0",
    }
    return TrainOptions(**{**values, **overrides})  # type: ignore[arg-type]


PHOTOS = [photo(seed) for seed in range(3)]


def test_training_moves_the_output_towards_the_paintings_gram_matrices(
    backbone: Backbone,
) -> None:
    """After a few dozen steps the network's output on an unseen photo has Gram matrices
    closer to the painting's than the untrained network's output: the style is being learnt."""
    painting = stripes()
    options = tiny(iterations=40, learning_rate=1e-2, style_weight=50.0)
    probe = to_batch(photo(99))

    def style_error(net: torch.nn.Module) -> float:
        with torch.no_grad():
            out = to_batch(stylize_array(net, probe))
            layer = "block1_expand"
            ours = gram_matrix(backbone(out, [layer])[layer])
            target = gram_matrix(backbone(to_batch(painting), [layer])[layer])
        return float((ours - target).pow(2).sum() / target.pow(2).sum())

    before = train(PHOTOS, painting, tiny(iterations=1, learning_rate=1e-9), backbone).net
    after = train(PHOTOS, painting, options, backbone).net
    assert style_error(after) < 0.7 * style_error(before)


def test_a_resumed_run_equals_an_uninterrupted_one(backbone: Backbone, tmp_path: Path) -> None:
    painting = stripes()
    straight = train(PHOTOS, painting, tiny(iterations=6), backbone).net

    saved: list[TrainingCheckpoint] = []
    with pytest.raises(Cancelled):
        train(
            PHOTOS,
            painting,
            tiny(iterations=6, checkpoint_interval=2),
            backbone,
            on_checkpoint=saved.append,
            should_cancel=lambda: len(saved) >= 2,  # stop after the checkpoint at step 4
        )
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, saved[-1])
    resumed_from = load_checkpoint(path)
    assert resumed_from.iteration == 4
    resumed = train(PHOTOS, painting, tiny(iterations=6), backbone, resume=resumed_from).net

    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_a_stop_saves_a_checkpoint_at_the_current_step(backbone: Backbone) -> None:
    saved: list[TrainingCheckpoint] = []
    steps = iter(range(100))
    with pytest.raises(Cancelled):
        train(
            PHOTOS,
            stripes(),
            tiny(iterations=6, checkpoint_interval=0),
            backbone,
            on_checkpoint=saved.append,
            should_cancel=lambda: next(steps) >= 3,
        )
    assert [c.iteration for c in saved] == [3]


def test_progress_reports_every_step_with_rates_and_eta(backbone: Backbone) -> None:
    reports = []
    train(PHOTOS, stripes(), tiny(iterations=4), backbone, on_progress=reports.append)
    assert [r.iteration for r in reports] == [1, 2, 3, 4]
    assert all(r.total == 4 and r.content_loss > 0 and r.style_loss > 0 for r in reports)
    assert reports[0].eta_s is None and reports[-1].eta_s == pytest.approx(0.0, abs=1e-6)
    assert reports[2].images_per_s > 0


def test_previews_show_the_network_on_the_probe_photo(backbone: Backbone) -> None:
    previews: list[np.ndarray] = []
    probe = photo(7, 50, 70)  # not a multiple of 4: padded and cropped back
    train(
        PHOTOS, stripes(), tiny(iterations=4, preview_interval=2), backbone,
        probe=probe, on_preview=previews.append,
    )  # fmt: skip
    assert len(previews) == 2
    assert all(p.shape == probe.shape and p.dtype == np.uint8 for p in previews)


def test_the_sampler_covers_every_photo_each_epoch_and_jitters_crops() -> None:
    photos = [np.full((80, 100, 3), value, np.uint8) for value in (10, 120, 240)]
    sampler = CropSampler(photos, crop_size=64, seed=3)
    seen = [int(sampler.next_batch(1)[0, 0, 0, 0] * 255 + 0.5) for _ in range(6)]
    assert sorted(seen[:3]) == sorted(seen[3:]) == [10, 120, 240]
    offsets = {sampler.jitter(4) for _ in range(64)}
    assert len(offsets) > 8 and all(0 <= dy < 4 and 0 <= dx < 4 for dy, dx in offsets)


def test_checkpoint_bytes_round_trip_and_garbage_is_refused(backbone: Backbone) -> None:
    saved: list[TrainingCheckpoint] = []
    train(PHOTOS, stripes(), tiny(iterations=2, checkpoint_interval=2), backbone,
          on_checkpoint=saved.append)  # fmt: skip
    again = checkpoint_from_bytes(checkpoint_to_bytes(saved[0]))
    assert again.iteration == 2 and again.backbone == "efficientnet-lite0"
    assert all(torch.equal(v, again.model[k]) for k, v in saved[0].model.items())
    with pytest.raises(ValueError, match="not a training checkpoint"):
        checkpoint_from_bytes(b"not a checkpoint")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("iterations", 0),
        ("iterations", 10**9),
        ("batch_size", 0),
        ("crop_size", 66),
        ("crop_size", 4096),
        ("style_weight", float("nan")),
        ("learning_rate", 0.0),
        ("backbone", "resnet50"),
        ("precision", "fp8"),
        ("seed", -1),
        ("iterations", True),
    ],
)
def test_options_out_of_bounds_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TrainOptions(**{field: value})  # type: ignore[arg-type]


def test_unknown_stored_options_are_named() -> None:
    with pytest.raises(ValueError, match="colour"):
        TrainOptions.from_dict({"iterations": 5, "colour": "red"})
