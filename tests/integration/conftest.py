"""Integration fixtures: the real app on the real test database and Redis."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from api.app import create_app
from models.settings import Settings
from tests.services import ROOT, migrate, scratch_database


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """An HTTP client for the app (``engine`` first, so the tables start empty)."""
    with TestClient(create_app(settings), base_url="http://testserver.local") as client:
        yield client


#: Rows of each big table in ``database_at_size``.
AT_SIZE = 1_000_000


def _fill_tables() -> Any:
    """ops/dev/fill_tables.py, loaded from its file (ops is scripts, not a package)."""
    path = Path(ROOT) / "ops" / "dev" / "fill_tables.py"
    spec = importlib.util.spec_from_file_location("fill_tables", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def database_at_size() -> Iterator[str]:
    """A database of its own, migrated to head and holding ``AT_SIZE`` todos and as many
    finished jobs (each with its attempt), analysed: for reading plans and timings at size.

    Read-only by convention: tests using it must change nothing, or roll back what they do
    (the ``engine`` fixture's truncation is of the per-run ``database_url``, never of this
    one). Filling takes about a minute, once per run that asks for it.
    """
    with scratch_database("taskoverflow_at_size") as url:
        migrate(url)
        counts = _fill_tables().fill(url, todos=AT_SIZE, jobs=AT_SIZE)
        assert counts == {"todos": AT_SIZE, "jobs": AT_SIZE}, counts
        yield url
