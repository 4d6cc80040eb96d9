"""Fill a Postgres database with many todos and finished jobs, in SQL, to try things at size.

    python ops/dev/fill_tables.py --todos 1000000 --jobs 1000000   # DATABASE_URL's database

Used by the benchmark (P8, P9) and by the tests that check query plans at size; a migrated
database is assumed (``alembic upgrade head``). Rows are added up to the counts given (a
table already that large is left alone), then the tables are analysed so the planner sees
their size at once, as autovacuum would in time.

The jobs are what a year of use leaves behind: finished (SUCCESS mostly, some FAILURE and
CANCELLED), with one ended attempt each, created over the last days from a few hundred
clients, and their results already expired (a result is kept a day, a record longer). None
is unfinished: the reconciler would re-send unfinished ones, and the limits count them.
"""

from __future__ import annotations

import argparse
import os
import sys

import psycopg2

#: Todos shaped like the benchmark client's own: every one dated, nine months of deadlines,
#: created a second apart up to now (one creation time for all would mislead the planner
#: about the todo list's order).
_TODOS = """
INSERT INTO todos (title, description, completed, deadline_at, created_at, updated_at)
SELECT 'Todo ' || i, 'benchmark todo ' || i, i %% 7 = 0,
       make_timestamp(2027, 1 + i %% 9, 10 + i %% 10, 9, 30, 0), t.at, t.at
FROM generate_series(%(first)s, %(last)s) AS i,
     LATERAL (SELECT (now() AT TIME ZONE 'utc') - (%(last)s - i) * interval '1 second' AS at) AS t
"""

#: Finished jobs, one a second going back from an hour ago, newest last; results expired.
_JOBS = """
INSERT INTO jobs (id, kind, status, attempts, error, result, created_at, enqueued_at,
                  started_at, finished_at, updated_at, expires_at, client)
SELECT gen_random_uuid(), 'ical', s.status, 1,
       CASE s.status WHEN 'FAILURE' THEN 'calendar too large'
                     WHEN 'CANCELLED' THEN 'cancelled on request' END,
       NULL, t.at, t.at, t.at, t.at + interval '20 ms', t.at + interval '20 ms',
       t.at - interval '1 hour', 'ip:10.0.' || (i %% 250) || '.' || (i %% 7)
FROM generate_series(%(first)s, %(last)s) AS i,
     LATERAL (SELECT (now() AT TIME ZONE 'utc') - interval '1 hour'
                     - (%(last)s - i) * interval '1 second' AS at) AS t,
     LATERAL (SELECT CASE WHEN i %% 50 = 0 THEN 'FAILURE'
                          WHEN i %% 97 = 0 THEN 'CANCELLED'
                          ELSE 'SUCCESS' END AS status) AS s
"""

#: One ended attempt per filled job (no parameters: % is itself here).
_ATTEMPTS = """
INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, outcome, error, worker)
SELECT id, 1, started_at, finished_at, lower(status), error, 'filler:1'
FROM jobs WHERE client LIKE 'ip:10.0.%' AND id NOT IN (SELECT job_id FROM job_attempts)
"""


def count(cur: psycopg2.extensions.cursor, table: str) -> int:
    cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 (our own table names)
    return int(cur.fetchone()[0])


def fill(url: str, *, todos: int = 0, jobs: int = 0) -> dict[str, int]:
    """Top ``todos`` and ``jobs`` up to the counts given; returns how many rows each now has."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            have = count(cur, "todos")
            if have < todos:
                cur.execute(_TODOS, {"first": have, "last": todos - 1})
            have = count(cur, "jobs")
            if have < jobs:
                cur.execute(_JOBS, {"first": have, "last": jobs - 1})
                cur.execute(_ATTEMPTS)
            cur.execute("ANALYZE todos, jobs, job_attempts")
            return {"todos": count(cur, "todos"), "jobs": count(cur, "jobs")}
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--todos", type=int, default=0, help="todos to have (default: leave)")
    parser.add_argument("--jobs", type=int, default=0, help="jobs to have (default: leave)")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        print(f"fill_tables: DATABASE_URL must name a Postgres database, not {url!r}")
        return 2
    print(fill(url, todos=args.todos, jobs=args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
