# syntax=docker/dockerfile:1
# The taxi_assets user-code image: serves the code location on port 4000 with `dagster code-server start`,
# and runs its runs (Docker and Kubernetes run launchers start this image for each run). The compose file
# also uses it for the webserver and the daemon, so every process has the same Dagster version.
#
#   docker build -t taxi-assets:0.1.0 .
#
# Reproducible: the base image is pinned (override PYTHON_IMAGE with a digest, python:3.11.13-slim-bookworm@sha256:...,
# to pin it exactly) and every Python package comes from deploy/requirements.lock.txt with --no-deps.
# No build tools in the final stage (every dependency ships as a wheel), no secrets: configuration comes
# from environment variables at run time (docs/DEPLOYMENT.md).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes, not on every code change.
COPY deploy/requirements.lock.txt deploy/requirements.lock.txt
RUN pip install --no-deps --only-binary=:all: -r deploy/requirements.lock.txt
COPY setup.py pyproject.toml ./
COPY taxi_assets ./taxi_assets
# The project itself, built with the locked setuptools/wheel, without fetching anything else.
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
ARG UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    TAXI_DATA_DIR=/data
RUN groupadd --system --gid ${UID} taxi \
    && useradd --system --uid ${UID} --gid taxi --home-dir /opt/dagster --no-create-home \
        --shell /usr/sbin/nologin taxi \
    && mkdir -p /opt/dagster/dagster_home /opt/dagster/logs /opt/dagster/app /data \
    && chown -R taxi:taxi /opt/dagster /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/dagster/app
USER ${UID}:${UID}
EXPOSE 4000
# Health: `dagster api grpc-health-check -p 4000` (set in docker-compose.yml and by the Helm chart).
CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "4000", \
     "--module-name", "taxi_assets", "--location-name", "taxi_assets"]
