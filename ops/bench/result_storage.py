"""How to keep a large job result in Postgres: the measurements behind models/results.py.

    python ops/bench/result_storage.py                 # a 1,000,000-event calendar (~2 min)
    python ops/bench/result_storage.py --events 100000

For one calendar-shaped text (rendered by the worker's own writer from generated rows, no
todos read), each way of storing it runs in a fresh process against a scratch table in
database taskoverflow_storage (created, then dropped):

- ``text-lz4``: a text value, compressed by Postgres (TOAST, LZ4): what jobs.result was;
- ``bytea-raw``: the UTF-8 bytes, out of line and uncompressed (STORAGE EXTERNAL);
- ``bytea-gzip``: one gzip stream (level 1) compressed as it is rendered, stored as
  ``bytea-raw`` is: what jobs.result is now;
- ``large-object``: the text written to a large object a MiB at a time.

For each: the process's peak RSS while it renders and writes, the time to write, the bytes
stored, the time to read it whole, and the time to read one 1 MiB slice at its end (what a
streamed download needs, a slice at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import psycopg2

from models.results import gzip_lines
from workers.ical import CalendarTodo, render_lines

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
URL = "postgresql://postgres@127.0.0.1:5432/taskoverflow_storage"
WAYS = ("text-lz4", "bytea-raw", "bytea-gzip", "large-object")
SLICE = 1024 * 1024

_TABLES = {
    "text-lz4": "CREATE TABLE probe (id int PRIMARY KEY, value text COMPRESSION lz4)",
    "bytea-raw": "CREATE TABLE probe (id int PRIMARY KEY, value bytea);"
    "ALTER TABLE probe ALTER COLUMN value SET STORAGE EXTERNAL",
    "bytea-gzip": "CREATE TABLE probe (id int PRIMARY KEY, value bytea);"
    "ALTER TABLE probe ALTER COLUMN value SET STORAGE EXTERNAL",
    "large-object": "CREATE TABLE probe (id int PRIMARY KEY, value oid)",
}


def lines(events: int) -> Iterator[str]:
    rows = (
        (
            i,
            f"Todo {i}",
            f"benchmark todo {i}",
            f"2027{1 + i % 9:02d}{10 + i % 10:02d}T093000Z",
            "20261203T101500Z",
        )
        for i in range(1, events + 1)
    )
    return render_lines(cast("Iterator[CalendarTodo]", rows), uid_domain="taskoverflow.example")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_way(way: str, events: int) -> dict[str, object]:
    """Render and store the calendar one ``way``, then read it back: the figures."""
    conn = psycopg2.connect(URL)
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS probe")
        cur.execute(_TABLES[way])
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        if way == "text-lz4":
            cur.execute("INSERT INTO probe VALUES (1, %s)", ("".join(lines(events)),))
        elif way == "bytea-raw":
            data = "".join(lines(events)).encode()
            cur.execute("INSERT INTO probe VALUES (1, %s)", (psycopg2.Binary(data),))
            del data
        elif way == "bytea-gzip":
            cur.execute("INSERT INTO probe VALUES (1, %s)", (gzip_lines(lines(events)).data,))
        else:
            lobject = conn.lobject(0, "wb")
            batch: list[str] = []
            for line in lines(events):
                batch.append(line)
                if len(batch) >= 5000:
                    lobject.write("".join(batch).encode())
                    batch.clear()
            lobject.write("".join(batch).encode())
            cur.execute("INSERT INTO probe VALUES (1, %s)", (lobject.oid,))
            lobject.close()
    wrote = time.perf_counter() - started
    peak = peak_rss_mib()
    with conn, conn.cursor() as cur:
        if way == "large-object":
            cur.execute(
                "SELECT sum(octet_length(data)) FROM pg_largeobject WHERE loid = "
                "(SELECT value FROM probe)"
            )
            stored = int(cur.fetchone()[0])  # pages as kept (large objects are not compressed)
            whole_sql = "SELECT lo_get(value) FROM probe"
            length_sql = "SELECT octet_length(lo_get(value)) FROM probe"
            slice_sql = "SELECT lo_get(value, %s, %s) FROM probe"
        else:
            cur.execute("SELECT pg_column_size(value) FROM probe")
            stored = int(cur.fetchone()[0])
            whole_sql = "SELECT value FROM probe"
            length_sql = "SELECT octet_length(value) FROM probe"
            # text counts characters from 1; bytea and large objects bytes (lo_get from 0).
            slice_sql = "SELECT substr(value, %s, %s) FROM probe"
        cur.execute(length_sql)
        length = int(cur.fetchone()[0])
        started = time.perf_counter()
        cur.execute(whole_sql)
        whole = cur.fetchone()[0]
        read_whole = time.perf_counter() - started
        if way == "bytea-gzip":
            text_bytes = len(zlib.decompress(bytes(whole), 16 + zlib.MAX_WBITS))
        else:
            text_bytes = len(whole.encode() if isinstance(whole, str) else bytes(whole))
        del whole
        start = max(length - SLICE, 0) + (0 if way == "large-object" else 1)
        started = time.perf_counter()
        cur.execute(slice_sql, (start, SLICE))
        cur.fetchone()
        read_slice = time.perf_counter() - started
    with conn, conn.cursor() as cur:
        if way == "large-object":
            cur.execute("SELECT lo_unlink(value) FROM probe")
        cur.execute("DROP TABLE probe")
    conn.close()
    return {
        "way": way,
        "text_mb": round(text_bytes / 1e6, 1),
        "stored_mb": round(stored / 1e6, 1),
        "write_s": round(wrote, 2),
        "peak_rss_mib": round(peak),
        "read_whole_s": round(read_whole, 2),
        "read_last_mib_ms": round(read_slice * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one, in this process
    args = parser.parse_args()
    if args.way:
        print(json.dumps(one_way(args.way, args.events)))
        return 0
    admin = psycopg2.connect(ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS taskoverflow_storage")
        cur.execute("CREATE DATABASE taskoverflow_storage")
    try:
        rows = []
        for way in WAYS:
            out = subprocess.run(
                [sys.executable, __file__, "--events", str(args.events), "--way", way],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "262144"},
            )
            rows.append(json.loads(out.stdout))
            print(rows[-1], flush=True)
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS taskoverflow_storage")
        admin.close()
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
