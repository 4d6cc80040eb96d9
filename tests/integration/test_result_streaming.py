"""A job's result is served without being loaded: read from the database a slice at a time,
sent as stored (gzip) to clients that accept it and decompressed on the way otherwise.

The memory tests measure the API's own code (tracemalloc around the generators the result
route streams from) and a real API process (its resident memory while it serves a download),
and show that the bound they use catches a result loaded whole, as the route used to.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import threading
import time
import tracemalloc
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, LargeBinary, bindparam, select, text, type_coerce

from api.database import Database, Query, create_api_engine
from api.results import (
    DECODED_CHUNK,
    RESULT_HEAD,
    ResultGone,
    accepts_gzip,
    decompressed,
    stored_slices,
)
from models import Job, lifecycle
from models.results import GZIP_WBITS, READ_CHUNK, StoredResult, gzip_lines
from models.settings import Settings
from tests.integration.jobs import insert_job
from tests.processes import free_port, start_api

KEEP = timedelta(hours=1)


def calendar_like(events: int, *, seed: int = 7) -> list[str]:
    """Lines shaped like a calendar's, with some non-ASCII text and enough variety that
    the stored gzip spans several slices at these sizes."""
    rng = random.Random(seed)
    lines = ["BEGIN:VCALENDAR\r\n"]
    for i in range(events):
        noise = f"{rng.getrandbits(64):016x}"
        lines.append(
            f"BEGIN:VEVENT\r\nUID:{i}@t\r\nSUMMARY:caf\u00e9 \u2603 {noise}\r\nEND:VEVENT\r\n"
        )
    lines.append("END:VCALENDAR\r\n")
    return lines


def store(engine: Engine, lines: list[str]) -> tuple[uuid.UUID, StoredResult]:
    """A SUCCESS job holding ``lines`` as its result, written as the worker writes it."""
    job_id = insert_job(engine, status="STARTED")
    result = gzip_lines(lines)
    with engine.begin() as conn:
        assert lifecycle.succeed(conn, job_id, result, KEEP)
    return job_id, result


def result_url(job_id: uuid.UUID) -> str:
    return f"/api/v1/todos/ical/{job_id}/result"


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        (None, False),
        ("", False),
        ("identity", False),
        ("gzip", True),
        ("GZip", True),
        ("x-gzip", True),
        ("br, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0, *", False),  # named with q=0: refused, whatever * says
        ("*", True),
        ("*;q=0", False),
        ("deflate, br", False),
        ("gzip;q=abc", False),
    ],
)
def test_accept_encoding_is_read_as_rfc_9110_says(header, gzip_ok):
    assert accepts_gzip(header) is gzip_ok


@pytest.mark.parametrize("events", [40, 150_000])  # one slice; several slices
def test_the_result_reads_back_identical_either_way_it_is_sent(client: TestClient, engine, events):
    lines = calendar_like(events)
    job_id, result = store(engine, lines)
    text_bytes = "".join(lines).encode()
    assert (len(result.data) > 2 * READ_CHUNK) is (events > 40)

    plain = client.get(result_url(job_id), headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.content == text_bytes
    assert plain.headers["content-type"].startswith("text/calendar")
    assert plain.headers["content-length"] == str(len(text_bytes))
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"

    with client.stream("GET", result_url(job_id), headers={"Accept-Encoding": "gzip"}) as packed:
        raw = b"".join(packed.iter_raw())
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["content-length"] == str(len(result.data))
    assert raw == result.data  # sent as stored
    assert gzip.decompress(raw) == text_bytes


def test_a_result_purged_mid_download_cuts_the_download_short(settings: Settings, engine):
    """Past its first slice the answer's length is promised: a result that goes away (its
    expiry purge) must end the download short, never finish it with other bytes."""
    job_id, result = store(engine, calendar_like(150_000))
    assert len(result.data) > 2 * READ_CHUNK

    async def read() -> int:
        api_engine = create_api_engine(settings.database, application_name="test")
        db = Database(api_engine)
        try:
            row = await db.fetch_one(RESULT_HEAD, id=job_id, count=READ_CHUNK)
            assert row is not None
            got = 0
            async for piece in stored_slices(db, job_id, bytes(row[5]), row[4]):
                got += len(piece)
                with engine.begin() as conn:  # purged as soon as the first slice is out
                    conn.execute(
                        text("UPDATE jobs SET result = NULL WHERE id = :id"), {"id": job_id}
                    )
            return got
        finally:
            await api_engine.dispose()

    with pytest.raises(ResultGone, match="result gone after"):
        asyncio.run(read())


# --- memory ----------------------------------------------------------------------------------

#: A download may hold this much of the API's memory, whatever the result's size: a slice,
#: a decompressed piece, and the database driver's buffers.
BOUND_MIB = 8

#: ~64 MB of text, ~4 MB stored: large enough that a whole load is far over the bound.
BIG_EVENTS = 800_000


def _big(engine: Engine) -> tuple[uuid.UUID, StoredResult]:
    lines = []
    for i in range(BIG_EVENTS):  # compresses like a real calendar (~15x)
        lines.append(
            f"BEGIN:VEVENT\r\nUID:{i}@taskoverflow.test\r\nSUMMARY:Todo {i}\r\nEND:VEVENT\r\n"
        )
    return store(engine, lines)


def peak_mib(settings: Settings, serve: Callable[[Database], Awaitable[int]]) -> tuple[float, int]:
    """The peak of Python allocations (MiB) while ``serve`` runs, and what it returned."""

    async def run() -> tuple[float, int]:
        api_engine = create_api_engine(settings.database, application_name="test")
        db = Database(api_engine)
        try:
            await db.fetch_one(RESULT_HEAD, id=uuid.uuid4(), count=1)  # pool and codecs warm
            tracemalloc.start()
            try:
                served = await serve(db)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            return peak / 2**20, served
        finally:
            await api_engine.dispose()

    return asyncio.run(run())


async def _drain(pieces: AsyncIterator[bytes]) -> int:
    """What a server does with a streamed body: send each piece, keep none."""
    total = 0
    async for piece in pieces:
        assert len(piece) <= max(READ_CHUNK, DECODED_CHUNK)
        total += len(piece)
    return total


async def _streamed(db: Database, job_id: uuid.UUID, *, gzip: bool) -> int:
    row = await db.fetch_one(RESULT_HEAD, id=job_id, count=READ_CHUNK)
    assert row is not None
    slices = stored_slices(db, job_id, bytes(row[5]), row[4])
    return await _drain(slices if gzip else decompressed(slices))


#: What the result route did before: the whole value in one statement (then decompressed).
_WHOLE = Query(select(type_coerce(Job.result, LargeBinary)).where(Job.id == bindparam("id")))


@pytest.mark.parametrize("gzip_ok", [False, True], ids=["identity", "gzip"])
def test_serving_a_large_result_holds_a_slice_not_the_result(settings, engine, gzip_ok):
    job_id, result = _big(engine)
    peak, served = peak_mib(settings, lambda db: _streamed(db, job_id, gzip=gzip_ok))
    assert served == (len(result.data) if gzip_ok else result.size)
    assert result.size > 7 * BOUND_MIB * 2**20  # ~58 MiB of text
    assert peak < BOUND_MIB, f"{peak:.1f} MiB held while serving a {result.size >> 20} MiB result"


def test_the_memory_bound_fails_a_result_loaded_whole(settings, engine):
    """The check above, on the way the route used to serve: the whole stored value read in
    one statement and decompressed at once. It must be far over the bound."""
    job_id, result = _big(engine)

    async def whole(db: Database) -> int:
        row = await db.fetch_one(_WHOLE, id=job_id)
        assert row is not None
        return len(zlib.decompress(bytes(row[0]), GZIP_WBITS))

    peak, served = peak_mib(settings, whole)
    assert served == result.size
    assert peak > 4 * BOUND_MIB, "a whole load must fail the streaming bound"


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_real_api_process_serves_a_large_result_in_bounded_memory(
    service_env, processes, engine, encoding
):
    """The API as it runs (uvicorn), downloaded by a client reading as it arrives: its
    resident memory grows by a bounded amount, however large the result."""
    job_id, result = _big(engine)
    port = free_port()
    api = start_api(service_env, port)
    processes.append(api)
    url = f"http://127.0.0.1:{port}{result_url(job_id)}"
    httpx.get(url.replace("/result", "/status"))  # a first request: the process warmed up
    before = _rss_mib(api.popen.pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mib(api.popen.pid))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        received = 0
        with httpx.stream("GET", url, headers={"Accept-Encoding": encoding}, timeout=60) as answer:
            assert answer.status_code == 200
            for piece in answer.iter_raw():
                received += len(piece)
    finally:
        done.set()
        sampler.join()
    assert received == (len(result.data) if encoding == "gzip" else result.size)
    growth = peak - before
    assert growth < 4 * BOUND_MIB, f"the API grew {growth:.1f} MiB serving {result.size >> 20} MiB"
