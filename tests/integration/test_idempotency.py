"""Idempotency-Key on POST /api/v1/todos and POST /api/v1/todos/ical (api.idempotency), on the
real app: in process on the test Postgres, over a real uvicorn process where concurrency
matters, and on SQLite as the zero-setup run has it."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from api.app import create_app
from api.idempotency import KEY_PATTERN, LEASE_S, fingerprint, parse_key
from models import schema
from models.clock import utcnow
from models.engine import create_db_engine
from models.settings import Settings

TODOS = "/api/v1/todos"
ICAL = "/api/v1/todos/ical"
JSON = {"content-type": "application/json"}


def new_key() -> str:
    return str(uuid.uuid4())


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers}


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def stored_keys(engine: Engine, key: str) -> list[tuple[str, int | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT scope, status_code FROM idempotency_keys WHERE key = :key ORDER BY scope"),
            {"key": key},
        )
        return [(row.scope, row.status_code) for row in rows]


def assert_same_answer(first: httpx.Response, again: httpx.Response) -> None:
    """``again`` is ``first`` replayed: the same bytes, marked as a replay."""
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers.get("location") == first.headers.get("location")
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


# --- Replays --------------------------------------------------------------------------------


def test_a_retried_todo_creation_gets_the_first_answer_and_creates_one_todo(
    client: TestClient, engine: Engine
):
    key = new_key()
    first = client.post(TODOS, json={"title": "Write report"}, headers=keyed(key))
    assert first.status_code == 201, first.text
    again = client.post(TODOS, json={"title": "Write report"}, headers=keyed(key))
    assert_same_answer(first, again)
    assert again.json()["id"] == first.json()["id"]
    assert count(engine, "todos") == 1
    assert stored_keys(engine, key) == [("POST /api/v1/todos", 201)]


def test_a_retried_calendar_job_gets_the_same_task_id_and_one_job(
    client: TestClient, engine: Engine
):
    key = new_key()
    first = client.post(ICAL, headers=keyed(key))
    assert first.status_code == 202, first.text
    again = client.post(ICAL, headers=keyed(key))
    assert_same_answer(first, again)
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["location"] == first.json()["task_url"]
    assert count(engine, "jobs") == 1


def test_the_quoted_form_and_the_bare_token_are_the_same_key(client: TestClient, engine: Engine):
    key = new_key()
    first = client.post(TODOS, json={"title": "a"}, headers=keyed(f'"{key}"'))
    again = client.post(TODOS, json={"title": "a"}, headers=keyed(key))
    assert_same_answer(first, again)
    assert count(engine, "todos") == 1


def test_a_trailing_slash_is_the_same_route_and_the_same_key(client: TestClient, engine: Engine):
    """Litestar routes /api/v1/todos/ to the same handler: the key must not be bypassed."""
    key = new_key()
    first = client.post(TODOS, json={"title": "a"}, headers=keyed(key))
    again = client.post(TODOS + "/", json={"title": "a"}, headers=keyed(key))
    assert_same_answer(first, again)
    assert count(engine, "todos") == 1


def test_without_the_header_every_request_runs_and_nothing_is_stored(
    client: TestClient, engine: Engine
):
    keys_before = count(engine, "idempotency_keys")  # other tests' keys stay until they expire
    for _ in range(2):
        assert client.post(TODOS, json={"title": "a"}).status_code == 201
        assert client.post(ICAL).status_code == 202
    assert (count(engine, "todos"), count(engine, "jobs")) == (2, 2)
    assert count(engine, "idempotency_keys") == keys_before


def test_the_same_key_on_the_two_routes_is_two_keys(client: TestClient, engine: Engine):
    key = new_key()
    todo = client.post(TODOS, json={"title": "a"}, headers=keyed(key))
    job = client.post(ICAL, headers=keyed(key))
    assert (todo.status_code, job.status_code) == (201, 202)
    assert "idempotent-replayed" not in job.headers
    assert (count(engine, "todos"), count(engine, "jobs")) == (1, 1)
    assert stored_keys(engine, key) == [
        ("POST /api/v1/todos", 201),
        ("POST /api/v1/todos/ical", 202),
    ]


# --- The key with another request ------------------------------------------------------------


def test_the_key_with_a_different_body_is_422_and_creates_nothing(
    client: TestClient, engine: Engine
):
    key = new_key()
    assert client.post(TODOS, json={"title": "a"}, headers=keyed(key)).status_code == 201
    other = client.post(TODOS, json={"title": "b"}, headers=keyed(key))
    assert other.status_code == 422
    assert other.json()["error"].startswith("Idempotency-Key was used with a different request")
    # Byte for byte: the same JSON written differently is another request too.
    spaced = client.post(TODOS, content=b'{"title": "a"}', headers=keyed(key, **JSON))
    assert spaced.status_code == 422
    assert count(engine, "todos") == 1


def test_the_key_with_another_content_type_is_422(client: TestClient, engine: Engine):
    key = new_key()
    body = b'{"title":"a"}'
    assert client.post(TODOS, content=body, headers=keyed(key, **JSON)).status_code == 201
    other = client.post(TODOS, content=body, headers=keyed(key, **{"content-type": "text/plain"}))
    assert other.status_code == 422
    assert count(engine, "todos") == 1


# --- In progress, lease, expiry ----------------------------------------------------------------


def claim_by_hand(engine: Engine, key: str, request: str, *, age_s: float) -> None:
    """A claim (in progress) made ``age_s`` ago, as a request that is still running leaves it."""
    at = utcnow() - timedelta(seconds=age_s)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at, expires_at)"
                " VALUES ('POST /api/v1/todos', :key, :fp, :at, :until)"
            ),
            {"key": key, "fp": request, "at": at, "until": at + timedelta(days=1)},
        )


def todo_request(body: bytes) -> str:
    return fingerprint("POST /api/v1/todos", b"application/json", body)


def test_the_same_request_while_the_first_runs_is_409_with_retry_after(
    client: TestClient, engine: Engine
):
    key, body = new_key(), b'{"title":"a"}'
    claim_by_hand(engine, key, todo_request(body), age_s=1)
    busy = client.post(TODOS, content=body, headers=keyed(key, **JSON))
    assert busy.status_code == 409
    assert busy.headers["retry-after"] == "1"
    assert "still being processed" in busy.json()["error"]
    # Another request with the key, even unfinished: 422, not 409.
    other = client.post(TODOS, content=b'{"title":"b"}', headers=keyed(key, **JSON))
    assert other.status_code == 422
    assert count(engine, "todos") == 0


def test_a_claim_past_its_lease_is_taken_over(client: TestClient, engine: Engine):
    """Its request's process died: the next request with the key runs (and is kept)."""
    key, body = new_key(), b'{"title":"a"}'
    claim_by_hand(engine, key, todo_request(body), age_s=LEASE_S + 5)
    created = client.post(TODOS, content=body, headers=keyed(key, **JSON))
    assert created.status_code == 201
    assert "idempotent-replayed" not in created.headers
    assert stored_keys(engine, key) == [("POST /api/v1/todos", 201)]
    assert_same_answer(created, client.post(TODOS, content=body, headers=keyed(key, **JSON)))


def test_an_expired_key_is_a_new_key(client: TestClient, engine: Engine):
    key = new_key()
    first = client.post(TODOS, json={"title": "a"}, headers=keyed(key))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE idempotency_keys SET expires_at = :past WHERE key = :key"),
            {"past": utcnow() - timedelta(seconds=1), "key": key},
        )
    again = client.post(TODOS, json={"title": "a"}, headers=keyed(key))
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert count(engine, "todos") == 2
    # And an expired key may be used for another request: it is forgotten, not a mismatch.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE idempotency_keys SET expires_at = :past WHERE key = :key"),
            {"past": utcnow() - timedelta(seconds=1), "key": key},
        )
    assert client.post(TODOS, json={"title": "b"}, headers=keyed(key)).status_code == 201


def test_the_key_is_kept_for_at_least_the_configured_time(
    client: TestClient, engine: Engine, settings: Settings
):
    key = new_key()
    before = utcnow()
    client.post(TODOS, json={"title": "a"}, headers=keyed(key))
    with engine.connect() as conn:
        expires_at = conn.execute(
            text("SELECT expires_at FROM idempotency_keys WHERE key = :key"), {"key": key}
        ).scalar_one()
    ttl = timedelta(seconds=settings.jobs.idempotency_key_ttl_s)
    assert ttl >= timedelta(hours=24)
    assert before + ttl <= expires_at <= utcnow() + ttl


# --- Errors are not kept ------------------------------------------------------------------------


def test_an_error_answer_is_not_kept_so_the_corrected_request_runs(
    client: TestClient, engine: Engine
):
    key = new_key()
    refused = client.post(TODOS, json={"description": "no title"}, headers=keyed(key))
    assert refused.status_code == 400
    assert stored_keys(engine, key) == []
    # The same bad request again is checked again (not replayed) ...
    again = client.post(TODOS, json={"description": "no title"}, headers=keyed(key))
    assert again.status_code == 400
    assert "idempotent-replayed" not in again.headers
    # ... and the corrected one, with the same key, runs.
    fixed = client.post(TODOS, json={"title": "a"}, headers=keyed(key))
    assert fixed.status_code == 201
    assert count(engine, "todos") == 1


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"a b",  # a space outside quotes
        b"x" * 256,
        b'"' + b"x" * 256 + b'"',
        b"caf\xc3\xa9",  # not ASCII
        b"tab\there",
        b'"bad \\escape"',
    ],
)
def test_a_bad_key_is_400_and_runs_nothing(client: TestClient, engine: Engine, value: bytes):
    for path in (TODOS, ICAL):
        response = client.post(path, json={"title": "a"}, headers={b"idempotency-key": value})
        assert response.status_code == 400, (path, value)
        assert "Idempotency-Key must be 1 to 255 printable ASCII" in response.json()["error"]
    assert (count(engine, "todos"), count(engine, "jobs")) == (0, 0)


def test_two_key_headers_are_400(api: str, engine: Engine):
    """Two header lines (over a real server: an in-process client joins them with ", ")."""
    headers = [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    response = httpx.post(api + TODOS, json={"title": "a"}, headers=headers, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": "send one Idempotency-Key header, not several"}
    assert count(engine, "todos") == 0


def test_the_longest_keys_are_accepted(client: TestClient):
    for value in ("k" * 255, '"' + "k" * 254 + '\\""'):
        response = client.post(TODOS, json={"title": "a"}, headers=keyed(value))
        assert response.status_code == 201, value


def test_a_body_over_the_limit_is_413_as_without_a_key(
    client: TestClient, engine: Engine, settings: Settings
):
    key = new_key()
    big = b'{"title": "' + b"x" * settings.api.max_body_bytes + b'"}'
    plain = client.post(TODOS, content=big, headers=JSON)
    assert plain.status_code == 413
    with_key = client.post(TODOS, content=big, headers=keyed(key, **JSON))
    assert (with_key.status_code, with_key.content) == (413, plain.content)

    # Streamed (no Content-Length): read up to the limit only, then passed on as it came.
    def chunks() -> Iterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    streamed = client.post(TODOS, content=chunks(), headers=keyed(key, **JSON))
    assert (streamed.status_code, streamed.content) == (413, plain.content)
    assert stored_keys(engine, key) == []
    assert count(engine, "todos") == 0


def test_a_body_over_the_limit_on_the_calendar_route_is_413_not_run_without_its_key(
    client: TestClient, engine: Engine, settings: Settings
):
    """That route never reads its body (Litestar would not refuse it): with a key, the body
    cannot be fingerprinted, so it is refused rather than run unprotected."""
    key = new_key()
    big = b"x" * (settings.api.max_body_bytes + 1)
    refused = client.post(ICAL, content=big, headers=keyed(key))
    assert refused.status_code == 413
    assert refused.content == client.post(TODOS, content=big, headers=JSON).content
    assert (count(engine, "jobs"), stored_keys(engine, key)) == (0, [])


# --- Concurrency, over a real server ------------------------------------------------------------


@pytest.mark.parametrize(("path", "table", "created"), [(ICAL, "jobs", 202), (TODOS, "todos", 201)])
def test_twenty_concurrent_requests_with_one_key_run_once(
    api: str, engine: Engine, path: str, table: str, created: int
):
    """The same request 20 times at once: one runs; the others get its answer or 409."""
    key, body = new_key(), b'{"title":"a"}'
    start = threading.Barrier(20)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=api, timeout=20) as http:
            start.wait()
            return http.post(path, content=body, headers=keyed(key, **JSON))

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, range(20)))

    assert count(engine, table) == 1
    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) <= {created, 409}, statuses
    ran = [
        a for a in answers if a.status_code == created and "idempotent-replayed" not in a.headers
    ]
    assert len(ran) == 1, statuses
    for answer in answers:
        if answer.status_code == created:
            assert answer.content == ran[0].content
        else:
            assert answer.headers["retry-after"] == "1"
    # The retry every 409 was told to make: the first answer, replayed.
    final = httpx.post(api + path, content=body, headers=keyed(key, **JSON), timeout=20)
    assert_same_answer(ran[0], final)
    assert count(engine, table) == 1


# --- SQLite (the zero-setup run) ----------------------------------------------------------------


def test_on_sqlite_one_key_gives_one_todo(tmp_path: Path):
    settings = Settings.from_env(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'taskoverflow.sqlite3'}",
            "BROKER_URL": "memory://",
            "LOG_FORMAT": "console",
        }
    )
    engine = create_db_engine(settings.database, application_name="tests")
    schema.upgrade(engine)
    try:
        with TestClient(create_app(settings)) as sqlite_client:
            key = new_key()
            first = sqlite_client.post(TODOS, json={"title": "a"}, headers=keyed(key))
            assert first.status_code == 201
            assert_same_answer(
                first, sqlite_client.post(TODOS, json={"title": "a"}, headers=keyed(key))
            )
            other = sqlite_client.post(TODOS, json={"title": "b"}, headers=keyed(key))
            assert other.status_code == 422
            with engine.begin() as conn:  # expired: a new key (the takeover on SQLite)
                conn.execute(text("UPDATE idempotency_keys SET expires_at = '2000-01-01'"))
            assert (
                sqlite_client.post(TODOS, json={"title": "b"}, headers=keyed(key)).status_code
                == 201
            )
        assert count(engine, "todos") == 2
    finally:
        engine.dispose()


# --- The documentation is what is accepted ------------------------------------------------------


def test_both_operations_document_the_header_and_its_answers(client: TestClient):
    paths = client.get("/schema/openapi.json").json()["paths"]
    operation = paths[TODOS]["post"]
    (header,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert header["required"] is False
    assert header["schema"] == {"type": "string", "pattern": KEY_PATTERN}
    assert "24 hours" in header["description"]
    assert {"400", "409", "422", "413"} <= set(operation["responses"])


_PATTERN = re.compile(KEY_PATTERN)


@given(st.from_regex(_PATTERN, fullmatch=True))
def test_every_value_the_schema_allows_is_accepted(value: str):
    assert parse_key(value.encode("latin-1")) is not None


@given(st.text(st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=300))
def test_anything_else_is_refused(value: str):
    # Surrounding spaces are not part of a field value (servers strip them): compare without.
    stripped = value.strip(" \t")
    accepted = parse_key(value.encode("latin-1")) is not None
    assert accepted == (_PATTERN.fullmatch(stripped) is not None)
