"""``/metrics``: served to Prometheus without a login, counting the web server's own requests and
Socket.IO connections. The registry is the whole process's, so values are compared before and after."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from hareflow.web import socketio_of
from prometheus_client.parser import text_string_to_metric_families

from tests.web.conftest import Client


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.status_code
    assert response.content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_served_without_a_login_and_show_every_part_of_the_process(anon: FlaskClient) -> None:
    response = anon.get("/metrics")
    assert response.status_code == 200  # not a redirect to the login page
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {
        "hareflow_web_requests",
        "hareflow_web_request_seconds",
        "hareflow_web_socketio_clients",
        "hareflow_scheduler_loop_seconds",
        "hareflow_task_duration_seconds",
        "hareflow_results_commit_seconds",
    } <= names


def test_each_request_is_counted_by_endpoint_and_status_and_timed(anon: FlaskClient, viewer: Client) -> None:
    before = scrape(anon)
    for _ in range(3):
        assert viewer.get("/api/v1/me").status_code == 200
    assert anon.get("/api/v1/me").status_code == 401
    assert anon.get("/no/such/page").status_code in (302, 404)
    after = scrape(anon)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    me = {"method": "GET", "endpoint": "api.me"}
    assert delta("hareflow_web_requests_total", **me, status="200") == 3
    assert delta("hareflow_web_requests_total", **me, status="401") == 1
    assert delta("hareflow_web_request_seconds_count", **me) == 4
    assert delta("hareflow_web_requests_total", method="GET", endpoint="metrics", status="200") == 1
    unmatched = sum(
        delta("hareflow_web_requests_total", method="GET", endpoint="(unmatched)", status=str(code))
        for code in (302, 404)
    )
    assert unmatched == 1


def test_socket_connections_are_counted_while_open_and_refused_ones_never(
    app: Flask, anon: FlaskClient, viewer: Client
) -> None:
    baseline = sample(scrape(anon), "hareflow_web_socketio_clients")
    refused = socketio_of(app).test_client(app, flask_test_client=app.test_client())
    assert not refused.is_connected()
    socket = socketio_of(app).test_client(app, flask_test_client=viewer.http)
    try:
        assert socket.is_connected()
        assert sample(scrape(anon), "hareflow_web_socketio_clients") == baseline + 1
    finally:
        socket.disconnect()
    assert sample(scrape(anon), "hareflow_web_socketio_clients") == baseline


def test_invented_methods_and_paths_add_no_series_to_the_metrics(anon: FlaskClient) -> None:
    import random
    import string

    def series() -> int:
        return sum(1 for name, _ in scrape(anon) if name.startswith("hareflow_web_request"))

    rng = random.Random(7)
    # One request of each kind first, so the bounded label values exist before counting.
    anon.open("/no/such/page", method="BREW")
    anon.get("/metrics")
    before = series()
    for _ in range(300):
        method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
        path = "/" + "/".join(
            "".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(rng.randint(1, 3))
        )
        anon.open(path, method=method)
    assert series() == before
