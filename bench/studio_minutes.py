"""From a dropped painting to a served style, end to end, timed: the studio's promise measured.

What the studio does, through HTTP on an app built exactly as `make run` builds it (embedded
worker, defaults for everything: warm start, `ATELIER_TRAINING_DEFAULT_ITERATIONS`, the shipped
default photos): POST /jobs/training with only a painting and a name, poll the job until it
ends, then stylize a photo with the new style through POST /model/predict. The clock runs from
the submit to the first stylized image, so start-up (loss network, photos) is included.

The new network is then scored by the training objective on held-out photos
(`warm_start.HeldOutObjective`, VGG-16, fp32), beside the in-box network of the same painting
(2000 cold steps, `make train-styles`): "at the quality of the in-box styles" is that bar.

    .venv/bin/python bench/studio_minutes.py [--painting candy] [--iterations N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from fastapi.testclient import TestClient
from machine import cpu_flags, cpu_model, load_average
from warm_start import CPU, SHARED, HeldOutObjective, inbox_network, rgb

from app.core.config import Settings
from app.main import create_app
from app.perceptual.backbones import load_backbone
from app.training import TrainOptions
from app.weights.checkpoints import load_transformer_net

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 2.0


def run(args: argparse.Namespace) -> dict[str, object]:
    painting_path = SHARED / "paintings" / f"{args.painting}.jpg"
    with tempfile.TemporaryDirectory(prefix="atelier-studio-minutes-") as data:
        settings = Settings(
            data_dir=Path(data),
            models_dir=ROOT / "models",
            **({"training_default_iterations": args.iterations} if args.iterations else {}),
        )
        with TestClient(create_app(settings)) as client:
            while client.get("/health/ready").status_code != 200:
                time.sleep(0.5)
            started = time.monotonic()
            submitted = client.post(
                "/jobs/training",
                files={"painting": (painting_path.name, painting_path.read_bytes(), "image/jpeg")},
                data={"name": f"my-{args.painting}"},
            )
            submitted.raise_for_status()
            job = submitted.json()
            while job["state"] in ("queued", "running"):
                time.sleep(POLL_S)
                job = client.get(f"/jobs/{job['id']}").json()
            trained = time.monotonic()
            if job["state"] != "succeeded":
                raise SystemExit(f"the training job ended {job['state']}: {job['error']}")
            photo = (ROOT / "swagger-samples" / "chelsea.jpg").read_bytes()
            stylized = client.post(
                f"/model/predict?style=my-{args.painting}",
                files={"image": ("chelsea.jpg", photo, "image/jpeg")},
            )
            stylized.raise_for_status()
            served = time.monotonic()
            (ROOT / "bench" / "results").mkdir(exist_ok=True)
            (ROOT / "bench" / "results" / f"studio-minutes-{args.painting}.jpg").write_bytes(
                stylized.content
            )
            weights = client.get(f"/model/styles/my-{args.painting}/weights?format=safetensors")
            weights.raise_for_status()
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as handle:
            handle.write(weights.content)
            handle.flush()
            ours = load_transformer_net(Path(handle.name))
    backbone = load_backbone("vgg16", ROOT / "models", CPU, cache_dir=settings.cache_dir)
    score = HeldOutObjective(backbone, rgb(painting_path), args.eval_size, TrainOptions.style_size)
    inbox = inbox_network(args.painting)
    return {
        "machine": f"{cpu_model()}; flags {sorted(cpu_flags() & {'avx512_bf16', 'amx_bf16'})}",
        "torch_threads": torch.get_num_threads(),
        "load_average_end": load_average(),
        "painting": args.painting,
        "iterations": job["progress"]["total"],
        "options": job["options"].get("train"),
        "minutes_to_trained": round((trained - started) / 60, 2),
        "minutes_to_first_image": round((served - started) / 60, 2),
        "images_per_s": (job["progress"].get("metrics") or {}).get("images_per_s"),
        "ours": score(ours),
        "inbox": {"name": inbox[0], **score(inbox[1])} if inbox else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--painting", default="candy")
    parser.add_argument("--iterations", type=int, default=None, help="default: the server's")
    parser.add_argument("--eval-size", type=int, default=256)
    result = run(parser.parse_args())
    text = json.dumps(result, indent=2)
    print(text)
    (ROOT / "bench" / "results" / "studio-minutes.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
