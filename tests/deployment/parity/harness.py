"""Run the ECS task definitions Terraform registers under podman, as Fargate would run them.

``python -m tests.deployment.parity.harness`` (``make aws-parity``) or the pytest test
``tests/deployment/test_aws_parity.py``. On a private podman network:

- ``moto`` (published on 127.0.0.1): the AWS account. ``terraform apply`` of ops/terraform,
  with the real hashicorp/aws provider (tests/deployment/terraform_run.py: the substitute
  files push the images through moto's ECR API; what moto cannot do is left out,
  MOTO_GAPS), creates everything in it: the queues, the RDS instance and its managed
  password secret, the ECR repositories, the load balancer's target group, the task
  definitions. The apply's own migration step is one of the MOTO_GAPS (moto's RunTask
  fails for our task definitions): the migrate task definition is run below instead, for
  real, as an operator runs it with migrate_on_apply = false.
- the task definitions are read back from moto's ECS (DescribeTaskDefinition) and their
  container definitions are run as registered: command, environment, user, read-only root
  filesystem, the task volume at /tmp, port, health check, stop timeout. Each image is
  ``<ECR repository>@<digest>``: the digest must be the one moto's ECR holds for the tag,
  and the manifest pushed there must name the local image's config (its ID), which then
  runs in its place (podman cannot pull from moto's ECR; the one substitution). What the
  ECS agent adds is added here too (region, task-role credentials); the one change to a
  task's environment is AWS_ENDPOINT_URL, pointing boto3 at moto;
- ``postgres``: TLS only, SCRAM passwords (what RDS with rds.force_ssl serves), reachable
  under the RDS endpoint's hostname from the definitions' DATABASE_URL, with the password
  the definitions' DB_PASSWORD_SECRET_ARN (the RDS-managed secret) holds.

Then: the migration runs as ops/README.md runs it (the task's command, to exit 0); the
container health check and the load balancer's health check (path, port and matcher as
registered on the target group) pass; a calendar job submitted through the API reaches
SUCCESS and its result parses; the password is rotated (secret and database) with
everything running, every server connection is cut, and new connections of the API and the
worker still succeed; a worker busy with a long job is stopped with the task's stopTimeout
and hands it back.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
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
from urllib.parse import urlsplit

from tests.deployment.podman import PODMAN, DeploymentFailure, base_image, logs
from tests.deployment.podman import podman as run_podman
from tests.deployment.terraform_run import Workspace, moto_client
from tests.processes import free_port
from tests.services import ROOT
from tests.waiting import wait_for

HERE = Path(__file__).parent
REGION = "us-east-1"
MOTO_VERSION = "5.2.5"
POLL_S = 0.5
DB_USER = DB_NAME = "taskoverflow"  # ops/terraform: local.db_username, local.db_name
#: The task definitions' kinds: families <var.name>-<kind>.
TASKS = ("api", "worker", "migrate")
#: An apply against moto takes minutes (RDS, ALB and SQS creation wait provider-side).
APPLY_TIMEOUT_S = 900
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
    """Our two images and the two stand-ins; returns kind -> our local image."""
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
    images = {}
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
        images[kind] = image
    return images


def manifest(image: str) -> str:
    """A Docker schema 2 manifest naming a local image's config (its ID) and layers, which
    Terraform pushes to moto's ECR in place of ``docker push`` (sizes left out: moto does
    not check them, and nothing pulls)."""
    (inspected,) = json.loads(podman("image", "inspect", image))
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": f"sha256:{inspected['Id']}",
            },
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": layer}
                for layer in inspected["RootFS"]["Layers"]
            ],
        }
    )


@dataclass
class Stack:
    """The network and everything started on it; ``close`` removes it all."""

    name: str = field(default_factory=lambda: f"to-parity-{uuid.uuid4().hex[:8]}")
    containers: list[str] = field(default_factory=list)
    #: The task volumes and the Terraform workspace; a plain directory, so that --keep keeps
    #: it past the harness's exit (a running task's /tmp is in it).
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="to-parity-")))

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
        shutil.rmtree(self.scratch, ignore_errors=True)


def fargate_volume(stack: Stack, image: str, path: str) -> str:
    """A task volume as Fargate mounts it at ``path``: an empty root-owned 0755 directory,
    unless the image declares ``VOLUME path``, in which case Fargate first copies the
    image's directory (contents, owner and mode) into it."""
    host = Path(tempfile.mkdtemp(dir=stack.scratch))
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


# --- What Terraform registered in moto -------------------------------------------------------


@dataclass
class Deployment:
    """What the harness runs, all of it read back from moto after ``terraform apply``."""

    #: kind -> containerDefinitions[0] of the registered task definition, its image replaced
    #: by the local one (``registered_images``).
    tasks: dict[str, dict[str, Any]]
    #: kind -> task definition ARN (moto's, equal to the one in Terraform's state).
    arns: dict[str, str]
    #: kind -> the image digest the task definition pins.
    digests: dict[str, str]
    #: The RDS endpoint (DATABASE_URL's host and port) and the RDS-managed password secret.
    db_host: str
    db_port: int
    db_secret_arn: str
    #: The API target group's health check: path, port on the container, matcher (HttpCode).
    health_path: str
    health_port: int
    health_matcher: str


def apply_terraform(stack: Stack, moto_url: str, images: dict[str, str], tag: str) -> Workspace:
    """``terraform apply`` of ops/terraform against moto; each ECR repository gets a
    manifest of our local image of that kind (``manifest``)."""
    workspace = Workspace(stack.scratch, moto_url)
    workspace.init()
    workspace.leave_out_moto_gaps()
    workspace.apply(
        {
            "deletion_protection": False,
            "image_tag": tag,
            "substitute_image_manifests": {kind: manifest(i) for kind, i in images.items()},
        },
        timeout=APPLY_TIMEOUT_S,
    )
    return workspace


def read_deployment(
    workspace: Workspace, moto_url: str, images: dict[str, str], tag: str
) -> Deployment:
    shown = json.loads(workspace.run("output", "-json").stdout)
    outputs = {key: output["value"] for key, output in shown.items()}
    state = json.loads(workspace.run("show", "-json").stdout)
    name = outputs["cluster_name"]  # var.name: the cluster's, the families' prefix
    ecs = moto_client("ecs", moto_url)

    in_state = {
        resource["name"]: resource["values"]["arn"]
        for resource in state["values"]["root_module"]["resources"]
        if resource["type"] == "aws_ecs_task_definition"
    }
    definitions, arns = {}, {}
    for kind in TASKS:
        described = ecs.describe_task_definition(taskDefinition=f"{name}-{kind}")
        registered = described["taskDefinition"]
        arns[kind] = registered["taskDefinitionArn"]
        if in_state.get(kind) != arns[kind]:
            raise DeploymentFailure(
                f"moto's {name}-{kind} is {arns[kind]}, Terraform's state has {in_state.get(kind)}"
            )
        (definitions[kind],) = registered["containerDefinitions"]
        volumes = {volume["name"] for volume in registered.get("volumes", [])}
        for mount in definitions[kind].get("mountPoints", []):
            if mount["sourceVolume"] not in volumes:
                raise DeploymentFailure(f"{kind}: mount of undeclared volume {mount}")

    tasks, digests = registered_images(
        moto_client("ecr", moto_url), outputs["ecr_repositories"], definitions, images, tag
    )
    db_host, db_port, db_secret_arn = database_endpoint(moto_client("rds", moto_url), definitions)
    path, port, matcher = health_check_of_target_group(
        ecs, moto_client("elbv2", moto_url), name, arns["api"], definitions["api"]
    )
    return Deployment(tasks, arns, digests, db_host, db_port, db_secret_arn, path, port, matcher)


def registered_images(
    ecr: Any,
    repositories: dict[str, str],
    definitions: dict[str, dict[str, Any]],
    images: dict[str, str],
    tag: str,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each definition's image is ``<ECR repository URL>@<digest>``: that digest must be what
    moto's ECR holds for ``tag`` in that repository, and the manifest it holds must name our
    local image's config. Then the local image runs in its place: podman cannot pull from
    moto's ECR, and this mapping is the one substitution in what the tasks run."""
    kind_of = {url: kind for kind, url in repositories.items()}
    tasks, digests = {}, {}
    for task, definition in definitions.items():
        url, _, digest = definition["image"].partition("@")
        if url not in kind_of or not digest.startswith("sha256:"):
            raise DeploymentFailure(f"{task}: {definition['image']} is no ECR image by digest")
        kind, repository = kind_of[url], url.split("/", 1)[1]
        (held,) = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])[
            "imageDetails"
        ]
        if held["imageDigest"] != digest:
            raise DeploymentFailure(
                f"{task} pins {digest}; {repository}:{tag} is {held['imageDigest']}"
            )
        (image,) = ecr.batch_get_image(
            repositoryName=repository, imageIds=[{"imageDigest": digest}]
        )["images"]
        config = json.loads(image["imageManifest"])["config"]["digest"]
        local_id = "sha256:" + podman("image", "inspect", "--format", "{{.Id}}", images[kind])
        if config != local_id:
            raise DeploymentFailure(f"{repository}@{digest} is not {images[kind]} ({local_id})")
        tasks[task] = {**definition, "image": images[kind]}
        digests[task] = digest
    return tasks, digests


def database_endpoint(rds: Any, definitions: dict[str, dict[str, Any]]) -> tuple[str, int, str]:
    """DATABASE_URL's host and port (the RDS instance's endpoint) and DB_PASSWORD_SECRET_ARN
    (its managed secret), the same in every definition."""
    environments = [
        {e["name"]: e["value"] for e in definition.get("environment", [])}
        for definition in definitions.values()
    ]
    (url,) = {environment["DATABASE_URL"] for environment in environments}
    (secret_arn,) = {environment["DB_PASSWORD_SECRET_ARN"] for environment in environments}
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 5432
    if (parts.username, parts.path.lstrip("/")) != (DB_USER, DB_NAME):
        raise DeploymentFailure(f"DATABASE_URL {url}: not {DB_USER}@.../{DB_NAME}")
    instances = [
        instance
        for instance in rds.describe_db_instances()["DBInstances"]
        if (instance["Endpoint"]["Address"], instance["Endpoint"]["Port"]) == (host, port)
    ]
    if len(instances) != 1:
        raise DeploymentFailure(f"DATABASE_URL {url}: no RDS instance has that endpoint")
    if instances[0]["MasterUserSecret"]["SecretArn"] != secret_arn:
        raise DeploymentFailure(f"DB_PASSWORD_SECRET_ARN {secret_arn} is not the RDS secret")
    if port != 5432:
        raise DeploymentFailure(f"the RDS endpoint's port is {port}: postgres listens on 5432")
    return host, port, secret_arn


def health_check_of_target_group(
    ecs: Any, elbv2: Any, name: str, api_arn: str, api: dict[str, Any]
) -> tuple[str, int, str]:
    """The load balancer's health check of the API tasks: the target group the API service
    registers its container in, as created (path, port, matcher)."""
    (service,) = ecs.describe_services(cluster=name, services=[f"{name}-api"])["services"]
    if service["taskDefinition"] != api_arn:
        raise DeploymentFailure(f"the API service runs {service['taskDefinition']}, not {api_arn}")
    (balanced,) = service["loadBalancers"]
    ports = [mapping["containerPort"] for mapping in api.get("portMappings", [])]
    if balanced["containerName"] != api["name"] or balanced["containerPort"] not in ports:
        raise DeploymentFailure(f"the load balancer targets {balanced}, not a port of the API")
    (group,) = elbv2.describe_target_groups(TargetGroupArns=[balanced["targetGroupArn"]])[
        "TargetGroups"
    ]
    if group["HealthCheckProtocol"] != "HTTP":
        raise DeploymentFailure(f"health check over {group['HealthCheckProtocol']}")
    port = group["HealthCheckPort"]
    # "traffic-port": the port the target is registered on, the container's (target_type ip).
    port = balanced["containerPort"] if port == "traffic-port" else int(port)
    return group["HealthCheckPath"], port, group["Matcher"]["HttpCode"]


def matches(status: int, matcher: str) -> bool:
    """A target group matcher's HttpCode: "200", "200,202" or "200-299"."""
    for part in matcher.split(","):
        low, _, high = part.strip().partition("-")
        if int(low) <= status <= int(high or low):
            return True
    return False


def database_password(sm: Any, secret_arn: str) -> tuple[str, str]:
    """The password postgres starts with, and how it got into the RDS-managed secret.

    moto's RDS creates the managed secret with ``{"username": "admin", "password":
    "P@55w0rd!"}`` (moto 5.2.5): not the instance's master username, and one fixed password
    for every instance. RDS's own secret holds the master username and a password it
    generated. So unless moto's holds our username, a fresh password is written into that
    same secret in RDS's form (a new version, as a rotation writes), and postgres starts
    with it; the tasks read it from the secret as on AWS."""
    held = json.loads(sm.get_secret_value(SecretId=secret_arn)["SecretString"])
    if held.get("username") == DB_USER and held.get("password"):
        return str(held["password"]), "moto's"
    password = secrets.token_urlsafe(24)
    sm.put_secret_value(
        SecretId=secret_arn, SecretString=json.dumps({"username": DB_USER, "password": password})
    )
    return password, f"written (moto's had username {held.get('username')!r})"


def run(tag: str = "parity", *, keep: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    started = time.monotonic()
    say("building images (cached after the first run)")
    images = build_images(tag)
    stack = Stack()
    try:
        figures.update(_run(stack, images, tag))
    except Exception:
        for container in stack.containers:
            print(f"--- {container}\n{stack.logs(container)}", file=sys.stderr)
        raise
    finally:
        if keep:
            say(f"kept: network {stack.name}, scratch {stack.scratch} (terraform/ in it)")
        else:
            stack.close()
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def _run(stack: Stack, images: dict[str, str], tag: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    say("moto (the AWS account)")
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

    say(f"terraform apply of ops/terraform against moto (minutes; at most {APPLY_TIMEOUT_S} s)")
    began = time.monotonic()
    workspace = apply_terraform(stack, moto_url, images, tag)
    figures["terraform_apply_s"] = round(time.monotonic() - began, 1)
    deployment = read_deployment(workspace, moto_url, images, tag)
    tasks = deployment.tasks
    figures["task_definitions"] = deployment.arns
    figures["image_digests"] = deployment.digests
    figures["db_endpoint"] = f"{deployment.db_host}:{deployment.db_port}"

    sm = moto_client("secretsmanager", moto_url)
    password, figures["db_password"] = database_password(sm, deployment.db_secret_arn)
    say("postgres (TLS only, SCRAM) under the RDS endpoint's hostname")
    stack.run(
        "postgres",
        # The tasks resolve DATABASE_URL's host as on AWS: the RDS endpoint's name.
        "--network-alias",
        deployment.db_host,
        "-e",
        f"POSTGRES_USER={DB_USER}",
        "-e",
        f"POSTGRES_PASSWORD={password}",
        "-e",
        f"POSTGRES_DB={DB_NAME}",
        "localhost/taskoverflow-parity-postgres:latest",
    )
    wait_for(lambda: _postgres_ready(stack), timeout=60, interval=POLL_S, what="postgres")
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
    health_url = (
        f"http://127.0.0.1:{published_port(api_name, deployment.health_port)}"
        f"{deployment.health_path}"
    )

    def alb_healthy() -> bool:
        return matches(http("GET", health_url)[0], deployment.health_matcher)

    wait_for(alb_healthy, timeout=60, interval=POLL_S, what="the load balancer's health check")
    figures["alb_health_check"] = (
        f"{deployment.health_path} on {deployment.health_port}: {deployment.health_matcher}"
    )
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
    rotate_password(stack, sm, deployment.db_secret_arn)
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
    # ECS replaces the stopped task; the handed-back job runs on the replacement, or on the
    # stopping task if Dramatiq's retry is consumed before its consumers stop.
    worker_2 = stack.run("worker-2", *container_args(stack, tasks["worker"], endpoint))
    final, attempts = wait_job(stack, job, 120, "SUCCESS", "FAILURE")
    if (final, attempts) != ("SUCCESS", 2):
        raise DeploymentFailure(
            f"the interrupted job ended {final} after {attempts} attempts, not SUCCESS after 2"
        )
    figures["handed_back_job"] = f"{final}, attempts {attempts}"
    # Which task ran the second attempt (told, not judged).
    figures["handed_back_job_finished_on"] = _finished_on(stack, job, worker_1, worker_2)
    return figures


def _finished_on(stack: Stack, job: str, *containers: str) -> list[str]:
    """The containers whose log has the job's "job finished" line."""
    return [
        container.removeprefix(f"{stack.name}-")
        for container in containers
        if any(
            job in line and '"job finished"' in line
            for line in logs(container, 100_000).splitlines()
        )
    ]


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
