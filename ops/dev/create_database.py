"""Create the Postgres database named by DATABASE_URL if it does not exist (development aid)."""

import os
import sys
from urllib.parse import urlsplit

import psycopg2
from psycopg2 import sql


def main() -> int:
    url = os.environ.get("DATABASE_URL", "")
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        print(f"create_database: not a Postgres URL, nothing to do: {url!r}")
        return 0
    name = parts.path.lstrip("/")
    admin = parts._replace(scheme="postgresql", path="/postgres").geturl()
    try:
        conn = psycopg2.connect(admin, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        print(
            f"create_database: cannot reach Postgres at {parts.hostname}:{parts.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"create_database: created {name}")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
