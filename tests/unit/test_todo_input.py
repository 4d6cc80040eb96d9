"""Validation of todo bodies and query parameters: the contract's messages and order."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from api.errors import ApiError
from api.todo_input import (
    decode_object,
    parse_completed_filter,
    parse_datetime,
    parse_todo_fields,
    parse_window,
)


def error_of(fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    assert info.value.status_code == 400
    return info.value.message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "request body must be a JSON object"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'"title"', "request body must be a JSON object"),
        (b"null", "request body must be a JSON object"),
        (b"{", "request body is not valid JSON"),
        (b"{'title': 'x'}", "request body is not valid JSON"),
        (b"[" * 100_000, "request body is nested too deeply"),
        (b"[" * 5_000 + b"]" * 5_000, "request body is nested too deeply"),
    ],
)
def test_bodies_that_are_not_objects_are_refused(raw: bytes, message: str):
    """Malformed or non-object JSON is a 400 that says so."""
    assert error_of(decode_object, raw) == message


def test_extra_fields_are_checked_before_missing_title():
    """{"id": 1} is "extra fields", not "missing title" (the course's order)."""
    assert error_of(parse_todo_fields, {"id": 1}, creating=True) == "extra fields"
    assert error_of(parse_todo_fields, {"title": 5, "created_at": "x"}, creating=True) == (
        "extra fields"
    )
    assert error_of(parse_todo_fields, {"description": "x"}, creating=True) == "missing title"


def test_updates_do_not_require_a_title():
    """PUT is partial: only the keys sent are returned."""
    assert parse_todo_fields({"completed": True}, creating=False) == {"completed": True}
    assert parse_todo_fields({}, creating=False) == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": None}, "title must be a string"),
        ({"title": 12}, "title must be a string"),
        ({"title": ["a"]}, "title must be a string"),
        ({"title": "x" * 81}, "title must be at most 80 characters (got 81)"),
        ({"title": "a\r\nb"}, "title must not contain control characters"),
        ({"title": "nul\x00"}, "title must not contain control characters"),
        ({"title": "bad \ud800"}, "title must be valid Unicode (it contains a lone surrogate)"),
        (
            {"title": "t", "description": "d" * 121},
            "description must be at most 120 characters (got 121)",
        ),
        ({"title": "t", "description": 3}, "description must be a string"),
        (
            {"title": "t", "description": "bell\x07"},
            "description must not contain control characters (line breaks and tabs are allowed)",
        ),
        ({"title": "t", "completed": "true"}, "completed must be true or false"),
        ({"title": "t", "completed": 1}, "completed must be true or false"),
        ({"title": "t", "completed": None}, "completed must be true or false"),
    ],
)
def test_bad_field_values_are_refused_with_a_clear_message(body, message):  # type: ignore[no-untyped-def]
    """No silent coercion: wrong types and lengths are 400s naming the field."""
    assert error_of(parse_todo_fields, body, creating=True) == message


def test_limits_are_inclusive_and_count_characters_not_bytes():
    """80 emoji are a valid title; 120 accented letters a valid description."""
    values = parse_todo_fields({"title": "😀" * 80, "description": "é" * 120}, creating=True)
    assert values["title"] == "😀" * 80
    assert values["description"] == "é" * 120


def test_description_may_be_null_or_empty_and_keep_line_breaks():
    """null clears it, "" is kept as sent, newlines and tabs are allowed."""
    assert (
        parse_todo_fields({"title": "t", "description": None}, creating=True)["description"] is None
    )
    assert parse_todo_fields({"title": "t", "description": ""}, creating=True)["description"] == ""
    assert (
        parse_todo_fields({"title": "t", "description": "a\n\tb"}, creating=True)["description"]
        == "a\n\tb"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2023-02-27T00:00:00", datetime(2023, 2, 27)),
        ("2024-04-19 14:00:00.000", datetime(2024, 4, 19, 14)),  # the course's web page
        ("2024-04-19T14:00:00Z", datetime(2024, 4, 19, 14)),
        ("2024-04-20T00:00:00+10:00", datetime(2024, 4, 19, 14)),
        ("2024-04-19", datetime(2024, 4, 19)),
        ("0001-01-01T00:00:00", datetime(1, 1, 1)),
        ("9999-12-31T23:59:59", datetime(9999, 12, 31, 23, 59, 59)),
    ],
)
def test_datetimes_are_read_as_utc(raw: str, expected: datetime):
    """ISO-8601 in the forms clients send; offsets are converted to naive UTC."""
    assert parse_datetime(raw, "deadline_at") == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "tomorrow",
        "2024-13-01T00:00:00",
        "2024-02-30",
        "10000-01-01T00:00:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        20240101,
        True,
        "9" * 100,
    ],
)
def test_bad_datetimes_are_refused(raw):  # type: ignore[no-untyped-def]
    """Unparseable, impossible or out-of-range datetimes are 400s, never 500s."""
    assert error_of(parse_datetime, raw, "deadline_at").startswith(
        "deadline_at must be an ISO-8601 date-time"
    )


def test_completed_filter_accepts_only_true_or_false():
    """?completed= is exactly true or false."""
    assert parse_completed_filter("true") is True
    assert parse_completed_filter("false") is False
    assert parse_completed_filter(None) is None
    for raw in ("True", "1", "yes", ""):
        assert error_of(parse_completed_filter, raw) == "completed must be true or false"


def test_window_is_a_bounded_whole_number_of_days():
    """?window=N: integers within a century; anything else is a 400."""
    assert parse_window("3") == timedelta(days=3)
    assert parse_window("-2") == timedelta(days=-2)
    assert parse_window("36500") == timedelta(days=36500)
    for raw in ("abc", "1.5", "", "36501", "99999999999999999999", " 3"):
        assert error_of(parse_window, raw).startswith("window must be a whole number of days")
