"""The reduced flood CI can afford; `make flood` runs the full one and also holds the
steady client's latency to within 2x of a quiet run (a timing, so a benchmark's figure,
not a test's assertion: docs/RELIABILITY.md, "Limits")."""

from __future__ import annotations

import json

import pytest

from tests.load.flood import run

pytestmark = pytest.mark.e2e


def test_a_flooding_client_is_refused_and_the_steady_one_is_served(redis_url: str):
    result = run(quiet_s=5, flood_s=12, connections=6)
    print("\n" + json.dumps(result))
    flooder, steady = result["flooder"], result["steady_under_flood"]
    assert result["answers_5xx"] == 0
    assert flooder["statuses"].get(429, 0) > flooder["statuses"].get(201, 0)
    assert result["refusals_without_retry_after"] == 0
    assert result["maxima"]["unfinished_jobs"] <= result["limits"]["JOBS_MAX_UNFINISHED"]
    assert result["maxima"]["todos"] <= result["limits"]["TODOS_MAX"]
    # The steady client: every session completed, never refused.
    assert steady["sessions"] >= 6
    assert steady["errors"] == []
    assert set(steady["statuses"]) <= {200, 202}
