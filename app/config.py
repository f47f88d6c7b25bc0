"""Service settings, read from `ATELIER_*` environment variables.

Every limit the service enforces lives here, so operators can find and tune them in one place
and the README's configuration table can be checked against a single class.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All tunables of the service; defaults suit the embedded single-machine run."""

    model_config = SettingsConfigDict(env_prefix="ATELIER_", env_file=None, extra="ignore")

    # Where things live.
    data_dir: Path = Field(Path("data"), description="All mutable state: caches, jobs, results.")
    models_dir: Path = Field(Path("models"), description="Installed weights and the manifest.")

    # Serving.
    host: str = "127.0.0.1"
    port: int = 8000
    device: Literal["auto", "cpu", "cuda"] = "auto"
    default_style: str | None = Field(
        None, description="Style used when a request names none; mosaic if installed."
    )

    # Input limits.
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Per uploaded file.")
    max_request_bytes: int = Field(45 * 1024 * 1024, gt=0, description="Whole request body.")
    max_pixels: int = Field(50_000_000, gt=0, description="Declared width x height of an upload.")
    max_size_limit: int = Field(2048, gt=0, description="Largest allowed `max_size` (long side).")
    default_max_size: int = Field(1024, gt=0, description="Long side when a request names none.")
    min_side: int = Field(1, gt=0, description="Smallest accepted image side, in pixels.")

    # Inference execution.
    inference_workers: int = Field(1, ge=1, description="Concurrent inferences per device.")
    inference_queue: int = Field(8, ge=0, description="Waiting predictions before 503.")
    cpu_backend: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime", description="How networks run on CPU: an ONNX export, or eager torch."
    )
    torch_threads: int | None = Field(None, ge=1, description="Intra-op threads; None = cores.")
    torch_interop_threads: int = Field(1, ge=1)
    warmup: bool = Field(True, description="Run each loaded network once at start-up.")

    @property
    def cache_dir(self) -> Path:
        """Converted weights (safetensors) live here, rebuilt when missing."""
        return self.data_dir / "cache"


@lru_cache
def get_settings() -> Settings:
    """Process-wide settings; tests build their own `Settings` instead of patching env."""
    return Settings()
