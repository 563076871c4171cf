# qrng-dd container image: one image, every role.
#   docker build -t qrng-dd .
#   docker build --build-arg BASE_IMAGE=qrng-dd-base:bookworm -t qrng-dd .   # no registry:
#                                                   # deploy/base-image.sh builds that base
#   docker run --rm qrng-dd keygen
#   docker run --env-file .env -p 7764:7764 qrng-dd            # gateway (default CMD)
#   docker run --env-file .env qrng-dd collector                # collector (no listening socket)
#
# Stage 1 builds the package into a virtual environment; stage 2 copies only that
# venv onto a clean base: no pip cache, no build backend, no compilers, no sources.
#
# BASE_IMAGE is any Debian-like image with Python 3.11, venv and useradd: the official slim
# image for those who can pull it, or qrng-dd-base:bookworm from deploy/base-image.sh (Debian
# packages only) where no registry is reachable. Both stages use it, so the venv's interpreter
# is the same binary at build and at run time.
#
# Offline: a wheelhouse in ./wheels (`pip wheel --wheel-dir wheels . hatchling` on any host
# with Python 3.11 that reaches PyPI) makes the build install from it alone (`--no-index`),
# so `docker build --network none` works. Without ./wheels the build installs from PyPI.
# (No `# syntax=` line on purpose: BuildKit would pull its frontend image from Docker Hub.)

ARG BASE_IMAGE=python:3.11-slim-bookworm

############################ builder ############################
FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv
RUN python3 -m venv "$VIRTUAL_ENV"
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /build
# Metadata first (README.md is the project's readme: hatchling refuses to build without it),
# then the sources. Every runtime dependency ships binary wheels for linux/amd64 and arm64,
# so nothing is compiled here.
COPY pyproject.toml README.md ./
COPY src ./src
# The optional wheelhouse. `wheel[s]` matches nothing when ./wheels is absent; README.md
# rides along only because the classic builder refuses a COPY that matches no file at all.
COPY README.md wheel[s] ./wheels/
RUN if ls wheels/*.whl >/dev/null 2>&1; then \
        pip install --no-index --find-links wheels . ; \
    else \
        pip install --upgrade pip && pip install . ; \
    fi \
 && qrng-dd --version \
 && pip uninstall --yes --quiet pip setuptools

############################ runtime ############################
FROM ${BASE_IMAGE} AS runtime
ARG BASE_IMAGE

LABEL org.opencontainers.image.title="qrng-dd" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.description="Software data diode for quantum entropy: collector inside, gateway outside, one-way push." \
      org.opencontainers.image.licenses="MIT"

# Fixed numeric ids so Kubernetes runAsNonRoot can verify them, no home, no shell.
# /var/lib/qrng-dd: the gateway's QRNG_STATE_DIR (sequence numbers only, never entropy); a
# named volume mounted there starts with this owner and mode.
RUN groupadd --system --gid 10001 qrng \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin qrng \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/qrng-dd

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:$PATH" \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    QRNG_LOG_FORMAT=json

USER 10001:10001
WORKDIR /tmp

# 7764: gateway REST API, /push, /health, /metrics.  (8080: `qrng-dd mcp --transport http`;
# 7765/udp: optional one-way UDP push when QRNG_UDP_LISTEN is set.)
EXPOSE 7764

# No curl in the image: the health check is a python one-liner. Any non-200 answer
# (503 when the pool is under 10%) or no answer raises, and a raise exits non-zero.
# It only makes sense for the gateway: the collector has no listening socket by design,
# so Compose/Kubernetes disable or replace it for the collector.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('QRNG_PORT', '7764'), timeout=4)"]

ENTRYPOINT ["qrng-dd"]
CMD ["gateway"]
