# Atelier service image. One image runs every role:
#   API:     atelier serve                  (default command)
#   workers: atelier worker --kind gatys    (or training, video: one Celery queue per job kind)
#
# Two stages. `build` installs everything into a virtual environment at /opt/venv, fetches the
# official weights and then removes the venv's pip and setuptools; `runtime` copies only that venv,
# the weights and the sample photos onto a fresh python:3.11-slim whose own pip and setuptools it
# removes too, so the image that runs has no compiler, no build tools and no installer.
#
# torch 2.14.1 from PyPI is the CUDA build on x86_64 (its CUDA runtime, cuDNN and NCCL come as
# nvidia-* wheels): run with `--gpus all` (NVIDIA container toolkit) or on a Kubernetes node with
# the NVIDIA device plugin to use the GPU; without one everything runs on the CPU.
#
# Expected size (x86_64, uncompressed, as `docker image ls` shows it): about 6.7 GB. The venv is
# about 6.0 GB (torch, its nvidia-* CUDA wheels and triton alone 5.3 GB; measured on the same
# pinned install outside Docker), the fetched weights about 0.6 GB (VGG-19 575 MB and the four
# pytorch/examples styles) and the python:3.11-slim base about 0.13 GB. Registries store it
# compressed, roughly 3.5 GB. See README.md, "Deploying on Kubernetes".

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The heavy layer first, so code changes do not reinstall torch.
RUN pip install --no-cache-dir "torch==2.14.1" "torchvision==0.29.1"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
# A regular (not editable) install: the package data (web assets, style thumbnails' photos,
# the Alembic migrations under app/migrations) ships inside site-packages.
RUN pip install --no-cache-dir . \
    && rm -rf /src/build /src/*.egg-info

# Committed weights and the manifest; official weights are fetched and checksummed here, at build
# time, never at run time. Build with --build-arg FETCH_WEIGHTS=0 on a machine without internet.
# Then the venv loses its installer: the runtime stage copies it as it is.
COPY models /srv/atelier/models
ARG FETCH_WEIGHTS=1
RUN if [ "$FETCH_WEIGHTS" = "1" ]; then \
        ATELIER_MODELS_DIR=/srv/atelier/models atelier models fetch --no-progress; \
    fi \
    && python -m pip uninstall --yes --quiet pip setuptools


FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

# No installer in the running image: the base image's own pip and setuptools go too.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --gid 10001 atelier \
    && useradd --create-home --uid 10001 --gid 10001 atelier \
    && mkdir -p /data \
    && chown atelier:atelier /data

COPY --from=build /opt/venv /opt/venv
COPY --from=build /srv/atelier/models /srv/atelier/models
COPY swagger-samples /srv/atelier/swagger-samples

WORKDIR /srv/atelier
USER 10001:10001

# State (converted-weight cache, thumbnails; the job table too when no database is configured)
# goes to /data; the models folder is read-only at run time.
ENV ATELIER_HOST=0.0.0.0 \
    ATELIER_PORT=8000 \
    ATELIER_DATA_DIR=/data \
    ATELIER_MODELS_DIR=/srv/atelier/models

VOLUME ["/data"]
EXPOSE 8000

# The API's readiness (networks loaded). Worker containers run no HTTP server: docker-compose.yml
# disables this check for them, and Kubernetes ignores HEALTHCHECK (it has its own probes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]

CMD ["atelier", "serve"]
