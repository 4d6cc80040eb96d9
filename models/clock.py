"""Time as the database stores it: naive datetimes that mean UTC."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now in UTC, without tzinfo (the columns are ``timestamp without time zone``)."""
    return datetime.now(UTC).replace(tzinfo=None)
