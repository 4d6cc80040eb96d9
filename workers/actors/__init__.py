"""Actors: thin shells that open resources and call plain functions (``workers.lifecycle``)."""

import dramatiq

from workers.actors.calendar import register_calendar_actor


def register_actors(broker: dramatiq.Broker, queue_name: str) -> None:
    """Declare every actor on ``broker`` (called once per process, after the broker is set)."""
    register_calendar_actor(broker, queue_name)
