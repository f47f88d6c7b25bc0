"""The resumable state of a video run: finished chunks plus what the next frame needs.

Stored as one ZIP (chunks are already compressed, so entries are stored as they are): a small
manifest, the chunks in order, and the last source and output frames the stabilizer continues
from. A checkpoint written for other settings (size, format, stabilization) is ignored, so a
resumed job can never splice mismatched pieces.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field

import numpy as np

from app.video.stabilize import StabilizerState

FORMAT_VERSION = 1


@dataclass
class VideoCheckpoint:
    fingerprint: str
    frames_done: int = 0
    chunks: list[bytes] = field(default_factory=list)
    stabilizer: StabilizerState | None = None

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        manifest = {
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "frames_done": self.frames_done,
            "chunks": len(self.chunks),
        }
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("manifest.json", json.dumps(manifest))
            for number, chunk in enumerate(self.chunks):
                archive.writestr(f"chunk-{number:05d}", chunk)
            if self.stabilizer is not None:
                state = io.BytesIO()
                np.savez_compressed(
                    state,
                    previous_gray=self.stabilizer.previous_gray,
                    previous_output=self.stabilizer.previous_output,
                )
                archive.writestr("stabilizer.npz", state.getvalue())
        return buffer.getvalue()


def load_checkpoint(data: bytes | None, fingerprint: str) -> VideoCheckpoint | None:
    """The checkpoint in `data` when it is readable and was made for `fingerprint`, else None."""
    if not data:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            if manifest.get("version") != FORMAT_VERSION:
                return None
            if manifest.get("fingerprint") != fingerprint:
                return None
            chunks = [archive.read(f"chunk-{n:05d}") for n in range(int(manifest["chunks"]))]
            stabilizer = None
            if "stabilizer.npz" in archive.namelist():
                with np.load(io.BytesIO(archive.read("stabilizer.npz"))) as state:
                    stabilizer = StabilizerState(state["previous_gray"], state["previous_output"])
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return None
    return VideoCheckpoint(fingerprint, int(manifest["frames_done"]), chunks, stabilizer)
