"""What the limits (docs/RELIABILITY.md, "Limits") keep in the database.

- ``todo_counts``: one row, the number of todos and of dated ones (the calendar's events),
  kept by triggers on ``todos`` (migration 0007) whoever writes it, the API or a bulk load.
  Checking a quota is then reading one row, not counting a table of a million rows, and the
  API's insert locks that row (``FOR UPDATE``) so concurrent creations cannot overshoot.
- ``rate_limits``: each client's rate-limit state, for API processes that share no Redis
  (``RATE_LIMIT_STORE=postgres``, ECS): UNLOGGED, as losing it in a crash only forgives
  some requests, and it is not worth writing ahead.
"""

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Float, String, true
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class TodoCounts(Base):
    __tablename__ = "todo_counts"
    __table_args__ = (CheckConstraint("id", name="single_row"),)

    #: Always true: the table has one row.
    id: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=true())
    todos: Mapped[int] = mapped_column(BigInteger)
    #: Todos with a deadline: the events of a calendar export.
    dated: Mapped[int] = mapped_column(BigInteger)


class RateLimit(Base):
    __tablename__ = "rate_limits"
    __table_args__ = {"prefixes": ["UNLOGGED"]}  # noqa: RUF012 (SQLAlchemy's declaration)

    #: The policy and the client (``writes:ip:203.0.113.9``).
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    #: GCRA's theoretical arrival time, in seconds since the epoch (the database's clock, so
    #: every API process measures time alike).
    tat: Mapped[float] = mapped_column(Float)
