"""/api/v1/health: liveness for load balancers and container healthchecks."""

from litestar import get

from api.schemas import Health


@get("/api/v1/health", tags=["health"], summary="The API process is up")
async def health() -> Health:
    # Deliberately touches neither the database nor the broker: a load balancer should not
    # take every API task out of service because a dependency blips.
    return Health(status="ok")
