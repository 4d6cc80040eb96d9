"""The streaming iCalendar writer: RFC 5545 escaping, folding and structure."""

from __future__ import annotations

from datetime import datetime

import icalendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.ical import CalendarTodo, escape_text, fold, format_utc, write_calendar

WHEN = datetime(2024, 4, 19, 14, 0)
STAMP = datetime(2024, 1, 2, 3, 4, 5)


def todo(id: int = 1, title: str = "t", description: str | None = None, deadline=WHEN):  # type: ignore[no-untyped-def]
    return CalendarTodo(id, title, description, deadline, STAMP)


def parse_events(text: str) -> list[icalendar.Event]:
    return list(icalendar.Calendar.from_ical(text).walk("VEVENT"))


def assert_well_formed(text: str) -> None:
    assert text.endswith("\r\n")
    lines = text.split("\r\n")[:-1]
    for line in lines:
        assert "\r" not in line, repr(line)
        assert "\n" not in line, repr(line)
        assert len(line.encode("utf-8")) <= 75, repr(line)


def test_escape_text_escapes_rfc5545_specials():
    """Backslash, semicolon, comma and newline are escaped; backslash first."""
    assert escape_text("a\\b;c,d\ne") == "a\\\\b\\;c\\,d\\ne"


def test_escape_text_turns_cr_into_line_breaks_and_drops_other_controls():
    """CR/CRLF become one escaped line break; controls RFC 5545 forbids are removed."""
    assert escape_text("a\r\nb\rc\x00d\x1be\tf") == "a\\nb\\ncde\tf"


def test_fold_ascii_at_75_octets_with_leading_space():
    """A 200-char line folds at 75 octets, continuation lines being 74 + 1 space."""
    folded = fold("X" * 200)
    lines = folded.split("\r\n")[:-1]
    assert [len(line) for line in lines] == [75, 75, 52]  # 75 + 74 + 51 characters
    assert all(line.startswith(" ") for line in lines[1:])
    assert "".join(line[1:] if i else line for i, line in enumerate(lines)) == "X" * 200


def test_fold_never_splits_a_utf8_sequence():
    """Multi-byte characters stay whole, so every line decodes and is <= 75 octets."""
    folded = fold("SUMMARY:" + "€" * 60 + "😀" * 30)
    assert_well_formed(folded)
    unfolded = folded.replace("\r\n ", "")
    assert unfolded == "SUMMARY:" + "€" * 60 + "😀" * 30 + "\r\n"


def test_format_utc_pads_early_years():
    """Years before 1000 keep four digits (strftime would not)."""
    assert format_utc(datetime(5, 1, 2, 3, 4, 5)) == "00050102T030405Z"
    assert format_utc(WHEN) == "20240419T140000Z"


def test_calendar_has_required_properties_and_one_event_per_dated_todo():
    """VERSION, PRODID; UID <id>@domain, DTSTAMP, UTC DTSTART; undated todos skipped."""
    text = write_calendar(
        [todo(1, "dated", "desc"), todo(2, "undated", None, None), todo(3, "no desc")],
        uid_domain="example.org",
    )
    calendar = icalendar.Calendar.from_ical(text)
    assert calendar["VERSION"] == "2.0"
    assert "TaskOverflow" in str(calendar["PRODID"])
    events = parse_events(text)
    assert [str(e["UID"]) for e in events] == ["1@example.org", "3@example.org"]
    first = events[0]
    assert str(first["SUMMARY"]) == "dated"
    assert str(first["DESCRIPTION"]) == "desc"
    assert first["DTSTART"].dt.utcoffset().total_seconds() == 0
    assert first["DTSTART"].dt.replace(tzinfo=None) == WHEN
    assert first["DTSTAMP"].dt.replace(tzinfo=None) == STAMP
    assert "DESCRIPTION" not in events[1]
    assert "None" not in text
    assert "DTSTART:20240419T140000Z\r\n" in text


def test_empty_description_is_omitted():
    """An empty description (the course's web page sends "") writes no DESCRIPTION line."""
    assert "DESCRIPTION" not in write_calendar([todo(description="")], uid_domain="d")


def test_calendar_without_todos_is_still_a_calendar():
    """No todos: a valid, empty VCALENDAR."""
    text = write_calendar([], uid_domain="d")
    assert parse_events(text) == []
    assert text.startswith("BEGIN:VCALENDAR\r\n")
    assert text.endswith("END:VCALENDAR\r\n")


def test_rendering_is_deterministic():
    """The same todos give byte-identical calendars (duplicate job runs agree)."""
    todos = [todo(i, f"t{i}") for i in range(50)]
    assert write_calendar(todos, uid_domain="d") == write_calendar(todos, uid_domain="d")


# Text the API accepts: any Unicode except surrogates and control characters, with line
# breaks and tabs allowed in descriptions. Titles are at most 80, descriptions 120 chars.
_text_chars = st.characters(blacklist_categories=("Cs", "Cc"))
titles = st.text(_text_chars, max_size=80)
descriptions = st.text(
    st.one_of(_text_chars, st.sampled_from(["\n", "\t", ";", ",", "\\", ":"])), max_size=120
)


@settings(max_examples=300, deadline=None)
@given(title=titles, description=descriptions, todo_id=st.integers(1, 2**31 - 1))
def test_any_unicode_round_trips_through_icalendar(title: str, description: str, todo_id: int):
    """Arbitrary Unicode text parses back unchanged, and every line folds correctly."""
    text = write_calendar([todo(todo_id, title, description)], uid_domain="taskoverflow.test")
    assert_well_formed(text)
    (event,) = parse_events(text)
    assert str(event["SUMMARY"]) == title
    assert str(event["UID"]) == f"{todo_id}@taskoverflow.test"
    if description:
        assert str(event["DESCRIPTION"]) == description
    else:
        assert "DESCRIPTION" not in event


@pytest.mark.parametrize("count", [0, 1, 2_500])
def test_many_todos_are_all_present(count: int):
    """Every dated todo appears exactly once, whatever the count."""
    text = write_calendar((todo(i, f"Todo {i}") for i in range(1, count + 1)), uid_domain="d")
    assert text.count("BEGIN:VEVENT\r\n") == count
    assert len(parse_events(text)) == count
