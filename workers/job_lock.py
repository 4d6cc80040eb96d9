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

from sqlalchemy import Connection, func, select

# Stand-in for other databases (SQLite in single-process runs): a process-local set.
_local_guard = threading.Lock()
_local_held: set[uuid.UUID] = set()


def lock_key(job_id: uuid.UUID) -> int:
    """The signed 64-bit advisory lock key for a job (the first 8 bytes of its uuid4)."""
    return int.from_bytes(job_id.bytes[:8], "big", signed=True)


@contextmanager
def job_lock(conn: Connection, job_id: uuid.UUID) -> Iterator[bool]:
    """Try to own ``job_id`` for the duration of the block; yields whether it was acquired.

    ``conn`` must stay checked out for the whole block: the lock belongs to its session.
    """
    if conn.dialect.name != "postgresql":
        with _local_guard:
            acquired = job_id not in _local_held
            _local_held.add(job_id)
        try:
            yield acquired
        finally:
            if acquired:
                with _local_guard:
                    _local_held.discard(job_id)
        return

    key = lock_key(job_id)
    acquired = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar())
    conn.commit()
    try:
        yield acquired
    finally:
        if acquired:
            _release(conn, key)


def _release(conn: Connection, key: int) -> None:
    try:
        conn.rollback()  # leave no transaction open around the unlock
        conn.execute(select(func.pg_advisory_unlock(key)))
        conn.commit()
    except Exception:
        # Could not unlock (the connection broke, or the database went away). Never hand a
        # connection that may still hold the lock back to the pool: closing it frees the lock.
        conn.invalidate()
