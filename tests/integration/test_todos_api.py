"""The todos endpoints against real Postgres: the course's happy paths and every bad input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from api.app import create_app
from models.settings import Settings

API = "/api/v1/todos"


def create(client: TestClient, **body):  # type: ignore[no-untyped-def]
    response = client.post(API, json={"title": "t", **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_health(client: TestClient):
    """GET /api/v1/health is 200 {"status": "ok"}."""
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_create_returns_201_and_the_full_todo(client: TestClient):
    """POST answers 201 with every field, deadline exactly as sent."""
    body = {"title": "Write report", "description": "draft", "deadline_at": "2023-02-27T00:00:00"}
    response = client.post(API, json=body)
    assert response.status_code == 201
    todo = response.json()
    assert set(todo) == {
        "id",
        "title",
        "description",
        "completed",
        "deadline_at",
        "created_at",
        "updated_at",
    }
    assert todo["title"] == "Write report"
    assert todo["description"] == "draft"
    assert todo["completed"] is False
    assert todo["deadline_at"] == "2023-02-27T00:00:00"
    assert isinstance(todo["id"], int)
    assert client.get(f"{API}/{todo['id']}").json() == todo


def test_course_web_page_deadline_format_is_accepted(client: TestClient):
    """The course page sends "2024-04-19 14:00:00.000" and description ""."""
    todo = create(client, description="", deadline_at="2024-04-19 14:00:00.000")
    assert todo["deadline_at"] == "2024-04-19T14:00:00"
    assert todo["description"] == ""


def test_minimal_todo_defaults(client: TestClient):
    """Only a title: description and deadline null, not completed."""
    todo = create(client, title="only a title")
    assert (todo["description"], todo["deadline_at"], todo["completed"]) == (None, None, False)


def test_list_is_newest_first_and_filters_combine(client: TestClient):
    """GET lists all todos newest first; completed and window filter with AND."""
    old = create(client, title="old", deadline_at="2000-01-01T00:00:00", completed=True)
    soon = create(client, title="soon", deadline_at="2100-01-01T00:00:00")
    undated = create(client, title="undated", completed=True)
    assert [t["id"] for t in client.get(API).json()] == [undated["id"], soon["id"], old["id"]]
    assert [t["title"] for t in client.get(API, params={"completed": "true"}).json()] == [
        "undated",
        "old",
    ]
    assert [t["title"] for t in client.get(API, params={"completed": "false"}).json()] == ["soon"]
    # window: overdue included, undated excluded, far future excluded
    assert [t["title"] for t in client.get(API, params={"window": "5"}).json()] == ["old"]
    assert [t["title"] for t in client.get(API, params={"window": "36500"}).json()] == [
        "soon",
        "old",
    ]
    assert (
        client.get(API, params={"window": "36500", "completed": "true"}).json()[0]["title"] == "old"
    )


def test_update_changes_only_the_keys_sent(client: TestClient):
    """PUT is a partial update returning the whole todo."""
    todo = create(client, title="before", description="keep me")
    response = client.put(f"{API}/{todo['id']}", json={"completed": True})
    assert response.status_code == 200
    updated = response.json()
    assert updated["completed"] is True
    assert (updated["title"], updated["description"]) == ("before", "keep me")
    cleared = client.put(f"{API}/{todo['id']}", json={"description": None, "deadline_at": None})
    assert cleared.json()["description"] is None


def test_delete_returns_the_todo_then_empty_object(client: TestClient):
    """DELETE answers the deleted todo; deleting again (or an unknown id) answers 200 {}."""
    todo = create(client)
    first = client.delete(f"{API}/{todo['id']}")
    assert (first.status_code, first.json()) == (200, todo)
    second = client.delete(f"{API}/{todo['id']}")
    assert (second.status_code, second.json()) == (200, {})
    assert client.get(f"{API}/{todo['id']}").status_code == 404


@pytest.mark.parametrize("todo_id", ["999", "0", "-1", "2147483648", "99999999999999999999999"])
def test_unknown_ids_are_404_todo_not_found(client: TestClient, todo_id: str):
    """Unknown ids, including ones beyond int32/int64, are 404 with the course's message."""
    for method in ("GET", "PUT"):
        response = client.request(method, f"{API}/{todo_id}", json={"completed": True})
        assert response.status_code == 404, (method, response.text)
        assert response.json() == {"error": "Todo not found"}
    assert client.delete(f"{API}/{todo_id}").json() == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": "x", "id": 5}, "extra fields"),
        ({"title": "x", "created_at": "2020-01-01T00:00:00"}, "extra fields"),
        ({"title": "x", "updated_at": "2020-01-01T00:00:00"}, "extra fields"),
        ({"id": 5}, "extra fields"),
        ({"description": "no title"}, "missing title"),
        ({"title": None}, "title must be a string"),
        ({"title": 42}, "title must be a string"),
        ({"title": "x" * 81}, "title must be at most 80 characters (got 81)"),
        (
            {"title": "x", "description": "d" * 121},
            "description must be at most 120 characters (got 121)",
        ),
        (
            {"title": "x", "deadline_at": "not a date"},
            "deadline_at must be an ISO-8601 date-time such as 2023-02-27T00:00:00, or null",
        ),
        (
            {"title": "x", "deadline_at": 12},
            "deadline_at must be an ISO-8601 date-time such as 2023-02-27T00:00:00, or null",
        ),
        ({"title": "x", "completed": "yes"}, "completed must be true or false"),
        ({"title": "line\nbreak"}, "title must not contain control characters"),
    ],
)
def test_bad_create_bodies_are_400_with_a_message(
    client: TestClient, engine: Engine, body, message
):  # type: ignore[no-untyped-def]
    """Every bad body is a 400 {"error": ...} and creates nothing."""
    response = client.post(API, json=body)
    assert response.status_code == 400
    assert response.json() == {"error": message}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM todos")).scalar() == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "request body is not valid JSON"),
        (b"", "request body must be a JSON object"),
        (b"[]", "request body must be a JSON object"),
        (b'"a string"', "request body must be a JSON object"),
    ],
)
def test_malformed_bodies_are_400(client: TestClient, raw: bytes, message: str):
    """Not JSON, or JSON that is not an object: 400 on POST and PUT alike."""
    todo = create(client)
    for method, path in (("POST", API), ("PUT", f"{API}/{todo['id']}")):
        response = client.request(
            method, path, content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, (method, response.text)
        assert response.json() == {"error": message}


def test_bad_update_leaves_the_todo_unchanged(client: TestClient):
    """PUT with extra keys, id, or a bad deadline is 400 and changes nothing."""
    todo = create(client, title="stable")
    for body in ({"title": "new", "id": 99}, {"extra": 1}, {"title": "new", "deadline_at": "soon"}):
        response = client.put(f"{API}/{todo['id']}", json=body)
        assert response.status_code == 400
    assert client.get(f"{API}/{todo['id']}").json() == todo


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"window": "abc"}, "window must be a whole number of days between -36500 and 36500"),
        (
            {"window": "99999999999"},
            "window must be a whole number of days between -36500 and 36500",
        ),
        ({"completed": "maybe"}, "completed must be true or false"),
    ],
)
def test_bad_query_parameters_are_400(client: TestClient, query, message):  # type: ignore[no-untyped-def]
    """Bad filters are 400, even when some todos have no deadline."""
    create(client, title="undated")
    response = client.get(API, params=query)
    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_window_with_undated_todos_is_not_an_error(client: TestClient):
    """The course 500s on ?window when a todo has no deadline; undated ones are left out."""
    create(client, title="undated")
    create(client, title="due", deadline_at="2001-01-01T00:00:00")
    response = client.get(API, params={"window": "1"})
    assert response.status_code == 200
    assert [t["title"] for t in response.json()] == ["due"]


def test_non_integer_id_and_unknown_routes_are_404(client: TestClient):
    """/todos/abc and unknown paths are 404 with an error body."""
    for path in (f"{API}/abc", "/api/v1/nope"):
        response = client.get(path)
        assert response.status_code == 404
        assert "error" in response.json()


def test_oversized_body_is_413(client: TestClient):
    """Bodies beyond API_MAX_BODY_BYTES are refused before parsing."""
    response = client.post(API, content=b'{"title": "' + b"x" * 100_000 + b'"}')
    assert response.status_code == 413
    assert "error" in response.json()


def test_openapi_schema_is_served(client: TestClient):
    """OpenAPI lives under /schema and documents our routes."""
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v1/todos" in paths
    assert "/api/v1/todos/ical/{task_id}/status" in paths


def test_request_id_is_echoed(client: TestClient):
    """A sane X-Request-ID is kept; otherwise one is made."""
    assert (
        client.get("/api/v1/health", headers={"x-request-id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    assert len(client.get("/api/v1/health").headers["x-request-id"]) == 32


def test_reads_and_writes_right_after_the_database_drops_every_connection(
    client: TestClient, engine: Engine
):
    """The API has no pre-ping: connections the server closed (a restart, a failover) are
    skipped at checkout, so neither a write nor a read answers 503 once it is back."""
    first = client.post("/api/v1/todos", json={"title": "before"}).json()
    for _ in range(3):  # the pool now holds open connections
        assert client.get(f"/api/v1/todos/{first['id']}").status_code == 200
    with engine.connect() as admin:
        killed = admin.execute(
            text(
                "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                "WHERE application_name = 'taskoverflow-api' AND datname = current_database()"
            )
        ).scalar()
    assert (killed or 0) >= 1
    time.sleep(0.2)  # the API's event loop sees the sockets close, as in any real restart
    assert client.post("/api/v1/todos", json={"title": "after"}).status_code == 201
    assert client.get(f"/api/v1/todos/{first['id']}").json()["title"] == "before"
    assert [todo["title"] for todo in client.get("/api/v1/todos").json()] == ["after", "before"]


def test_a_sqlite_database_that_cannot_be_opened_is_503(tmp_path: Path):
    """The zero-setup run's path (SQLAlchemy, not asyncpg) also answers 503, not 500."""
    settings = Settings.from_env(
        {"DATABASE_URL": f"sqlite:///{tmp_path}/missing-dir/db.sqlite3", "BROKER_URL": "memory://"}
    )
    with TestClient(create_app(settings)) as sqlite_client:
        response = sqlite_client.get("/api/v1/todos")
    assert response.status_code == 503
    assert response.json() == {"error": "database unavailable, try again shortly"}


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "json"],
)
def test_bodies_declared_as_something_else_than_json_are_415(
    client: TestClient, engine: Engine, content_type: str
):
    """Content that is not JSON, declared as another media type, is refused (415) on POST
    and PUT and changes nothing: the client is told to send application/json."""
    todo = create(client, title="stable")
    for method, path in (("POST", API), ("PUT", f"{API}/{todo['id']}")):
        response = client.request(
            method, path, content=b"title=new", headers={"content-type": content_type}
        )
        assert response.status_code == 415, (method, response.text)
        assert response.json() == {
            "error": "request body must be JSON, sent with Content-Type: application/json"
        }
    assert client.get(API).json() == [todo]


@pytest.mark.parametrize(
    "content_type", ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded"]
)
def test_a_json_text_declared_as_another_type_is_read_as_ever(
    client: TestClient, content_type: str
):
    """What ``curl -d`` and ``fetch`` with a string body send: the answers the course's
    clients always had (201, and the usual 400s), never 415."""
    created = client.post(API, content=b'{"title": "curl"}', headers={"content-type": content_type})
    assert (created.status_code, created.json()["title"]) == (201, "curl")
    extra = client.post(
        API, content=b'{"title": "x", "id": 1}', headers={"content-type": content_type}
    )
    assert (extra.status_code, extra.json()) == (400, {"error": "extra fields"})
    updated = client.put(
        f"{API}/{created.json()['id']}",
        content=b'{"completed": true}',
        headers={"content-type": content_type},
    )
    assert (updated.status_code, updated.json()["completed"]) == (200, True)


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json; charset=utf-8"},
        {"content-type": "Application/JSON"},
        {"content-type": "application/merge-patch+json"},
        {},  # no Content-Type: read as JSON (RFC 9110 section 8.3), as before
    ],
)
def test_json_bodies_are_read_whatever_their_json_media_type(client: TestClient, headers):  # type: ignore[no-untyped-def]
    """Any JSON media type (parameters and case aside), or none at all, is read as JSON."""
    response = client.post(API, content=b'{"title": "typed"}', headers=headers)
    assert response.status_code == 201, response.text
    updated = client.put(
        f"{API}/{response.json()['id']}", content=b'{"completed": true}', headers=headers
    )
    assert (updated.status_code, updated.json()["completed"]) == (200, True)


def test_window_accepts_exactly_the_integers_the_openapi_documents(client: TestClient):
    """?window is documented as an integer in [-36500, 36500]: any ASCII spelling of one
    (sign, leading zeros) is accepted; anything else, other digits included, is 400."""
    create(client, title="due", deadline_at="2001-01-01T00:00:00")
    spec = client.get("/schema/openapi.json").json()
    (window,) = (p for p in spec["paths"][API]["get"]["parameters"] if p["name"] == "window")
    assert window["schema"] == {
        "type": "integer",
        "minimum": -36500,
        "maximum": 36500,
        "description": window["description"],
    }
    for accepted in ("1", "+1", "0001", "-0", "36500", "-36500", "0" * 5000 + "36500"):
        assert client.get(API, params={"window": accepted}).status_code == 200, accepted
    # "\u0665" is an Arabic-Indic five: Python's int() reads it, an integer schema does not.
    for refused in ("", " 1", "1.0", "1e3", "\u0665", "36501", "1_0", "0x10"):
        assert client.get(API, params={"window": refused}).status_code == 400, refused


def test_completed_is_documented_as_exactly_true_or_false(client: TestClient):
    """The OpenAPI's ?completed accepts what the API does: "true" or "false", nothing else."""
    spec = client.get("/schema/openapi.json").json()
    (completed,) = (p for p in spec["paths"][API]["get"]["parameters"] if p["name"] == "completed")
    assert (completed["schema"]["type"], completed["schema"]["enum"]) == (
        "string",
        ["true", "false"],
    )
    assert "oneOf" not in completed["schema"]
    for refused in ("", "True", "1"):
        assert client.get(API, params={"completed": refused}).status_code == 400, refused


def test_head_answers_as_get_does_without_the_content(client: TestClient):
    """HEAD works wherever GET does (RFC 9110 9.3.2): same status and header fields, no
    content. The page, its static files, the API's reads and the OpenAPI schema alike."""
    todo = create(client)
    paths = [
        "/",
        "/static/app.js",
        "/api/v1/health",
        "/api/v1/health/ready",
        API,
        f"{API}/{todo['id']}",
        f"{API}/999",  # a 404 is a 404 for HEAD too
        f"{API}/ical/{'0' * 32}/status",
        "/schema/openapi.json",
    ]
    # The rate limit's remaining budget drops by one per request, HEAD or GET.
    varying = {"date", "x-request-id", "ratelimit-remaining", "ratelimit-reset"}
    for path in paths:
        get = client.get(path)
        head = client.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        assert {k: v for k, v in head.headers.items() if k not in varying} == {
            k: v for k, v in get.headers.items() if k not in varying
        }, path
        assert int(head.headers["content-length"]) == len(get.content), path


def test_head_is_refused_where_get_is(client: TestClient):
    """HEAD follows GET: a resource without GET answers 405, its Allow without HEAD."""
    response = client.head(f"{API}/ical")
    assert response.status_code == 405
    assert response.headers["allow"] == "OPTIONS, POST"
    assert response.content == b""


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        (API, "GET, HEAD, OPTIONS, POST"),
        (f"{API}/1", "DELETE, GET, HEAD, OPTIONS, PUT"),
        (f"{API}/ical", "OPTIONS, POST"),
        (f"{API}/ical/x/status", "GET, HEAD, OPTIONS"),
        (f"{API}/ical/x/result", "GET, HEAD, OPTIONS"),
        ("/api/v1/health", "GET, HEAD, OPTIONS"),
        ("/", "GET, HEAD, OPTIONS"),
        ("/static/app.js", "GET, HEAD, OPTIONS"),
        ("/schema/openapi.json", "GET, HEAD, OPTIONS"),
    ],
)
def test_allow_lists_every_method_of_the_resource(client: TestClient, path: str, allow: str):
    """OPTIONS and 405 answers both list every supported method (RFC 9110 10.2.1), HEAD
    wherever GET is; Litestar's own OPTIONS answer named only one handler's methods."""
    options = client.options(path)
    assert (options.status_code, options.headers["allow"]) == (204, allow)
    refused = client.request("PATCH", path)
    assert (refused.status_code, refused.headers["allow"]) == (405, allow)
