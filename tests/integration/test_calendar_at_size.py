"""A million-event calendar, rendered by the worker's code and downloaded through the API:
every todo on it once, with its own data, in deadline order, and valid RFC 5545 throughout.

No timings (``make bench``, P8, has them). The text (~160 MB) is checked as it arrives, an
event at a time; icalendar, the reference parser, reads its first and last events (all of it
would take minutes and gigabytes).
"""

from __future__ import annotations

import hashlib
import re
import uuid
import zlib
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from functools import partial

import icalendar
from litestar.testing import TestClient
from sqlalchemy import text

from api.app import create_app
from models.engine import create_db_engine
from models.results import GZIP_WBITS
from tests.conftest import make_settings
from tests.integration.conftest import AT_SIZE
from tests.integration.jobs import insert_job, job_row
from workers.calendar import calendar_result
from workers.runner import run_job

DOMAIN = "taskoverflow.test"
#: Events parsed by icalendar at each end of the calendar.
SAMPLE = 2000


#: One event as the filled todos render (their text is plain ASCII, so nothing is escaped
#: or folded): the UID's todo id, DTSTART, and the number in SUMMARY and DESCRIPTION.
EVENT = re.compile(
    rb"BEGIN:VEVENT\r\nUID:(\d+)@" + re.escape(DOMAIN.encode()) + rb"\r\n"
    rb"DTSTAMP:\d{8}T\d{6}Z\r\nDTSTART:(\d{8}T\d{6}Z)\r\n"
    rb"SUMMARY:Todo (\d+)\r\nDESCRIPTION:benchmark todo (\d+)\r\nEND:VEVENT\r\n"
)
HEAD = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//TaskOverflow//Calendar Export 1.0//EN\r\n"
    b"CALSCALE:GREGORIAN\r\nX-WR-CALNAME:TaskOverflow\r\n"
)
END = b"END:VCALENDAR\r\n"

#: The deadlines ops/dev/fill_tables.py gives (todo i = id - 1 is due on a date set by i % 90).
STARTS = [
    datetime(2027, 1 + i % 9, 10 + i % 10, 9, 30).strftime("%Y%m%dT%H%M%SZ").encode()
    for i in range(90)
]


class CalendarCheck:
    """Checks a calendar as it arrives, event by event, keeping a bitmap of the todos seen
    and the text of its first and last few events."""

    def __init__(self, todos: int) -> None:
        self.todos = todos
        self.seen = bytearray(todos + 1)
        self.events = 0
        self.head = b""
        self.tail = b""
        self._pending = b""
        self._last: tuple[bytes, int] = (b"", 0)
        self._started = False

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        if not self._started:
            if len(data) < len(HEAD):
                self._pending = data
                return
            assert data.startswith(HEAD), data[:200]
            data, self._started = data[len(HEAD) :], True
        cut = data.rfind(b"END:VEVENT\r\n") + len(b"END:VEVENT\r\n")
        if cut < len(b"END:VEVENT\r\n"):
            self._pending = data
            return
        self._events(data[:cut])
        self._pending = data[cut:]

    def _events(self, block: bytes) -> None:
        assert max(map(len, block.split(b"\r\n"))) <= 75, "a line over 75 octets"
        at = 0
        for event in EVENT.finditer(block):
            assert event.start() == at, f"not an event at {at}: {block[at : at + 200]!r}"
            at = event.end()
            todo_id = int(event[1])
            assert 1 <= todo_id <= self.todos, todo_id
            assert not self.seen[todo_id], f"todo {todo_id} twice"
            self.seen[todo_id] = 1
            number = b"%d" % (todo_id - 1)
            assert event[3] == number, (todo_id, event[3])
            assert event[4] == number, (todo_id, event[4])
            start = event[2]
            assert start == STARTS[(todo_id - 1) % 90], (todo_id, start)
            key = (start, todo_id)
            assert key > self._last, f"todo {todo_id} out of deadline order"
            self._last = key
        assert at == len(block), f"not an event at {at}: {block[at : at + 200]!r}"
        if len(self.head) < 400 * SAMPLE:
            self.head += block[: 400 * SAMPLE]
        self.tail = (self.tail + block)[-400 * SAMPLE :]
        self.events += block.count(b"BEGIN:VEVENT")

    def finish(self) -> None:
        assert self._pending == END, self._pending[:200]
        assert self.events == self.todos
        assert self.seen.count(1) == self.todos, "a todo is missing"


def parses(events: bytes) -> int:
    """How many events icalendar reads in a calendar made of the whole events in ``events``."""
    first = events.index(b"BEGIN:VEVENT")
    last = events.rindex(b"END:VEVENT\r\n") + len(b"END:VEVENT\r\n")
    calendar = icalendar.Calendar.from_ical(HEAD + events[first:last] + END)
    return len(calendar.walk("VEVENT"))


def test_a_million_event_calendar_is_complete_ordered_and_valid(database_at_size: str):
    settings = make_settings(database_at_size)
    engine = create_db_engine(settings.database, application_name="test")
    job_id: uuid.UUID | None = None
    try:
        job_id = insert_job(engine)
        render = partial(calendar_result, uid_domain=DOMAIN)
        assert run_job(engine, job_id, render, keep=timedelta(hours=1)) == "success"
        row = job_row(engine, job_id)
        assert row.status == "SUCCESS"

        url = f"/api/v1/todos/ical/{job_id}/result"
        with TestClient(create_app(settings)) as client:
            check = CalendarCheck(AT_SIZE)
            plain = hashlib.sha256()
            with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as answer:
                assert answer.status_code == 200
                assert int(answer.headers["content-length"]) == row.result_bytes

                def hashed(chunks: Iterable[bytes]) -> Iterator[bytes]:
                    for chunk in chunks:
                        plain.update(chunk)
                        yield chunk

                for chunk in hashed(answer.iter_raw()):
                    check.feed(chunk)
            check.finish()

            packed = hashlib.sha256()
            decoder = zlib.decompressobj(GZIP_WBITS)
            with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as answer:
                assert answer.headers["content-encoding"] == "gzip"
                for chunk in answer.iter_raw():
                    packed.update(decoder.decompress(chunk))
            assert decoder.eof
            assert packed.digest() == plain.digest(), "gzip and plain downloads differ"

        assert parses(check.head) >= SAMPLE  # each event ~160 bytes: 400 bytes hold one
        assert parses(check.tail) >= SAMPLE
    finally:
        if job_id is not None:  # the database is shared read-only: leave it as it was
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job_id})
        engine.dispose()
