"""``/metrics`` for Prometheus, and the count and latency of every request the web server answers.

``/metrics`` needs no login: it shows counts and timings, never DAG, run or user names. It serves
the whole process's registry, so under ``hareflow standalone`` it also shows the scheduler's,
the results consumer's and the worker's metrics. Socket.IO traffic is answered before Flask sees
it and is not counted here (``hareflow_web_socketio_clients`` counts the connections).
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from hareflow.common import metrics

#: The endpoint label of a request no route matched (a 404), so every label value stays bounded.
UNMATCHED = "(unmatched)"
#: The method label: HTTP's own methods, and ``other`` for anything a client invents (each invented
#: method would otherwise add series to /metrics for as long as the process lives).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"


def serve_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _record(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    endpoint = request.endpoint or UNMATCHED
    method = request.method if request.method in METHODS else OTHER
    status = response.status_code if 100 <= response.status_code <= 599 else 0
    metrics.WEB_REQUESTS.labels(method, endpoint, str(status)).inc()
    if started is not None:
        metrics.WEB_REQUEST_SECONDS.labels(method, endpoint).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Register before the security hooks, so a request they refuse is timed too."""
    app.before_request(_start_timer)
    app.after_request(_record)
    app.add_url_rule("/metrics", "metrics", serve_metrics)
