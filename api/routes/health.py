"""/api/v1/health (liveness) and /api/v1/health/ready (readiness)."""

from litestar import get
from litestar.di import NamedDependency

from api import queries
from api.database import Database
from api.openapi_docs import errors
from api.schemas import Health


@get("/api/v1/health", tags=["health"], summary="The API process is up")
async def health() -> Health:
    # Liveness: touches neither the database nor the broker, so a container health check
    # does not restart every API task because a dependency blips.
    return Health(status="ok")


@get(
    "/api/v1/health/ready",
    tags=["health"],
    summary="The API can serve: it reaches its database",
    description="200 when a database round trip succeeds; 503 (Retry-After) when it does not. "
    "Load balancers route to a task only while this answers 200, so a task that cannot "
    "reach the database (wrong URL, TLS option or password) never takes traffic.",
    responses=errors(503),
)
async def ready(db: NamedDependency[Database]) -> Health:
    await db.fetch_one(queries.DATABASE_PING)
    return Health(status="ok")
