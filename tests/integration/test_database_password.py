"""The database password as on AWS, with the real drivers: TLS demanded by the server, SCRAM
passwords, the password in a Secrets Manager secret (moto), rotated while engines are open.

The machine's own Postgres trusts every local connection, so these tests start a private
cluster (Debian's PostgreSQL binaries, run as the postgres OS user) that accepts only TLS
connections and only SCRAM passwords, as RDS with rds.force_ssl does.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from sqlalchemy import text

from api import queries
from api.database import Database, create_api_engine
from models.engine import create_db_engine
from models.settings import DatabaseSettings
from tests.processes import BIN, free_port, run

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
pytestmark = pytest.mark.skipif(
    PG_BIN is None or shutil.which("runuser") is None or shutil.which("openssl") is None,
    # The pgserver wheel's Postgres (the private server on a machine without one) is built
    # without TLS, which these tests are about.
    reason="needs the machine's PostgreSQL server binaries with TLS (Debian: apt-get install "
    "postgresql), runuser and openssl",
)


@dataclass
class Cluster:
    port: int
    data: Path
    superuser_password: str

    def sql(self, statement: str, database: str = "postgres") -> str:
        """As the superuser, over TLS with its password (the only way in)."""
        done = run(
            [str(PG_BIN / "psql"), "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", statement],
            {
                "PGHOST": "127.0.0.1",
                "PGPORT": str(self.port),
                "PGUSER": "postgres",
                "PGDATABASE": database,
                "PGPASSWORD": self.superuser_password,
                "PGSSLMODE": "require",
            },
            timeout=30,
            check=True,
        )
        return done.stdout.strip()


def as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    assert PG_BIN is not None
    root = Path(tempfile.mkdtemp(prefix="taskoverflow-scram-"))
    data, superuser = root / "data", secrets.token_urlsafe(16)
    (root / "pw").write_text(superuser)
    shutil.chown(root, "postgres")
    shutil.chown(root / "pw", "postgres")
    as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                f"--pwfile={root / 'pw'}")  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(data / "server.key"),
         "-out", str(data / "server.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    for name in ("server.key", "server.crt"):
        shutil.chown(data / name, "postgres")
    (data / "server.key").chmod(0o600)
    (data / "pg_hba.conf").write_text(
        "hostnossl all all 127.0.0.1/32 reject\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
    )
    port = free_port()
    options = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
        "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
    )
    as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                str(root / "log"), "-w", "start")  # fmt: skip
    try:
        yield Cluster(port, data, superuser)
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class App:
    """An application user and database, and the secret holding its password."""

    url: str
    secret_arn: str
    secrets_client: object
    password: str


@pytest.fixture
def app(cluster: Cluster, sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> App:
    name = f"app_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    cluster.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    cluster.sql(f"CREATE DATABASE {name} OWNER {name}")
    # The tasks' boto3 finds Secrets Manager like this on ECS (here: moto).
    monkeypatch.setenv("AWS_ENDPOINT_URL", sqs_endpoint)
    client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=sqs_endpoint)
    arn = client.create_secret(
        Name=f"rds!db-{name}", SecretString=json.dumps({"username": name, "password": password})
    )["ARN"]
    url = f"postgresql://{name}@127.0.0.1:{cluster.port}/{name}?sslmode=require"
    return App(url, arn, client, password)


def rotate(cluster: Cluster, app: App) -> None:
    """What an RDS rotation does, then a failover's worth of cut connections."""
    user = app.url.split("//")[1].split("@")[0]
    new = secrets.token_urlsafe(16)
    cluster.sql(f"ALTER ROLE {user} PASSWORD '{new}'")
    app.secrets_client.put_secret_value(  # type: ignore[attr-defined]
        SecretId=app.secret_arn, SecretString=json.dumps({"username": user, "password": new})
    )
    cluster.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}'")  # noqa: S608


def settings(app: App, **extra: str) -> DatabaseSettings:
    return DatabaseSettings.from_env(
        {"DATABASE_URL": app.url, "DB_PASSWORD_SECRET_ARN": app.secret_arn, **extra}
    )


def worker_select(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT 1")).scalar_one())


def test_worker_engine_reads_the_secret_and_survives_a_rotation(cluster: Cluster, app: App):
    """psycopg2 (workers): TLS + SCRAM with the secret's password; after a rotation and cut
    connections, new connections read the new password with no restart."""
    engine = create_db_engine(settings(app), application_name="test", pool_size=2)
    try:
        assert worker_select(engine) == 1
        rotate(cluster, app)
        assert worker_select(engine) == 1
        ssl = cluster.sql("SELECT count(*) FROM pg_stat_ssl WHERE ssl")
        assert int(ssl) >= 1
    finally:
        engine.dispose()


def test_a_password_read_once_fails_after_a_rotation(cluster: Cluster, app: App):
    """What the code did before: the password fixed at start (ECS secret injection)."""
    fixed = DatabaseSettings.from_env({"DATABASE_URL": app.url, "DB_PASSWORD": app.password})
    engine = create_db_engine(fixed, application_name="test", pool_size=1)
    try:
        assert worker_select(engine) == 1
        rotate(cluster, app)
        with pytest.raises(Exception, match="password authentication failed"):
            worker_select(engine)
    finally:
        engine.dispose()


def test_api_engine_takes_sslmode_and_survives_a_rotation(cluster: Cluster, app: App):
    """asyncpg (the API): ?sslmode=require is accepted (it used to be a TypeError on every
    connection), and the readiness query works before and after a rotation."""

    async def scenario() -> None:
        engine = create_api_engine(settings(app), application_name="test")
        db = Database(engine)
        try:
            assert (await db.fetch_one(queries.DATABASE_PING)) is not None
            rotate(cluster, app)
            assert (await db.fetch_one(queries.DATABASE_PING)) is not None
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_alembic_upgrade_authenticates_with_the_secret(cluster: Cluster, app: App):
    """The migration task's command, with the task's variables: DATABASE_URL carries no
    password; DB_PASSWORD_SECRET_ARN names the secret."""
    done = run(
        [str(BIN / "alembic"), "upgrade", "head"],
        {"DATABASE_URL": app.url, "DB_PASSWORD_SECRET_ARN": app.secret_arn, "LOG_FORMAT": "json"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    user = app.url.split("//")[1].split("@")[0]
    owned_by = f"WHERE tableowner = '{user}'"
    tables = cluster.sql(
        f"SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables {owned_by}",  # noqa: S608
        database=user,
    )
    assert {"jobs", "todos"} <= set(tables.split(","))
