# syntax=docker/dockerfile:1
# One image for every role: init, scheduler, results, worker, web. The command picks the role:
#   docker run hareflow:latest worker --queues default --concurrency 8
# Build stage: turn the source into a wheel, so the runtime image carries no build tools.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hareflow ./hareflow
COPY common ./common
COPY scheduler ./scheduler
COPY worker ./worker
COPY web ./web
COPY examples ./examples
RUN pip wheel --wheel-dir /wheels .

# Runtime stage: the wheel and its dependencies, run by an unprivileged user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels hareflow \
    && groupadd --gid 10001 hareflow \
    && useradd --uid 10001 --gid hareflow --create-home --home-dir /home/hareflow hareflow \
    && mkdir -p /opt/dags \
    && chown hareflow:hareflow /opt/dags
USER hareflow
WORKDIR /home/hareflow
# HAREFLOW_HOME holds the health reports `hareflow health` reads; /opt/dags is where compose
# mounts the DAG files (the same path on every host).
ENV HAREFLOW_HOME=/home/hareflow HAREFLOW_DAGS_FOLDER=/opt/dags
EXPOSE 8080
ENTRYPOINT ["hareflow"]
CMD ["--help"]
