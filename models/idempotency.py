"""Idempotency keys: a client's retried POST answered with the first response, not redone.

One row per (scope, key): claimed before the request runs (``status_code`` NULL: in
progress), completed with the response to replay, deleted if the request failed so it can be
tried again. Rows live at least 24 hours (IDEMPOTENCY_KEY_TTL_S), then the workers purge them
with the expired jobs (models.lifecycle.purge).
"""

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

#: Longest key accepted (the draft sets no limit; Stripe's is 255).
MAX_KEY_LENGTH = 255


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    #: The operation the key was used on ("POST /api/v1/todos"): keys are per operation.
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    #: sha256 of what makes two requests "the same" (method, path, media type, body).
    fingerprint: Mapped[str] = mapped_column(String(64))
    #: NULL while the first request runs; then the response to replay.
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(Text)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
