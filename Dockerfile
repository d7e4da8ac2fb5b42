# pdscaler's image. Build from the repository root:
#
#   docker build -t ghcr.io/pdscaler/pdscaler:0.1.0 .
#
# The first stage installs pdscaler and its runtime dependencies (no development tools)
# into a virtualenv; the second copies only that virtualenv onto a clean base, and runs as
# an unprivileged user with uid 10001, which the Kubernetes manifests expect.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/pdscaler
WORKDIR /src
# Only what the wheel is built from: the package, the migrations and example policies it
# bundles, and the project metadata (.dockerignore keeps everything else out).
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY policies ./policies
COPY pdscaler ./pdscaler
RUN /opt/pdscaler/bin/pip install .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 pdscaler \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin pdscaler \
 && mkdir -p /var/lib/pdscaler \
 && chown 10001:10001 /var/lib/pdscaler
COPY --from=build /opt/pdscaler /opt/pdscaler
# OMP_NUM_THREADS: forecast fits run beside the API and the tick, on one thread each.
ENV PATH=/opt/pdscaler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PDSCALER_API__HOST=0.0.0.0 \
    PDSCALER_DATA_DIR=/var/lib/pdscaler \
    OMP_NUM_THREADS=1
WORKDIR /var/lib/pdscaler
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["pdscaler"]
CMD ["serve"]
