"""Integration fixtures: the real app on the real test database and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from api.app import create_app
from models.settings import Settings


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """An HTTP client for the app (``engine`` first, so the tables start empty)."""
    with TestClient(create_app(settings), base_url="http://testserver.local") as client:
        yield client
