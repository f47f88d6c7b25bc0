"""The running service's long-lived parts, built once and shared by all requests.

Loading networks takes seconds, so it happens on a background thread after the server starts:
`/health/live` answers at once and `/health/ready` turns ready when loading and warm-up end.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import numpy as np

from app.core.config import Settings
from app.core.device import configure_threads, select_device
from app.core.heap import heap_policy
from app.imaging.decode_budget import DecodeBudget
from app.serving.cpu_precision import choose_cpu_precision
from app.serving.executor import InferenceExecutor
from app.serving.runner import CudaOptions, StyleRunner, network_precision
from app.serving.tiling import DEFAULT_TILE_SIZE, TileOptions
from app.styles.builtin import DEFAULT_BUILTIN
from app.styles.catalog import (
    NetworkFamily,
    SingleStyle,
    StyleCatalog,
    builtin_styles,
    manifest_styles,
)
from app.styles.thumbnails import ThumbnailCache
from app.weights.checkpoints import CheckpointError
from app.weights.manifest import ManifestError, load_manifest

log = logging.getLogger("atelier.service")

LOADER_JOIN_TIMEOUT_S = 300.0


def cuda_options(settings: Settings) -> CudaOptions:
    """The GPU speed options the `ATELIER_CUDA_*` settings ask for."""
    return CudaOptions(
        precision=settings.cuda_precision,
        channels_last=settings.cuda_channels_last,
        compile=settings.cuda_compile,
        compile_bucket=settings.cuda_compile_bucket,
    )


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = StyleCatalog(builtin_styles())
        self.executor = InferenceExecutor(settings.inference_workers, settings.inference_queue)
        self.decode_budget = DecodeBudget(settings.decode_budget_pixels)
        self.thumbnails = ThumbnailCache(settings.data_dir / "thumbnails")
        self.runner: StyleRunner | None = None
        self.problems: list[str] = []
        self.ready = threading.Event()
        self.failed: str | None = None
        self._loader: threading.Thread | None = None

    @property
    def default_style(self) -> str:
        """Configured default, else mosaic when installed, else a built-in style; named as the
        catalog lists it (an alias such as `mosaic` for Atelier's own becomes `mosaic-atelier`)."""
        wanted = self.settings.default_style or "mosaic"
        if wanted in self.catalog:
            return self.catalog.get(wanted).name
        return self.settings.default_style or DEFAULT_BUILTIN

    def load(self, *, warmup: bool | None = None) -> None:
        """Load every network and warm it up (unless `warmup` or the setting says not to); bad
        checkpoints are logged and skipped."""
        try:
            self._load(self.settings.warmup if warmup is None else warmup)
        except Exception as exc:
            self.failed = f"model loading failed: {exc}"
            log.exception("model loading failed")
            raise
        finally:
            self.ready.set()

    def _load(self, warmup: bool) -> None:
        settings = self.settings
        configure_threads(settings.torch_threads, settings.torch_interop_threads)
        device = select_device(settings.device)
        cpu_precision = choose_cpu_precision(settings.cpu_precision)
        precision = network_precision(device, settings.cpu_backend, cpu_precision)
        runner = StyleRunner(
            device,
            settings.cache_dir,
            cpu_backend=settings.cpu_backend,
            cpu_precision=cpu_precision,
            threads=settings.torch_threads,
            shrink_arena=settings.cpu_shrink_arena,
            emulate_int8=settings.arbitrary_emulate_int8,
            cuda=cuda_options(settings),
            tiles=TileOptions(
                tile_size=settings.tile_size or DEFAULT_TILE_SIZE[precision],
                stats=settings.tile_stats,
                stats_pixels=settings.tile_stats_pixels,
                whole_stack=settings.tile_whole_stack,
            ),
        )
        try:
            manifest = load_manifest(settings.models_dir)
        except ManifestError as exc:
            self.problems.append(str(exc))
            log.error("skipping local styles: %s", exc)
            manifest = None
        if manifest is not None:
            for style in manifest_styles(manifest, settings.models_dir):
                try:
                    runner.load_transformer(style)
                except CheckpointError as exc:
                    self._skip(style.name, str(exc))
                    continue
                except Exception as exc:
                    # E.g. an ONNX export that fails for an odd checkpoint: skip, never crash.
                    self._skip(style.name, f"{style.checkpoint}: cannot be prepared ({exc})")
                    continue
                self.catalog.add(style)
        if warmup:
            self._warm_up(runner)
        self.runner = runner
        log.info(
            "loaded %d styles on %s (%s; heap: %s)",
            len(self.catalog),
            device,
            runner.backend_name,
            heap_policy(),
        )

    def _skip(self, name: str, problem: str) -> None:
        self.problems.append(problem)
        log.error("skipping style %s: %s", name, problem)

    def _warm_up(self, runner: StyleRunner) -> None:
        """One small pass per engine so the first request does not pay allocator costs."""
        sample = np.full((64, 64, 3), 128, dtype=np.uint8)
        seen: set[NetworkFamily] = set()
        for style in self.catalog.all():
            if style.network in seen and style.network is NetworkFamily.multistyle:
                continue
            seen.add(style.network)
            runner.stylize(sample, SingleStyle(style))

    def start_loading(self) -> threading.Thread:
        thread = threading.Thread(target=self._load_quietly, name="model-loader", daemon=True)
        thread.start()
        self._loader = thread
        return thread

    def _load_quietly(self) -> None:
        # load() has already logged the error and recorded it in `failed` for /health/ready.
        with contextlib.suppress(Exception):
            self.load()

    def close(self) -> None:
        """Wait for a still-running load: a process exiting while a daemon thread is inside
        torch or onnxruntime C++ code aborts ("terminate called without an active exception")."""
        if self._loader is not None:
            self._loader.join(timeout=LOADER_JOIN_TIMEOUT_S)
        self.executor.shutdown()
