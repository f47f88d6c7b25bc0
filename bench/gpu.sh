#!/usr/bin/env bash
# One unattended GPU benchmark run (< 15 minutes on one H100-class GPU): instant predictions in
# each precision/option, Gatys seconds per iteration, then print size's VRAM curves (instant
# path and Gatys). Writes bench/results/gpu-<date>.md.
#   bash bench/gpu.sh            (from the repository root, after `make test` or `make run`
#                                 has created .venv; no internet needed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p bench/results
out="bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# GPU benchmark $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  for precision in fp32 fp16 bf16; do
    for channels_last in false true; do
      echo; echo "## precision=$precision channels_last=$channels_last"
      ATELIER_CUDA_PRECISION=$precision ATELIER_CUDA_CHANNELS_LAST=$channels_last \
        timeout 90 "$PY" bench/predict.py --repeats 10 --skip-http --cuda-only || echo "(failed)"
    done
  done
  echo; echo "## torch.compile (fp16, bucket 128)"
  ATELIER_CUDA_PRECISION=fp16 ATELIER_CUDA_COMPILE=true \
    timeout 150 "$PY" bench/predict.py --repeats 10 --skip-http --cuda-only || echo "(failed)"
  echo; echo "## end to end, fp16"
  ATELIER_CUDA_PRECISION=fp16 timeout 60 "$PY" bench/predict.py --repeats 10 --cuda-only \
    --sizes 1024x576 || echo "(failed)"
  echo; echo "## Gatys"
  timeout 90 "$PY" bench/gatys.py --device cuda --iterations 20 || echo "(failed)"
  echo; echo "## Print size: VRAM against image size (issue 19)"
  timeout 240 "$PY" bench/print_size.py --device cuda --backend torch --sizes 6,12,24 \
    --untiled-max 12 --variants "untiled,tiled exact" || echo "(failed)"
  echo; echo "## Gatys at print size: VRAM, tiled against whole"
  timeout 240 "$PY" bench/gatys_tiles.py --device cuda --sizes 2,4,12 --whole-max 4 \
    || echo "(failed)"
} 2>&1 | tee "$out"
echo "wrote $out"
