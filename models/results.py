"""How a job's result is kept: gzip in ``jobs.result``, compressed as it is rendered.

A calendar of a million todos is ~160 MB of text. Kept as text, the worker held it several
times over while writing it (the string, its UTF-8 bytes, the escaped statement: 843 MiB at
the peak) and the API loaded it whole to serve it (+300 MiB per download). Kept as one gzip
stream (level 1: ~15x smaller for calendars, at ~250 MB/s on one core), the worker holds
only the compressed bytes (11 MB for that calendar) and the API reads the stored value in
slices (``READ_CHUNK``), sending them as they are to a client that accepts gzip and
decompressing them a slice at a time for one that doesn't. Postgres stores the value out of
line without compressing it again (STORAGE EXTERNAL, migration 0009), so reading a slice
reads only the pages that hold it. The measurements: docs/BENCHMARKS.md, P8.

``GzipText`` makes the column read and write as text through SQLAlchemy (the ORM, tests, the
console); the worker and the API's result endpoint handle the compressed bytes directly.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import LargeBinary
from sqlalchemy.types import TypeDecorator

#: zlib's fastest level: ~3x faster than the default 6 on calendars, for <1 % more bytes.
GZIP_LEVEL = 1
#: wbits for a gzip container (RFC 1952), what HTTP's ``Content-Encoding: gzip`` means.
GZIP_WBITS = 16 + zlib.MAX_WBITS
#: Text is compressed in batches of about this many characters: one call per batch keeps
#: zlib's per-call cost out of a per-event loop, and memory bounded by the batch.
_BATCH_CHARS = 256 * 1024
#: Stored bytes read per database round trip when serving a result (``api``): large enough
#: that a million-todo calendar (11 MB stored) takes a dozen round trips, small enough to
#: keep a download's memory a fraction of a MiB per slice.
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A result as stored: ``data`` (gzip) and ``size``, the length of the text in bytes."""

    data: bytes
    size: int

    def text(self) -> str:
        """The whole text (for small results and tests: a large one is read in slices)."""
        return zlib.decompress(self.data, GZIP_WBITS).decode("utf-8")


def gzip_lines(lines: Iterable[str]) -> StoredResult:
    """Compress ``lines`` (already terminated) as they come; only the compressed bytes and
    one batch of text are held at a time."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    parts: list[bytes] = []
    batch: list[str] = []
    held = size = 0
    for line in lines:
        batch.append(line)
        held += len(line)
        if held >= _BATCH_CHARS:
            data = "".join(batch).encode("utf-8")
            size += len(data)
            parts.append(compressor.compress(data))
            batch.clear()
            held = 0
    data = "".join(batch).encode("utf-8")
    size += len(data)
    parts.append(compressor.compress(data))
    parts.append(compressor.flush())
    return StoredResult(b"".join(parts), size)


def gzip_text(text: str) -> StoredResult:
    """One text as a stored result."""
    return gzip_lines((text,))


class GzipText(TypeDecorator[str]):
    """A text column stored as gzip bytes: text in, text out, for SQLAlchemy's users of it."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return None if value is None else gzip_text(value).data

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else zlib.decompress(value, GZIP_WBITS).decode("utf-8")
