"""Service settings, read from `ATELIER_*` environment variables.

Every limit the service enforces lives here, so operators can find and tune them in one place
and the README's configuration table can be checked against a single class.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Licensed photos that ship in the package (origins in its SOURCES.md), so that uploading a
# painting is all a user must do to train a style.
DEFAULT_TRAINING_PHOTOS_DIR = Path(__file__).resolve().parents[1] / "training" / "default_photos"

# The vocabularies of the settings below that serving code takes as arguments too: written once
# here, the lowest layer both read.
CpuBackend = Literal["onnxruntime", "torch"]
CpuPrecision = Literal["auto", "fp32", "bf16"]
StatsMethod = Literal["exact", "downscaled"]


def _gatys_alias(name: str) -> AliasChoices:
    """A Gatys-only setting: ATELIER_GATYS_<NAME>, or its deprecated ATELIER_JOB_<NAME>."""
    return AliasChoices(f"ATELIER_GATYS_{name.upper()}", f"ATELIER_JOB_{name.upper()}")


class Settings(BaseSettings):
    """All tunables of the service; defaults suit the embedded single-machine run."""

    model_config = SettingsConfigDict(
        env_prefix="ATELIER_", env_file=None, extra="ignore", validate_by_name=True
    )

    # Where things live.
    data_dir: Path = Field(Path("data"), description="All mutable state: caches, jobs, results.")
    models_dir: Path = Field(Path("models"), description="Installed weights and the manifest.")

    # Serving.
    host: str = Field("127.0.0.1", description="Bind address of `atelier serve`.")
    port: int = Field(8000, description="Port of `atelier serve`.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto` = CUDA when a GPU is visible, else CPU."
    )
    default_style: str | None = Field(
        None, description="Style used when a request names none; mosaic if installed."
    )

    # Input limits.
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Per uploaded file.")
    max_request_bytes: int = Field(45 * 1024 * 1024, gt=0, description="Whole request body.")
    max_pixels: int = Field(50_000_000, gt=0, description="Declared width x height of an upload.")
    max_size_limit: int = Field(
        50_000,
        gt=0,
        description="Largest allowed `max_size` (long side); ATELIER_MAX_PIXELS bounds the area. "
        "Images above ATELIER_TILE_SIZE squared run tiled, so memory does not grow with it.",
    )
    default_max_size: int = Field(1024, gt=0, description="Long side when a request names none.")
    min_side: int = Field(1, gt=0, description="Smallest accepted image side, in pixels.")
    max_style_images: int = Field(4, ge=1, description="Painting uploads per prediction.")
    decode_budget_pixels: int = Field(
        100_000_000,
        gt=0,
        description="Pixels that all uploads being decoded at once may hold (about 3-4 bytes "
        "each), across predictions, styles and jobs; beyond it 503 `busy` + Retry-After.",
    )

    # Print size: tiled inference (docs/print-size.md).
    tile_size: int | None = Field(
        None,
        ge=256,
        multiple_of=4,
        description="Images with more pixels than this squared are stylized in pieces: bands "
        "of a quarter of that many pixels (`exact`), or tiles of this side (`downscaled`); the "
        "per-request working memory bound. Smaller images run whole (the fast path). Unset: "
        "2048 where the networks run in bf16 (OpenVINO), 1448 in fp32 (onnxruntime, torch), "
        "whose activations take twice the bytes.",
    )
    tile_stats: StatsMethod = Field(
        "exact",
        description="Instance-norm statistics of tiled images: `exact` = the whole image's (the "
        "untiled result): the network runs segment by segment over full-width bands, every "
        "layer once, handing activations on through temporary files (TMPDIR); `downscaled` = "
        "from a copy of ATELIER_TILE_STATS_PIXELS, in overlapping tiles (fast, colours drift).",
    )

    @field_validator("tile_stats", mode="before")
    @classmethod
    def _cached_means_exact(cls, value: object) -> object:
        """`cached` (the torch-only spill of an earlier release) is read as `exact`, which now
        computes the same statistics, every layer once, on every backend."""
        return "exact" if value == "cached" else value

    tile_stats_pixels: int = Field(
        1_000_000,
        ge=4096,
        description="Pixels of the downscaled copy that `downscaled` tile statistics use.",
    )
    tile_whole_stack: bool = Field(
        True,
        description="`exact` statistics: run the network's residual stack (its coarsest, "
        "quarter-side part) as one graph over the whole image where that costs no more memory "
        "than the largest untiled image (up to 6.7 MP on bf16): faster, with more memory than "
        "the bands; false: every segment in bands, the least memory.",
    )

    # Inference execution.
    inference_workers: int = Field(1, ge=1, description="Concurrent inferences per device.")
    inference_queue: int = Field(8, ge=0, description="Waiting predictions before 503.")
    cpu_backend: CpuBackend = Field(
        "onnxruntime", description="How networks run on CPU: an ONNX export, or eager torch."
    )
    cpu_precision: CpuPrecision = Field(
        "auto",
        description="Precision of the image networks on CPU: bf16 runs the ONNX export in "
        "OpenVINO (several times faster on CPUs with AMX or AVX-512 BF16, within 2/255 of fp32); "
        "auto = bf16 where the CPU has it, else fp32 onnxruntime.",
    )
    keep_freed_memory: bool = Field(
        True,
        description="Start `atelier` with glibc tunables that keep freed memory in the heap "
        "for reuse: torch work (Gatys jobs, training, the torch backend) stops page-faulting "
        "its activations in afresh on every evaluation, and the resident memory stays at its "
        "peak instead of falling between requests (docs/performance.md). Off where "
        "ATELIER_CPU_SHRINK_ARENA is on.",
    )
    cpu_shrink_arena: bool = Field(
        False,
        description="Give onnxruntime's activation memory back after every run (fp32 CPU path): "
        "flat resident memory instead of ~0.4 GiB kept after 1024 px requests, ~20% slower "
        "per 1024 px request. The bf16 (OpenVINO) path keeps memory flat either way.",
    )
    arbitrary_emulate_int8: bool = Field(
        False,
        description="Run the arbitrary-style networks with the int8 rounding of the published "
        "TFLite model (closest to it); off = float, slightly smoother.",
    )
    torch_threads: int | None = Field(None, ge=1, description="Intra-op threads; None = cores.")
    torch_interop_threads: int = Field(1, ge=1, description="Torch inter-op threads.")
    cuda_precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="Autocast dtype for instant predictions on CUDA."
    )
    cuda_channels_last: bool = Field(False, description="channels_last tensors on CUDA.")
    cuda_compile: bool = Field(
        False, description="torch.compile the networks on CUDA (first request per size is slow)."
    )
    cuda_compile_bucket: int = Field(
        128, ge=4, multiple_of=4, description="Pad sizes to this multiple when compiling."
    )
    warmup: bool = Field(True, description="Run each loaded network once at start-up.")
    shutdown_grace_s: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM `atelier serve` stops accepting connections and gives in-flight "
        "requests this long to finish before it cancels them and exits; keep it below the "
        "orchestrator's kill timeout (Kubernetes terminationGracePeriodSeconds).",
    )

    # Optimisation jobs (Gatys): one design, embedded or scaled out over a broker.
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the job table, e.g. postgresql+psycopg://user@host/db; "
        "None = SQLite at {data_dir}/jobs.db (single host only).",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker (redis://host:6379/0) that hands jobs to `atelier worker` "
        "processes; None = jobs run on the embedded worker inside the API process.",
    )
    embedded_worker: bool | None = Field(
        None,
        description="Run jobs on a thread of the API process; None = on when no broker is set.",
    )
    gatys_backbone: Literal["auto", "vgg19", "vgg16", "efficientnet-lite0"] = Field(
        "auto",
        description="Feature network for Gatys jobs; auto = VGG-19 when fetched, else the "
        "VGG-16 (fetched or in-box), else EfficientNet-Lite0.",
        validation_alias=_gatys_alias("backbone"),
    )
    gatys_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Precision of the loss network in Gatys jobs: auto = bf16 autocast where "
        "the device has fast bf16 (AMX or AVX-512 BF16 CPUs, bf16 GPUs), else fp32; the "
        "pixels being optimised stay fp32.",
    )
    gatys_default_iterations: int = Field(
        300,
        ge=1,
        description="Iterations when a job names none.",
        validation_alias=_gatys_alias("default_iterations"),
    )
    gatys_max_iterations: int = Field(
        1000,
        ge=1,
        description="Largest `iterations` a job may ask.",
        validation_alias=_gatys_alias("max_iterations"),
    )
    gatys_default_size: int = Field(
        512,
        ge=16,
        description="Output long side when a job names none.",
        validation_alias=_gatys_alias("default_size"),
    )
    gatys_max_size: int = Field(
        1024,
        ge=16,
        description="Largest output (and style image) long side a job may ask.",
        validation_alias=_gatys_alias("max_size"),
    )
    gatys_tile_size: int = Field(
        1024,
        ge=0,
        description="Gatys scales and style images with more pixels than this squared run "
        "through the loss network in tiles of about this many pixels (margins included), with "
        "the whole image's objective and gradient: the loss network's working memory follows "
        "the tile. 0 = always whole.",
        validation_alias=_gatys_alias("tile_size"),
    )
    gatys_max_style_images: int = Field(
        4,
        ge=1,
        description="Style images per job.",
        validation_alias=_gatys_alias("max_style_images"),
    )
    job_max_queued_per_client: int = Field(
        5, ge=1, description="Queued plus running jobs per client (API key, else IP) before 429."
    )
    job_preview_every: int = Field(
        0, ge=0, description="Default preview interval (iterations) when a job names none; 0 = off."
    )
    job_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="A running job's lease; renewed every third of it, and a job whose lease "
        "lapses (dead worker) is requeued or failed.",
    )
    job_max_attempts: int = Field(
        2, ge=1, description="Runs a job gets before a lost worker fails it instead of requeueing."
    )
    job_sweep_interval_s: float = Field(
        5.0, gt=0, description="How often expired leases are looked for."
    )
    job_poll_interval_s: float = Field(
        1.0, gt=0, description="How often an idle embedded worker looks for queued jobs."
    )
    job_visibility_timeout_s: int = Field(
        6 * 3600,
        gt=0,
        description="Redis redelivers an unacknowledged job message after this long; keep it "
        "longer than the longest job (the job row's lease, not this, detects dead workers).",
    )

    job_retention_hours: float | None = Field(
        168.0,
        gt=0,
        description="Finished jobs (rows, inputs, previews, results) are deleted this many hours "
        "after they end; None = keep forever.",
    )

    training_photos_dir: Path | None = Field(
        DEFAULT_TRAINING_PHOTOS_DIR,
        description="Content photos (JPEG/PNG/WebP) for training jobs that upload none; "
        "default: the 18 licensed photos shipped in app/training/default_photos; "
        "None = every training job must upload its photos.",
    )
    training_warm_start_style: str = Field(
        "mosaic-atelier",
        description="The installed TransformerNet style (a name in models/manifest.toml) that "
        "training jobs with warm_start begin from; when it is missing they start from random "
        "weights, with a warning in the log.",
    )
    training_default_iterations: int = Field(
        1000,
        ge=1,
        description="Steps of a training job that names none (docs/training.md: why 1000).",
    )
    training_max_iterations: int = Field(
        20000, ge=1, description="Largest `iterations` a training job may ask."
    )
    training_max_photos: int = Field(
        64, ge=1, description="Content photos a training job may upload."
    )
    training_photo_side: int = Field(
        640, ge=64, description="Training photos are shrunk to this long side when decoded."
    )
    training_quick_iterations: int = Field(
        500, ge=1, description="Steps of the studio's quick training preset."
    )
    training_thorough_iterations: int = Field(
        2000, ge=1, description="Steps of the studio's thorough training preset."
    )
    training_images_per_s: float = Field(
        4.0,
        gt=0,
        description="Declared training throughput (images/s at 192 px crops) for the presets' "
        "time estimates until this server has finished a training job of its own.",
    )

    # Video and animated-image jobs; the live webcam stream.
    video_max_bytes: int = Field(
        40 * 1024 * 1024,
        gt=0,
        description="Largest uploaded clip; the request as a whole stays under "
        "ATELIER_MAX_REQUEST_BYTES.",
    )
    video_max_duration_s: float = Field(60.0, gt=0, description="Longest clip, in seconds.")
    video_max_frames: int = Field(1800, ge=1, description="Most frames in one clip.")
    video_max_frame_pixels: int = Field(
        1920 * 1080,
        gt=0,
        description="Declared width x height of a clip's frames, checked from the header.",
    )
    video_default_max_size: int = Field(
        640, ge=16, description="Output long side of a video job that names no `max_size`."
    )
    video_default_stabilize: float = Field(
        0.7,
        ge=0.0,
        le=0.95,
        description="Flow-guided temporal stabilization weight when a job names none; 0 = off.",
    )
    video_chunk_frames: int = Field(
        30, ge=1, description="Frames per encoded chunk: the checkpoint and resume granularity."
    )
    video_batch_frames: int = Field(
        8, ge=1, description="Frames per network call on CUDA (CPU renders one at a time)."
    )
    live_max_sessions: int = Field(4, ge=1, description="Concurrent live WebSocket streams.")
    live_max_size: int = Field(
        640, ge=16, description="Long side a live frame is stylized at (larger ones shrink)."
    )
    live_max_frame_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest JPEG frame a live client may send."
    )
    live_token_ttl_s: int = Field(
        60, ge=1, description="How long a live token from POST /live/token can open a stream."
    )
    live_token_secret: str | None = Field(
        None,
        description="Key that signs live tokens; None = random per process (set one shared "
        "value when several API processes serve the same clients).",
    )

    # Access, exposure and logs.
    api_keys: str = Field(
        "",
        description="Comma-separated API keys; empty = no keys (embedded run). Set for any "
        "public deployment: predict, styles and jobs then need `X-API-Key`.",
    )
    rate_limit: str | None = Field(
        None, description="Per-client request rate, e.g. `60/minute`; None = unlimited."
    )
    cors_origins: str = Field("", description="Comma-separated origins allowed by CORS.")
    log_level: str = Field("INFO", description="Root log level.")
    log_json: bool = Field(False, description="Log one JSON object per line.")

    @property
    def job_retention(self) -> timedelta | None:
        hours = self.job_retention_hours
        return None if hours is None else timedelta(hours=hours)

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def cache_dir(self) -> Path:
        """Converted weights (safetensors) live here, rebuilt when missing."""
        return self.data_dir / "cache"

    @property
    def job_database_url(self) -> str:
        """Where the job table lives; SQLite in the data dir unless a database is configured."""
        return self.database_url or f"sqlite:///{self.data_dir / 'jobs.db'}"

    @property
    def runs_embedded_worker(self) -> bool:
        """Whether this API process runs jobs itself (always, unless a broker takes them)."""
        if self.embedded_worker is None:
            return self.broker_url is None
        return self.embedded_worker


@lru_cache
def get_settings() -> Settings:
    """Process-wide settings; tests build their own `Settings` instead of patching env."""
    return Settings()
