"""GET /api/v1/todos paged (``limit``, ``cursor``, ``Link: rel="next"``) and unpaged (the
whole list, written a batch at a time), against real Postgres."""

from __future__ import annotations

import re

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from api.routes.todos import STREAM_BATCH

API = "/api/v1/todos"
_NEXT = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


def fill(engine: Engine, count: int) -> None:
    """``count`` todos, three to a creation instant (so the id must break ties), every
    fourth completed, every fifth undated."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO todos (title, completed, deadline_at, created_at, updated_at) "
                "SELECT 'todo ' || i, i % 4 = 0, "
                "CASE WHEN i % 5 <> 0 THEN timestamp '2027-01-01' + i * interval '1 day' END, "
                "timestamp '2026-01-01' + (i / 3) * interval '1 second', "
                "timestamp '2026-01-01' FROM generate_series(1, :count) AS i"
            ),
            {"count": count},
        )


def walk(client: TestClient, url: str) -> tuple[list[dict], int]:  # type: ignore[type-arg]
    """Every todo by following ``Link`` from ``url``; and how many pages that took."""
    todos, pages = [], 0
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        todos += response.json()
        pages += 1
        link = response.headers.get("link")
        next_url = None if link is None else _NEXT.fullmatch(link)["url"]  # type: ignore[index]
        assert pages <= 1000, "the walk does not end"
    return todos, pages


def newest_first(todos: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    return sorted(todos, key=lambda t: (t["created_at"], t["id"]), reverse=True)


def test_pages_walk_every_todo_once_in_the_lists_order(client: TestClient, engine: Engine):
    fill(engine, 25)
    everything = client.get(API).json()
    assert len(everything) == 25
    assert everything == newest_first(everything)
    todos, pages = walk(client, f"{API}?limit=10")
    assert pages == 3
    assert todos == everything


def test_a_page_that_ends_the_list_has_no_link(client: TestClient, engine: Engine):
    fill(engine, 10)
    exact = client.get(f"{API}?limit=10")
    assert len(exact.json()) == 10
    assert "link" not in exact.headers
    assert client.get(f"{API}?limit=1000").json() == client.get(API).json()


def test_the_next_link_keeps_the_filters_and_is_relative(client: TestClient, engine: Engine):
    fill(engine, 40)
    first = client.get(f"{API}?completed=true&window=36500&limit=3")
    link = _NEXT.fullmatch(first.headers["link"])
    assert link is not None
    assert link["url"].startswith(f"{API}?completed=true&window=36500&limit=3&cursor=")
    todos, _ = walk(client, f"{API}?completed=true&window=36500&limit=3")
    assert todos == client.get(f"{API}?completed=true&window=36500").json()
    assert len(todos) == 8  # 4, 8, ... 40, less 20 and 40 (undated)
    assert all(todo["completed"] and todo["deadline_at"] for todo in todos)


def test_a_todo_created_during_a_walk_is_not_listed_and_none_twice(
    client: TestClient, engine: Engine
):
    fill(engine, 9)
    first = client.get(f"{API}?limit=4")
    created = client.post(API, json={"title": "newer"}).json()
    rest, _ = walk(client, _NEXT.fullmatch(first.headers["link"])["url"])  # type: ignore[index]
    ids = [todo["id"] for todo in first.json() + rest]
    assert created["id"] not in ids
    assert sorted(ids) == list(range(1, 10))


def test_the_unpaged_list_is_the_pages_put_together_across_batches(
    client: TestClient, engine: Engine
):
    """More todos than one batch of the streamed answer: the JSON array is whole, ordered,
    and each todo in it once."""
    count = 2 * STREAM_BATCH + 7
    fill(engine, count)
    response = client.get(API)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "content-length" not in response.headers  # written as read, not built first
    everything = response.json()
    assert len(everything) == count
    assert len({todo["id"] for todo in everything}) == count
    assert everything == newest_first(everything)
    assert walk(client, f"{API}?limit=1000")[0] == everything
    assert client.get(f"{API}?completed=false").json() == [
        t for t in everything if not t["completed"]
    ]


def test_an_empty_list_is_an_empty_array_paged_or_not(client: TestClient, engine: Engine):
    assert client.get(API).json() == []
    empty = client.get(f"{API}?limit=5")
    assert empty.json() == []
    assert "link" not in empty.headers


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "+5", "1.5", "ten", "", "00010000"])
def test_a_bad_limit_is_400(client: TestClient, limit: str):
    response = client.get(API, params={"limit": limit})
    assert response.status_code == 400
    assert response.json() == {"error": "limit must be a whole number from 1 to 1000"}


@pytest.mark.parametrize("cursor", ["", "x", "12", "1.2.3", "-1.5", "1.a", "1" * 18 + ".1"])
def test_a_bad_cursor_is_400(client: TestClient, cursor: str):
    response = client.get(API, params={"limit": "5", "cursor": cursor})
    assert response.status_code == 400
    assert response.json() == {
        "error": "cursor is not one this API gave out (follow the Link header's next URL)"
    }


def test_any_well_formed_cursor_is_a_position(client: TestClient, engine: Engine):
    """A cursor past every id (larger than a Postgres integer) or before every todo answers
    200: the form is all that is checked."""
    fill(engine, 3)
    everything = client.get(API).json()
    assert client.get(API, params={"cursor": "99999999999999999.9999999999"}).json() == everything
    assert client.get(API, params={"limit": "2", "cursor": "0.1"}).json() == []
