# One image for every role: scheduler, results, worker, web, init.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/hareflow
COPY pyproject.toml README.md ./
COPY hareflow ./hareflow
COPY common ./common
COPY scheduler ./scheduler
COPY worker ./worker
COPY web ./web
COPY examples ./examples
RUN pip install . && useradd --create-home --uid 1000 hareflow
USER hareflow
ENV HAREFLOW_HOME=/home/hareflow HAREFLOW_DAGS_FOLDER=/opt/dags
ENTRYPOINT ["hareflow"]
CMD ["--help"]
