"""Exclusive ownership of a job while a worker runs it.

Delivery is at-least-once, so two workers can hold the same message (a redelivery after a
heartbeat timeout, a reconciler re-send, a broker hiccup). On Postgres the owner takes a
session-level advisory lock on the job id: a second worker that fails to take it knows the job
is being run right now and drops its copy. If the owner dies, its connection closes and
Postgres releases the lock at once, so a redelivered message can run the job immediately:
the lock is a lease that needs no clock and no heartbeat.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import BigInteger, Connection, Engine, bindparam, func, select

from models.database import connect_autocommit

# Stand-in for other databases (SQLite in single-process runs): a process-local set.
_local_guard = threading.Lock()
_local_held: set[uuid.UUID] = set()


def lock_key(job_id: uuid.UUID) -> int:
    """The signed 64-bit advisory lock key for a job (the first 8 bytes of its uuid4)."""
    return int.from_bytes(job_id.bytes[:8], "big", signed=True)


@contextmanager
def owned_job(engine: Engine, job_id: uuid.UUID) -> Iterator[tuple[Connection, bool]]:
    """A connection for running ``job_id``, and whether it owns the job for the block.

    The connection is in autocommit mode (each statement its own transaction); the lock lives
    as long as the connection's session, so the connection stays checked out for the block.
    The lock is its first statement, retried on a fresh connection if the pooled one had died
    (``connect_autocommit``): nothing has happened yet then.
    """
    conn, acquired = connect_autocommit(engine, lambda conn: _try_lock(conn, job_id))
    with conn:
        try:
            yield conn, acquired
        finally:
            if acquired:
                _release(conn, job_id)


_TRY_LOCK = select(func.pg_try_advisory_lock(bindparam("key", type_=BigInteger)))
_UNLOCK = select(func.pg_advisory_unlock(bindparam("key", type_=BigInteger)))


def _try_lock(conn: Connection, job_id: uuid.UUID) -> bool:
    if conn.dialect.name != "postgresql":
        with _local_guard:
            acquired = job_id not in _local_held
            _local_held.add(job_id)
        return acquired
    acquired = bool(conn.execute(_TRY_LOCK, {"key": lock_key(job_id)}).scalar())
    conn.commit()  # ends SQLAlchemy's (autocommit: client-side only) transaction
    return acquired


def _release(conn: Connection, job_id: uuid.UUID) -> None:
    if conn.dialect.name != "postgresql":
        with _local_guard:
            _local_held.discard(job_id)
        return
    try:
        conn.rollback()  # leave no transaction open around the unlock
        conn.execute(_UNLOCK, {"key": lock_key(job_id)})
        conn.commit()
    except Exception:
        # Could not unlock (the connection broke, or the database went away). Never hand a
        # connection that may still hold the lock back to the pool: closing it frees the lock.
        conn.invalidate()
