# Atelier service image. One image runs both roles:
#   API:    atelier serve            (default command)
#   worker: atelier worker           (Gatys jobs on a GPU, Celery + Redis)
# torch 2.14.1 from PyPI is a CUDA build on x86_64: run with `--gpus all` (NVIDIA container
# toolkit) to use the GPU; without one everything runs on the CPU.

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/atelier

# The heavy layer first, so code changes do not reinstall torch.
RUN pip install "torch==2.14.1" "torchvision==0.29.1"

COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .

COPY models ./models
COPY swagger-samples ./swagger-samples

# Official weights (Johnson et al. styles, VGG-19) are fetched and checksummed at build time,
# never at run time. Build with --build-arg FETCH_WEIGHTS=0 on a machine without internet.
ARG FETCH_WEIGHTS=1
RUN if [ "$FETCH_WEIGHTS" = "1" ]; then atelier models fetch --no-progress; fi

RUN useradd --create-home --uid 10001 atelier \
    && mkdir -p /data \
    && chown -R atelier /data /srv/atelier/models
USER atelier

ENV ATELIER_HOST=0.0.0.0 \
    ATELIER_PORT=8000 \
    ATELIER_DATA_DIR=/data \
    ATELIER_MODELS_DIR=/srv/atelier/models

VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"

CMD ["atelier", "serve"]
