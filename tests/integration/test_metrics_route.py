"""The API's /metrics route: served by default, gone (every spelling of it) when turned off."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from api.app import create_app
from tests.conftest import make_settings


@pytest.mark.parametrize("path", ["/metrics", "//metrics", "/metrics/"])
def test_api_metrics_off_serves_no_metrics_by_any_path(database_url: str, path: str):
    """API_METRICS=false (the ECS task's setting): no route, whatever a proxy lets through."""
    app = create_app(make_settings(database_url, API_METRICS="false"))
    with TestClient(app) as client:
        assert client.get("/api/v1/health").status_code == 200
        # A whole URL: httpx reads a bare "//metrics" as a host named "metrics".
        response = client.get(f"{client.base_url}{path}")
    assert response.request.url.raw_path == path.encode()
    assert response.status_code == 404, response.text
    assert "taskoverflow_" not in response.text


def test_api_metrics_on_counts_requests_by_route_template(database_url: str):
    app = create_app(make_settings(database_url))
    with TestClient(app) as client:
        for _ in range(3):
            assert client.get("/api/v1/jobs/not-a-job").status_code == 404
        body = client.get("/metrics").text
    # Three under the template, never under the raw path (a series per id would never end).
    assert (
        'taskoverflow_http_requests_total{method="GET",route="/api/v1/jobs/{job_id}",'
        'status="404"} 3.0'
    ) in body
    assert "not-a-job" not in body
