"""Serving a job's result without loading it: the stored gzip (models.results) read a slice
at a time, sent as it is to a client that accepts gzip, decompressed on the way otherwise.

The first slice comes with the job's state in one round trip, so a small result (nearly all
of them: a 1,000-todo calendar is ~10 kB stored) costs what it did when it was text. A large
one takes a round trip per ``READ_CHUNK`` of stored bytes, each on a connection held only
for that statement: a slow client never holds a database connection. Memory per download is
one slice plus one decompressed piece (``DECODED_CHUNK``), whatever the result's size.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from sqlalchemy import Integer, LargeBinary, bindparam, func, select, type_coerce

from api.database import Database, Query
from models import Job
from models.results import GZIP_WBITS, READ_CHUNK

log = structlog.get_logger("api")

#: Decompressed bytes handed to the server per send: bounded memory for a client that does
#: not take gzip (a 1 MiB slice of a calendar is ~15 MiB of text).
DECODED_CHUNK = 256 * 1024

_STORED = type_coerce(Job.result, LargeBinary)  # the gzip bytes, not the column's text type


def _slice(start: Any) -> Any:
    return type_coerce(func.substr(_STORED, start, bindparam("count", type_=Integer)), LargeBinary)


#: The result route's one round trip for most results: the state, when the result expires,
#: its sizes (text, stored) and its first slice.
RESULT_HEAD = Query(
    select(
        Job.status,
        Job.error,
        Job.expires_at,
        Job.result_bytes,
        func.length(_STORED),
        _slice(1),
    ).where(Job.id == bindparam("id"))
)

#: The next slice of a large result (``start`` counts from 1, as SQL's substr does).
RESULT_SLICE = Query(
    select(_slice(bindparam("start", type_=Integer))).where(Job.id == bindparam("id"))
)


class ResultGone(Exception):
    """The result went away mid-download (purged at its expiry, or the job deleted)."""


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value (RFC 9110 §12.5.3) allows gzip."""
    if not accept_encoding:
        return False
    star = False
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        weight = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value)
            except ValueError:
                weight = 0.0  # unreadable: not a preference we can honour
        if coding in ("gzip", "x-gzip"):
            return weight > 0
        if coding == "*":
            star = weight > 0
    return star


async def stored_slices(
    db: Database, job_id: uuid.UUID, first: bytes, stored: int
) -> AsyncIterator[bytes]:
    """The stored bytes, ``first`` then a slice per round trip until ``stored`` are sent."""
    yield first
    sent = len(first)
    while sent < stored:
        row = await db.fetch_one(RESULT_SLICE, id=job_id, start=sent + 1, count=READ_CHUNK)
        piece = None if row is None else row[0]
        if not piece:
            # The answer's length is promised already: the connection is cut, so the client
            # sees a short download rather than a wrong one.
            log.warning("result gone mid-download", job_id=str(job_id), sent=sent, stored=stored)
            raise ResultGone(f"job {job_id}: result gone after {sent} of {stored} bytes")
        yield bytes(piece)
        sent += len(piece)


async def decompressed(slices: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The text of a gzip stream, in pieces of at most DECODED_CHUNK bytes."""
    decoder = zlib.decompressobj(GZIP_WBITS)
    async for piece in slices:
        pending = piece
        while True:
            text = decoder.decompress(pending, DECODED_CHUNK)
            pending = decoder.unconsumed_tail
            if text:
                yield text
            # A full piece may leave output inside the decoder even with no input left.
            if not pending and len(text) < DECODED_CHUNK:
                break
    rest = decoder.flush()
    if rest:
        yield rest
    if not decoder.eof:
        raise ResultGone("stored result ends before its gzip stream does")
