"""The chaos tests use the end-to-end fixtures (real processes on the test database)."""

from tests.e2e.conftest import api, processes, service_env

__all__ = ["api", "processes", "service_env"]
