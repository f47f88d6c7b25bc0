"""`atelier stylize` and `atelier styles` through Typer's test runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import decode_rgb, encode, mean_abs_diff, pattern
from PIL import Image
from typer.testing import CliRunner

from app.cli.commands import cli
from app.styles.builtin import BUILTIN_STYLES


@pytest.fixture
def env(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, clean_env_settings: None
) -> Path:
    """ATELIER_* pointing at fresh folders (with the session's weights cache linked in)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "cache").symlink_to(cache_dir, target_is_directory=True)
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("ATELIER_DATA_DIR", str(data))
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models))
    monkeypatch.setenv("ATELIER_WARMUP", "false")
    return tmp_path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_stylize_one_file(env: Path, runner: CliRunner) -> None:
    pixels = pattern(48, 36)
    source = env / "photo.png"
    source.write_bytes(encode(pixels, "PNG"))
    target = env / "out.png"
    result = runner.invoke(
        cli,
        ["stylize", str(source), "--style", "crimson-fire", "-o", str(target), "--format", "png"],
    )
    assert result.exit_code == 0, result.output
    assert "48x36" in result.output and str(target) in result.output
    with Image.open(target) as image:
        assert image.format == "PNG" and image.size == (48, 36)
    stylized = decode_rgb(target.read_bytes())
    assert mean_abs_diff(stylized, pixels) > 20
    # crimson-fire is red: the mean colour leans strongly to the red channel.
    mean = stylized.reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[1] + 30 and mean[0] > mean[2] + 30


def test_stylize_a_folder_with_options(env: Path, runner: CliRunner) -> None:
    folder = env / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(pattern(40, 30), "PNG"))
    (folder / "b.jpg").write_bytes(encode(pattern(30, 40, seed=1), "JPEG"))
    (folder / "notes.txt").write_text("not an image")
    out = env / "out"
    result = runner.invoke(
        cli,
        ["stylize", str(folder), "-o", str(out), "--max-size", "20", "--strength", "0"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.jpeg", "b.jpeg"]
    with Image.open(out / "a.jpeg") as a, Image.open(out / "b.jpeg") as b:
        assert a.size == (20, 15) and b.size == (15, 20)
    # strength 0 gives the (resized) photo back, up to JPEG noise.
    resized = Image.fromarray(pattern(40, 30)).resize((20, 15), Image.Resampling.LANCZOS)
    expected = np.asarray(resized)
    assert mean_abs_diff(decode_rgb((out / "a.jpeg").read_bytes()), expected) < 6


def test_unknown_style_exits_2_with_the_names(env: Path, runner: CliRunner) -> None:
    source = env / "photo.png"
    source.write_bytes(encode(pattern(16, 16), "PNG"))
    result = runner.invoke(
        cli, ["stylize", str(source), "--style", "no-such-style", "-o", str(env / "o.png")]
    )
    assert result.exit_code == 2
    assert "no-such-style" in result.output
    assert "available" in result.output and "starry-swirls" in result.output
    assert not (env / "o.png").exists()


def test_bad_input_file_exits_1(env: Path, runner: CliRunner) -> None:
    good, bad = env / "good.png", env / "bad.png"
    good.write_bytes(encode(pattern(16, 16), "PNG"))
    bad.write_bytes(b"not an image at all")
    result = runner.invoke(cli, ["stylize", str(good), str(bad), "-o", str(env / "out")])
    assert result.exit_code == 1
    assert "bad.png" in result.output
    assert (env / "out" / "good.jpeg").is_file() and not (env / "out" / "bad.jpeg").exists()


@pytest.mark.parametrize(
    "args",
    [["--format", "gif"], ["--strength", "2"]],
    ids=["format", "strength"],
)
def test_bad_options_exit_2(env: Path, runner: CliRunner, args: list[str]) -> None:
    source = env / "photo.png"
    source.write_bytes(encode(pattern(16, 16), "PNG"))
    result = runner.invoke(cli, ["stylize", str(source), "-o", str(env / "o.png"), *args])
    assert result.exit_code == 2, result.output


def test_no_inputs_exit_2(env: Path, runner: CliRunner) -> None:
    empty = env / "empty"
    empty.mkdir()
    result = runner.invoke(cli, ["stylize", str(empty)])
    assert result.exit_code == 2
    assert "no input images" in result.output


def test_styles_lists_the_26_builtins(env: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["styles"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    listed = [line[2:].split()[0] for line in lines]
    assert listed == [style.name for style in BUILTIN_STYLES]
    assert len(listed) == 26
    default = [line for line in lines if line.startswith("*")]
    assert len(default) == 1 and "starry-swirls" in default[0] and "#19" in default[0]


def test_stylize_with_a_painting_as_the_style(env: Path, runner: CliRunner) -> None:
    pixels = pattern(48, 36)
    source = env / "photo.png"
    source.write_bytes(encode(pixels, "PNG"))
    painting = np.zeros((64, 64, 3), dtype=np.uint8)
    painting[..., 2] = 220  # a flat blue "painting"
    painting[::8] = 255
    (env / "blue.png").write_bytes(encode(painting, "PNG"))
    target = env / "out.png"
    result = runner.invoke(
        cli,
        ["stylize", str(source), "--style-image", str(env / "blue.png"), "-o", str(target)],
    )
    assert result.exit_code == 0, result.output
    stylized = decode_rgb(target.read_bytes())
    assert stylized.shape == pixels.shape
    # The output's colours move toward the painting's blue.
    blue_share = stylized[..., 2].mean() / stylized.mean()
    assert blue_share > pixels[..., 2].mean() / pixels.mean()


def test_style_weights_must_match_the_paintings(env: Path, runner: CliRunner) -> None:
    source = env / "photo.png"
    source.write_bytes(encode(pattern(16, 16), "PNG"))
    result = runner.invoke(
        cli,
        ["stylize", str(source), "--style-image", str(source), "--style-weights", "1,2"],
    )
    assert result.exit_code == 2
    assert "weight" in result.output


def test_max_size_0_is_full_size_in_tiles(
    env: Path, runner: CliRunner, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Print size from the CLI: `--max-size 0` keeps every pixel; above ATELIER_TILE_SIZE^2
    the image runs in tiles and still matches the untiled network (issue 19's goal)."""
    import torch

    from app.serving.runner import StyleRunner
    from app.styles.catalog import StyleCatalog, builtin_styles

    monkeypatch.setenv("ATELIER_TILE_SIZE", "256")
    pixels = pattern(272, 260, seed=3)
    source = env / "photo.png"
    source.write_bytes(encode(pixels, "PNG"))
    target = env / "print.png"
    result = runner.invoke(
        cli,
        [
            "stylize",
            str(source),
            "-s",
            "crimson-fire",
            "-o",
            str(target),
            "--max-size",
            "0",
            "--format",
            "png",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "272x260" in result.output
    catalog = StyleCatalog(builtin_styles())
    whole = StyleRunner(torch.device("cpu"), cache_dir).stylize(
        pixels, catalog.resolve("crimson-fire")
    )
    assert mean_abs_diff(decode_rgb(target.read_bytes()), whole) <= 1.0


def test_max_size_over_the_limit_exits_2(env: Path, runner: CliRunner) -> None:
    source = env / "photo.png"
    source.write_bytes(encode(pattern(40, 30), "PNG"))
    result = runner.invoke(
        cli, ["stylize", str(source), "-o", str(env / "o.png"), "--max-size", "60000"]
    )
    assert result.exit_code == 2
    assert "ATELIER_MAX_SIZE_LIMIT" in result.output


@pytest.mark.parametrize("flag", ["--cold-start", "--warm-start"])
def test_train_takes_a_start_flag_and_warns_when_the_warm_start_style_is_missing(
    env: Path, runner: CliRunner, flag: str
) -> None:
    painting = env / "painting.png"
    painting.write_bytes(encode(pattern(80, 80, seed=9), "png"))
    photos = env / "photos"
    photos.mkdir()
    for seed in range(2):
        (photos / f"{seed}.png").write_bytes(encode(pattern(72, 96, seed=seed), "png"))
    output = env / "mine.safetensors"
    args = ["train", str(painting), "--photos", str(photos), "--name", "mine", "-o", str(output)]
    args += ["--iterations", "1", "--batch-size", "1", "--crop-size", "64", "--style-size", "64"]
    args += ["--backbone", "efficientnet-lite0", "--precision", "fp32", flag]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert output.is_file()
    # The env's models folder is empty: a warm start says it starts from random weights.
    warned = "starting from random weights" in result.output
    assert warned is (flag == "--warm-start")


def test_train_from_a_given_file_begins_with_its_weights(env: Path, runner: CliRunner) -> None:
    """--start FILE: with a negligible learning rate the result is that file's network, not the
    random initialisation; a file that is not a TransformerNet exits 2 naming it."""
    import torch

    from app.weights.checkpoints import load_transformer_net

    mosaic = Path(__file__).resolve().parents[2] / "models" / "mosaic-atelier.safetensors"
    painting = env / "painting.png"
    painting.write_bytes(encode(pattern(80, 80, seed=9), "png"))
    photo = env / "photo.png"
    photo.write_bytes(encode(pattern(72, 96, seed=1), "png"))
    output = env / "further.safetensors"
    args = ["train", str(painting), "--photos", str(photo), "--name", "further", "-o", str(output)]
    args += ["--iterations", "1", "--batch-size", "1", "--crop-size", "64", "--style-size", "64"]
    args += ["--backbone", "efficientnet-lite0", "--precision", "fp32", "--learning-rate", "1e-9"]
    result = runner.invoke(cli, [*args, "--start", str(mosaic)])
    assert result.exit_code == 0, result.output
    begun = load_transformer_net(output).state_dict()
    given = load_transformer_net(mosaic).state_dict()
    assert all(torch.allclose(begun[k].float(), given[k].float(), atol=1e-3) for k in given)
    bad = env / "notes.pth"
    bad.write_bytes(b"not a network")
    result = runner.invoke(cli, [*args, "--start", str(bad)])
    assert result.exit_code == 2 and "notes.pth" in result.output
