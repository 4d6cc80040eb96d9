"""Run the ECS task definitions from ops/terraform under podman, as Fargate would run them.

``python -m tests.deployment.parity.harness`` (``make aws-parity``) or the pytest test
``tests/deployment/test_aws_parity.py``. On a private podman network:

- ``postgres``: TLS only, SCRAM passwords (what RDS with rds.force_ssl serves);
- ``moto``: SQS and Secrets Manager. The job queues are created from Terraform's own
  aws_sqs_queue resources; the database password is a JSON secret like the RDS-managed one;
- the migration, API and worker containers, each started from its rendered container
  definition (tests/deployment/task_definitions.py): image (by digest), command, environment,
  user, read-only root filesystem, the task volume at /tmp, port, health check, stop
  timeout. What the ECS agent adds is added here too (region, task-role credentials); the
  one change to a task's environment is AWS_ENDPOINT_URL, pointing boto3 at moto.

Then: the migration runs as ops/README.md runs it (the task's command, to exit 0); the
container health check and the load balancer's health check (path, port and matcher from
Terraform) pass; a calendar job submitted through the API reaches SUCCESS and its result
parses; the password is rotated (secret and database) with everything running, every
server connection is cut, and new connections of the API and the worker still succeed; a
worker busy with a long job is stopped with the task's stopTimeout and hands it back.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests.deployment import task_definitions
from tests.deployment.podman import PODMAN, DeploymentFailure, base_image, logs
from tests.deployment.podman import podman as run_podman
from tests.processes import free_port
from tests.services import ROOT
from tests.waiting import wait_for

HERE = Path(__file__).parent
REGION = "us-east-1"
MOTO_VERSION = "5.2.5"
POLL_S = 0.5
DB_USER = DB_NAME = "taskoverflow"  # ops/terraform: local.db_username, local.db_name
#: What the ECS agent gives every Fargate task besides its definition's environment; the
#: credentials stand in for the task role's (served by the agent on AWS).
ECS_AGENT_ENV = {
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE",
    "AWS_ACCESS_KEY_ID": "parity",
    "AWS_SECRET_ACCESS_KEY": "parity",
}


def podman(*args: str, check: bool = True, timeout: float = 600) -> str:
    """Builds and waits here take minutes: a longer default than the shared helper's."""
    return run_podman(*args, check=check, timeout=timeout)


def say(message: str) -> None:
    print(f"parity: {message}", flush=True)


def build_images(tag: str) -> dict[str, str]:
    """Our two images and the two stand-ins; returns kind -> image digest (sha256:...)."""
    base = base_image()
    for name in ("postgres", "moto"):
        podman(
            "build",
            "-q",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--build-arg",
            f"MOTO_VERSION={MOTO_VERSION}",
            "-f",
            str(HERE / f"{name}.Containerfile"),
            "-t",
            f"localhost/taskoverflow-parity-{name}:latest",
            str(HERE),
        )
    digests = {}
    for kind in ("api", "worker"):
        image = f"localhost/taskoverflow-{kind}:{tag}"
        podman(
            "build",
            "-q",
            "--format",
            "docker",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "-f",
            f"Dockerfile.{kind}",
            "-t",
            image,
            str(ROOT),
        )
        digests[kind] = podman("image", "inspect", "--format", "{{.Digest}}", image)
    return digests


@dataclass
class Stack:
    """The network and everything started on it; ``close`` removes it all."""

    name: str = field(default_factory=lambda: f"to-parity-{uuid.uuid4().hex[:8]}")
    containers: list[str] = field(default_factory=list)
    scratch: tempfile.TemporaryDirectory[str] = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="to-parity-")
    )

    def __post_init__(self) -> None:
        podman("network", "create", self.name)

    def run(self, name: str, *args: str) -> str:
        full = f"{self.name}-{name}"
        self.containers.append(full)
        podman("run", "-d", "--name", full, "--network", self.name, "--network-alias", name, *args)
        return full

    def logs(self, container: str, tail: int = 40) -> str:
        return logs(container, tail)

    def close(self) -> None:
        for container in reversed(self.containers):
            podman("rm", "-f", "-t", "0", container, check=False, timeout=60)
        podman("network", "rm", "-f", self.name, check=False, timeout=60)
        self.scratch.cleanup()


def fargate_volume(stack: Stack, image: str, path: str) -> str:
    """A task volume as Fargate mounts it at ``path``: an empty root-owned 0755 directory,
    unless the image declares ``VOLUME path``, in which case Fargate first copies the
    image's directory (contents, owner and mode) into it."""
    host = Path(tempfile.mkdtemp(dir=stack.scratch.name))
    host.chmod(0o755)
    declared = json.loads(podman("image", "inspect", "--format", "{{json .Config.Volumes}}", image))
    if declared and path in declared:
        mode_owner = podman(
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "stat",
            image,
            "-c",
            "%a %u %g",
            path,
        )
        mode, uid, gid = mode_owner.split()
        podman(
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "0",
            "-v",
            f"{host}:/into",
            "--entrypoint",
            "sh",
            image,
            "-c",
            f"cp -a {path}/. /into/ && chown {uid}:{gid} /into && chmod {mode} /into",
        )
    return str(host)


def container_args(stack: Stack, task: dict[str, Any], extra_env: dict[str, str]) -> list[str]:
    """podman run arguments for an ECS container definition (Fargate, awsvpc)."""
    args = ["--user", task["user"]]
    if task.get("readonlyRootFilesystem"):
        # Only --read-only: podman would otherwise add its own writable /tmp, /run, /var/tmp.
        args += ["--read-only", "--read-only-tmpfs=false"]
    for mount in task.get("mountPoints", []):
        host = fargate_volume(stack, task["image"], mount["containerPath"])
        args += ["-v", f"{host}:{mount['containerPath']}" + (":ro" if mount["readOnly"] else "")]
    for port in task.get("portMappings", []):
        args += ["-p", f"127.0.0.1:{free_port()}:{port['containerPort']}"]
    environment = {e["name"]: e["value"] for e in task.get("environment", [])}
    for name, value in {**ECS_AGENT_ENV, **environment, **extra_env}.items():
        args += ["-e", f"{name}={value}"]
    if "secrets" in task:
        raise DeploymentFailure(
            "container secrets are not emulated: the tasks read them themselves"
        )
    return [*args, task["image"], *task.get("command", [])]


def published_port(container: str, port: int) -> int:
    return int(podman("port", container, f"{port}/tcp").rsplit(":", 1)[1])


def health_check(container: str, task: dict[str, Any]) -> bool:
    """Run the definition's healthCheck command in the container, as the ECS agent does."""
    kind, *argv = task["healthCheck"]["command"]
    if kind == "CMD-SHELL":
        argv = ["sh", "-c", " ".join(argv)]
    timeout = task["healthCheck"]["timeout"]
    done = subprocess.run(
        [*PODMAN, "exec", container, *argv], capture_output=True, timeout=timeout + 5, check=False
    )
    return done.returncode == 0


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def psql(stack: Stack, sql: str) -> str:
    """SQL as the database's superuser, over the container's local socket."""
    return podman(
        "exec",
        "-u",
        "postgres",
        f"{stack.name}-postgres",
        "/usr/lib/postgresql/15/bin/psql",
        "-h",
        "/var/run/postgresql",
        "-p",
        "5432",
        "-qtAX",
        "-d",
        DB_NAME,
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    )


def job_status(stack: Stack, job_id: str) -> tuple[str, int]:
    row = psql(stack, f"SELECT status, attempts FROM jobs WHERE id = '{job_id}'")
    status, attempts = row.split("|")
    return status, int(attempts)


def submit_job(api: str) -> str:
    status, body = http("POST", f"{api}/api/v1/todos/ical")
    if status != 202:
        raise DeploymentFailure(f"POST /api/v1/todos/ical answered {status}: {body[:300]!r}")
    task_url = json.loads(body)["task_url"]
    return task_url.rstrip("/").split("/")[-2]


def wait_job(stack: Stack, job_id: str, timeout: float, *final: str) -> tuple[str, int]:
    """The job's (status, attempts) once its status is one of ``final``."""
    return wait_for(
        lambda: job_status(stack, job_id),
        lambda seen: seen[0] in final,
        timeout=timeout,
        interval=POLL_S,
        what=f"job {job_id} to reach {'/'.join(final)} (status, attempts)",
    )


def rotate_password(stack: Stack, sm: Any, secret_arn: str) -> str:
    """What an RDS rotation does: a new password in the database and in the secret (in
    that order: clients that read the old secret meanwhile are refused and read again)."""
    new = secrets.token_urlsafe(24)
    psql(stack, f"ALTER ROLE {DB_USER} PASSWORD '{new}'")
    sm.put_secret_value(
        SecretId=secret_arn, SecretString=json.dumps({"username": DB_USER, "password": new})
    )
    return new


def cut_connections(stack: Stack) -> int:
    """End every server connection of the application, as a failover or restart would."""
    return int(
        psql(
            stack,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE usename = '{DB_USER}'",
        )
    )


def run(tag: str = "parity", *, keep: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    started = time.monotonic()
    say("building images (cached after the first run)")
    digests = build_images(tag)
    stack = Stack()
    try:
        figures.update(_run(stack, digests))
    except Exception:
        for container in stack.containers:
            print(f"--- {container}\n{stack.logs(container)}", file=sys.stderr)
        raise
    finally:
        if not keep:
            stack.close()
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def _run(stack: Stack, digests: dict[str, str]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    password = secrets.token_urlsafe(24)
    say("postgres (TLS only, SCRAM) and moto (SQS, Secrets Manager)")
    stack.run(
        "postgres",
        "-e",
        f"POSTGRES_USER={DB_USER}",
        "-e",
        f"POSTGRES_PASSWORD={password}",
        "-e",
        f"POSTGRES_DB={DB_NAME}",
        "localhost/taskoverflow-parity-postgres:latest",
    )
    moto = stack.run(
        "moto", "-p", f"127.0.0.1:{free_port()}:5000", "localhost/taskoverflow-parity-moto:latest"
    )
    moto_url = f"http://127.0.0.1:{published_port(moto, 5000)}"
    wait_for(
        lambda: http("GET", f"{moto_url}/moto-api/")[0],
        lambda status: status == 200,
        timeout=60,
        interval=POLL_S,
        what="moto to answer 200",
    )
    wait_for(lambda: _postgres_ready(stack), timeout=60, interval=POLL_S, what="postgres")

    aws = {
        "region_name": REGION,
        "endpoint_url": moto_url,
        "aws_access_key_id": "parity",
        "aws_secret_access_key": "parity",
    }
    sm = boto3.client("secretsmanager", **aws)
    secret_arn = sm.create_secret(
        Name=f"rds!db-{uuid.uuid4()}",  # the RDS-managed secret's form
        SecretString=json.dumps({"username": DB_USER, "password": password}),
    )["ARN"]

    say("rendering the task definitions from ops/terraform")
    parsed = task_definitions.render(
        task_definitions.AwsFacts(
            db_endpoint="postgres:5432",
            db_secret_arn=secret_arn,
            repository_url="localhost/taskoverflow-{kind}",
            image_digests=digests,
        )
    )
    tasks = task_definitions.container_definitions(parsed)
    _create_queues(parsed, boto3.client("sqs", **aws))
    # The one change to the tasks' environment: boto3 talks to moto instead of AWS.
    endpoint = {"AWS_ENDPOINT_URL": "http://moto:5000"}

    say("migration task (its command: alembic upgrade head)")
    migrate = stack.run("migrate", *container_args(stack, tasks["migrate"], endpoint))
    code = podman("wait", migrate, timeout=180)
    if code != "0":
        raise DeploymentFailure(f"the migration task exited {code}:\n{stack.logs(migrate)}")
    figures["migration_exit_code"] = 0

    say("API and worker tasks")
    api_name = stack.run("api", *container_args(stack, tasks["api"], endpoint))
    worker_1 = stack.run("worker-1", *container_args(stack, tasks["worker"], endpoint))
    port = tasks["api"]["portMappings"][0]["containerPort"]
    api = f"http://127.0.0.1:{published_port(api_name, port)}"
    wait_for(
        lambda: health_check(api_name, tasks["api"]),
        timeout=60,
        interval=1,
        what="the container health check",
    )
    target_group = task_definitions.resource(parsed, "aws_lb_target_group", "api")["health_check"]
    ready_url = f"{api}{target_group['path']}"  # port "traffic-port": the container port

    def alb_healthy() -> bool:
        return str(http("GET", ready_url)[0]) == str(target_group["matcher"])

    wait_for(alb_healthy, timeout=60, interval=POLL_S, what="the load balancer's health check")
    figures["alb_health_check"] = target_group["path"]
    _writable_tmp(api_name, worker_1)

    say("a calendar job through the API")
    status, body = http(
        "POST",
        f"{api}/api/v1/todos",
        {"title": "Parity; todo", "deadline_at": "2030-01-01T09:00:00"},
    )
    if status != 201:
        raise DeploymentFailure(f"POST /api/v1/todos answered {status}: {body[:300]!r}")
    figures["first_job"] = _calendar_job(stack, api, "Parity; todo", worker_1)

    say("rotating the database password with everything running")
    rotate_password(stack, sm, secret_arn)
    figures["connections_cut"] = cut_connections(stack)
    wait_for(alb_healthy, timeout=30, interval=POLL_S, what="readiness after the rotation")
    figures["after_rotation"] = _calendar_job(stack, api, "Parity; todo", worker_1)

    say("SIGTERM, with the task's stopTimeout, to a worker busy with a long job")
    psql(
        stack,
        "INSERT INTO todos (title, completed, deadline_at, created_at, updated_at) "
        "SELECT 'Todo ' || i, false, now() + i * interval '1 minute', now(), now() "
        "FROM generate_series(1, 600000) AS i",
    )
    job = submit_job(api)
    wait_job(stack, job, 60, "STARTED")
    stop_timeout = int(tasks["worker"]["stopTimeout"])
    began = time.monotonic()
    podman("stop", "-t", str(stop_timeout), worker_1, timeout=stop_timeout + 30)
    figures["worker_stop_s"] = round(time.monotonic() - began, 1)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", worker_1)
    if code != "0":
        raise DeploymentFailure(f"the worker exited {code} (137: killed at stopTimeout)")
    # ECS replaces the stopped task; the replacement runs the handed-back job.
    stack.run("worker-2", *container_args(stack, tasks["worker"], endpoint))
    final, attempts = wait_job(stack, job, 120, "SUCCESS", "FAILURE")
    if (final, attempts) != ("SUCCESS", 2):
        raise DeploymentFailure(
            f"the interrupted job ended {final} after {attempts} attempts, not SUCCESS after 2"
        )
    figures["handed_back_job"] = f"{final}, attempts {attempts}"
    return figures


def _calendar_job(stack: Stack, api: str, summary: str, worker: str) -> str:
    """Submit a calendar job; it must succeed and its result parse with the todo in it."""
    job = submit_job(api)
    final, _ = wait_job(stack, job, 90, "SUCCESS", "FAILURE")
    if final != "SUCCESS":
        raise DeploymentFailure(f"job {job} ended {final}:\n{stack.logs(worker)}")
    _check_calendar(api, job, summary)
    return final


def _postgres_ready(stack: Stack) -> bool:
    try:
        return psql(stack, "SELECT 1") == "1"
    except DeploymentFailure:
        return False


def _create_queues(parsed: dict[str, Any], sqs: Any) -> None:
    """The job queue and its DLQ with the attributes Terraform gives them."""
    dlq = task_definitions.resource(parsed, "aws_sqs_queue", "jobs_dlq")
    dlq_url = sqs.create_queue(QueueName=dlq["name"])["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    jobs = task_definitions.resource(parsed, "aws_sqs_queue", "jobs")
    redrive = (
        json.loads(jobs["redrive_policy"]) if isinstance(jobs.get("redrive_policy"), str) else {}
    )
    sqs.create_queue(
        QueueName=jobs["name"],
        Attributes={
            "VisibilityTimeout": str(jobs["visibility_timeout_seconds"]),
            "ReceiveMessageWaitTimeSeconds": str(jobs["receive_wait_time_seconds"]),
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": dlq_arn,
                    "maxReceiveCount": redrive.get("maxReceiveCount", 5),
                }
            ),
        },
    )


def _writable_tmp(*containers: str) -> None:
    """uid 10001 can write to the task volume at /tmp (and nowhere else)."""
    for container in containers:
        probe = "import tempfile; tempfile.NamedTemporaryFile(dir='/tmp').write(b'x')"
        if subprocess.run(
            [*PODMAN, "exec", container, "python", "-c", probe], capture_output=True, check=False
        ).returncode:
            raise DeploymentFailure(f"{container}: /tmp is not writable by its user")
        rootfs = "open('/app/probe', 'w')"
        if not subprocess.run(
            [*PODMAN, "exec", container, "python", "-c", rootfs], capture_output=True, check=False
        ).returncode:
            raise DeploymentFailure(f"{container}: the root filesystem is writable")


def _check_calendar(api: str, job: str, summary: str) -> None:
    from icalendar import Calendar

    status, body = http("GET", f"{api}/api/v1/todos/ical/{job}/result")
    if status != 200:
        raise DeploymentFailure(f"result of job {job}: {status}")
    calendar = Calendar.from_ical(body)
    summaries = [str(event.get("summary")) for event in calendar.walk("VEVENT")]
    if summary not in summaries:
        raise DeploymentFailure(f"result of job {job} lacks the todo: {summaries[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--tag", default="parity", help="tag of the images built and run")
    args = parser.parse_args()
    figures = run(args.tag, keep=args.keep)
    say("passed: " + json.dumps(figures))


if __name__ == "__main__":
    main()
