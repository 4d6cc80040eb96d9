"""compose.yaml, brought up for real with podman-compose, and what it must guarantee.

The third-party images are swapped for locally built stand-ins of the same software
(tests/deployment/compose/compose.standins.yaml); everything else is compose.yaml as written,
on its own bridge network, with a unique project name and the API published on 127.0.0.1 only.
Then: postgres's health gates migrate, migrate (exit 0) gates the API and the workers, both
workers of ``--scale worker=2`` stay up, service names resolve inside the network, a calendar
job submitted through the API reaches SUCCESS, and ``down -v`` leaves nothing of the project
behind. Once with the Redis broker, once with ``--profile sqs`` and BROKER_URL=sqs://.

The same checks run on mutated copies of compose.yaml and must fail there, with the failure
each mutation should cause: that is what shows they check something.

``make compose-check`` runs this file alone. The first run builds images for minutes (the
stand-ins, ops/images/base-image.sh, our two images); podman caches them for the next.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deployment.compose import stack as compose
from tests.deployment.compose.stack import HealthScheduler, Stack
from tests.deployment.podman import DeploymentFailure, base_image
from tests.processes import free_port
from tests.waiting import FINAL, wait_for

# No skip without podman: base_image() (ops/images/base-image.sh) installs it.
pytestmark = pytest.mark.deployment

UP_TIMEOUT_S = 240
READY_TIMEOUT_S = 90
JOB_TIMEOUT_S = 60
POLL_S = 0.5
DOWN_TIMEOUT_S = 120
WORKERS = 2
#: The test's own requests go to 127.0.0.1 only (see http()), never through a proxy.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Builds the stand-ins, and our own images with podman-compose itself (from the working
    tree, so the stack runs this code); returns the base image."""
    base = base_image()
    compose.standin_images(base)
    stack = Stack(
        compose.COMPOSE_FILE,
        f"tocompose-build-{secrets.token_hex(4)}",
        tmp_path_factory.mktemp("compose-build"),
        {"BASE_IMAGE": base},
    )
    done = stack.compose("build", "api", "worker", timeout=compose.BUILD_TIMEOUT_S)
    if done.returncode != 0:
        raise DeploymentFailure(
            f"podman-compose build exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return base


# ---- mutations of compose.yaml: each must make the checks fail, and how -------------------


def without_worker_database_url(doc: dict[str, Any]) -> None:
    del doc["services"]["worker"]["environment"]["DATABASE_URL"]


def api_not_gated_by_migrate(doc: dict[str, Any]) -> None:
    del doc["services"]["api"]["depends_on"]["migrate"]


def mutated_copy(mutation: Mutation, into: Path) -> Path:
    """compose.yaml with ``mutation`` applied, written under ``into``. Anchors and merge keys
    are resolved by the YAML load; build contexts point back at the repository."""
    doc = yaml.safe_load(compose.COMPOSE_FILE.read_text())
    mutation(doc)
    for service in doc["services"].values():
        if "build" in service:
            service["build"]["context"] = str(compose.REPO)
    into.mkdir(parents=True, exist_ok=True)
    path = into / "compose.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("broker", ["redis", "sqs"])
def test_compose_stack(images: str, tmp_path: Path, broker: str) -> None:
    """compose.yaml comes up under podman-compose (``--profile sqs`` with BROKER_URL=sqs://
    for the sqs broker), its services work together, and ``down -v`` removes it all."""
    stack, port = new_stack(compose.COMPOSE_FILE, tmp_path, images, broker)
    run_and_tear_down(stack, port)


@pytest.mark.parametrize(
    ("mutation", "failure"),
    [
        pytest.param(
            without_worker_database_url,
            r"worker container \S+ did not stay up",
            id="worker-without-DATABASE_URL",
        ),
        pytest.param(
            api_not_gated_by_migrate,
            r"api_1 started .* before migrate finished",
            id="api-not-gated-by-migrate",
        ),
    ],
)
def test_mutated_compose_fails(
    images: str, tmp_path: Path, mutation: Mutation, failure: str
) -> None:
    """The same checks on a copy of compose.yaml with one thing removed fail, and with the
    failure that removal causes: they do check what they claim to."""
    stack, port = new_stack(mutated_copy(mutation, tmp_path), tmp_path, images, "redis")
    with pytest.raises(DeploymentFailure, match=failure) as caught:
        run_and_tear_down(stack, port)
    print(f"{stack.project} failed as it must: {caught.value}")


def new_stack(compose_file: Path, tmp_path: Path, base: str, broker: str) -> tuple[Stack, int]:
    port = free_port()
    variables = {
        "BASE_IMAGE": base,
        "API_PORT": f"127.0.0.1:{port}",
        # Not the default: shows the one variable reaches both Postgres and its clients.
        "POSTGRES_PASSWORD": secrets.token_hex(12),
    }
    if broker == "sqs":
        variables["BROKER_URL"] = "sqs://"
    profiles = ("sqs",) if broker == "sqs" else ()
    project = f"tocompose-{secrets.token_hex(4)}"
    return Stack(compose_file, project, tmp_path / "run", variables, profiles), port


def run_and_tear_down(stack: Stack, port: int) -> None:
    """Up, check, and (always) down -v; then nothing of the project may remain."""
    scheduler = HealthScheduler(stack.project)
    scheduler.start()
    image_volumes: dict[str, str] = {}
    try:
        up = stack.compose("up", "-d", "--scale", f"worker={WORKERS}", timeout=UP_TIMEOUT_S)
        if up.returncode != 0:
            raise DeploymentFailure(
                f"podman-compose up exited {up.returncode}:\n{up.stderr[-3000:]}"
            )
        check_stack(stack, scheduler, port)
    finally:
        scheduler.stop()
        try:
            image_volumes |= stack.image_volumes()
        finally:
            down, left, image_volumes_left = tear_down(stack, image_volumes)
    assert not scheduler.errors, f"health check scheduler: {scheduler.errors}"
    assert down == 0, f"podman-compose down -v exited {down} (see {stack.log})"
    assert not left, f"podman-compose down -v left behind: {left}"
    # compose.yaml mounts a tmpfs over the images' VOLUME /tmp: down -v must leave no
    # anonymous volume behind (podman-compose does not remove those, its issue #1521).
    assert not image_volumes_left, f"anonymous volumes left behind: {image_volumes_left}"


def tear_down(
    stack: Stack, image_volumes: dict[str, str]
) -> tuple[int | None, dict[str, list[str]], dict[str, str]]:
    """``down -v``, then whatever it left is found, and removed so no run leaves debris.

    Returns down's exit code, what of the project it left, and the anonymous volumes of image
    VOLUMEs it left: podman-compose 1.6 removes containers without their anonymous volumes
    (containers/podman-compose#1521, fixed by the open #1553), unlike `docker compose down -v`.
    ``--remove-orphans``: podman-compose's `down` stops only the containers the file asks for
    (worker_1); without it the ``--scale`` replica worker_2 keeps running.
    """
    code = None
    try:
        code = stack.compose("down", "-v", "--remove-orphans", timeout=DOWN_TIMEOUT_S).returncode
    finally:
        left = stack.leftovers()
        existing = set(compose.podman("volume", "ls", "--format", "{{.Name}}").split())
        image_left = {name: path for name, path in image_volumes.items() if name in existing}
        stack.force_remove({**left, "volumes": [*left.get("volumes", []), *image_left]})
    return code, left, image_left


def check_stack(stack: Stack, scheduler: HealthScheduler, port: int) -> None:
    sqs = "sqs" in stack.profiles
    expected = {
        "postgres": 1,
        "redis": 1,
        "migrate": 1,
        "api": 1,
        "worker": WORKERS,
        "sqs": int(sqs),
    }
    by_service = {name: stack.service(name) for name in expected}
    counts = {name: len(found) for name, found in by_service.items()}
    if counts != expected:
        raise DeploymentFailure(f"containers per service: {counts}, expected {expected}")

    check_gates(stack, scheduler, by_service)
    api_url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: http("GET", f"{api_url}/api/v1/health")[0],
        lambda status: status == 200,
        timeout=READY_TIMEOUT_S,
        interval=POLL_S,
        what="the API to answer 200 on 127.0.0.1",
    )
    api = by_service["api"][0]["Name"]
    wait_for(
        lambda: stack.containers()[api]["State"]["Health"]["Status"],
        lambda health: health == "healthy",
        timeout=READY_TIMEOUT_S,
        interval=POLL_S,
        what=f"{api} to turn healthy (compose.yaml's healthcheck)",
    )
    workers = [c["Name"] for c in by_service["worker"]]
    check_workers_up(stack, workers)
    services = {"postgres": 5432, "redis": 6379, "api": 6400} | ({"sqs": 5000} if sqs else {})
    check_names_resolve(stack, services, api, workers[0])
    check_calendar_job(stack, api_url, workers)
    if sqs:
        check_jobs_went_through_sqs(stack, workers[0])


def check_gates(
    stack: Stack, scheduler: HealthScheduler, by_service: dict[str, list[dict[str, Any]]]
) -> None:
    """depends_on, as observed: migrate ran after postgres's first passing health check and
    exited 0 before the API and every worker started; those started after redis was healthy."""
    name = by_service["migrate"][0]["Name"]
    # `up` returns once every container has started; a migrate nothing waited for may still run.
    wait_for(
        lambda: stack.containers()[name]["State"]["Status"],
        lambda status: status == "exited",
        timeout=READY_TIMEOUT_S,
        interval=POLL_S,
        what=f"{name} to exit",
    )
    state = stack.containers()[name]["State"]
    if state["Status"] != "exited" or state["ExitCode"] != 0:
        raise DeploymentFailure(
            f"{name} is {state['Status']} (exit code {state['ExitCode']}), expected exited 0:\n"
            + stack.logs(name)
        )
    started, finished = (compose.parse_time(state[k]) for k in ("StartedAt", "FinishedAt"))
    postgres = by_service["postgres"][0]["Name"]
    redis = by_service["redis"][0]["Name"]
    if postgres not in scheduler.first_pass or started < scheduler.first_pass[postgres]:
        raise DeploymentFailure(f"{name} started before {postgres} was healthy")
    for dependent in by_service["api"] + by_service["worker"]:
        began = compose.parse_time(dependent["State"]["StartedAt"])
        if began < finished:
            raise DeploymentFailure(
                f"{dependent['Name']} started at {dependent['State']['StartedAt']}, "
                f"{finished - began:.1f} s before migrate finished ({state['FinishedAt']})"
            )
        if redis not in scheduler.first_pass or began < scheduler.first_pass[redis]:
            raise DeploymentFailure(f"{dependent['Name']} started before {redis} was healthy")


def check_workers_up(stack: Stack, workers: list[str]) -> None:
    containers = stack.containers()
    for name in workers:
        state = containers[name]["State"]
        restarts = containers[name].get("RestartCount", 0)
        if state["Status"] != "running" or restarts:
            raise DeploymentFailure(
                f"worker container {name} did not stay up: {state['Status']}, "
                f"{restarts} restart(s); its log:\n{stack.logs(name, tail=6)}"
            )


#: Run inside a container: resolve each name, and connect only to addresses on the
#: project's network (argv[1] is its subnet, argv[2] {name: port} as JSON).
_RESOLVE = """
import ipaddress, json, socket, sys
subnet = ipaddress.ip_network(sys.argv[1])
out = {}
for host, port in json.loads(sys.argv[2]).items():
    address = socket.gethostbyname(host)
    inside = ipaddress.ip_address(address) in subnet
    if inside:
        socket.create_connection((address, port), timeout=3).close()
    out[host] = [address, inside]
print(json.dumps(out))
"""


def check_names_resolve(stack: Stack, services: dict[str, int], *containers: str) -> None:
    """Service names resolve, from inside the API and a worker, to addresses on the
    project's own network, where the services answer."""
    network = json.loads(compose.podman("network", "inspect", f"{stack.project}_default"))[0]
    subnet = network["subnets"][0]["subnet"]
    for container in containers:
        answer = json.loads(
            compose.podman(
                "exec", container, "python", "-c", _RESOLVE, subnet, json.dumps(services)
            )
        )
        outside = {host: addr for host, (addr, inside) in answer.items() if not inside}
        if outside:
            raise DeploymentFailure(f"from {container}, names resolve outside {subnet}: {outside}")


def check_calendar_job(stack: Stack, api_url: str, workers: list[str]) -> None:
    """A todo and a calendar job through the published port; a worker renders it."""
    title = f"Compose check {stack.project}"
    status, _, _ = http(
        "POST",
        f"{api_url}/api/v1/todos",
        {"title": title, "deadline_at": "2030-01-01T09:00:00"},
    )
    assert status == 201, f"POST /api/v1/todos: {status}"
    status, _, body = http("POST", f"{api_url}/api/v1/todos/ical")
    assert status == 202, f"POST /api/v1/todos/ical: {status} {body!r}"
    task_url = json.loads(body)["task_url"]

    def task_status() -> dict[str, Any]:
        check_workers_up(stack, workers)  # a crashing worker fails now, not at the timeout
        code, _, body = http("GET", task_url)
        return dict(json.loads(body)) if code == 200 else {"http_status": code}

    task = wait_for(
        task_status,
        lambda seen: seen.get("task_status") in FINAL,
        timeout=JOB_TIMEOUT_S,
        interval=POLL_S,
        what=f"the calendar job at {task_url} to finish",
    )
    if task["task_status"] != "SUCCESS":
        raise DeploymentFailure(f"calendar job: {task}")
    status, headers, body = http("GET", task["result_url"])
    assert status == 200, f"GET {task['result_url']}: {status}"
    assert headers.get("content-type", "").startswith("text/calendar"), headers
    assert body.startswith(b"BEGIN:VCALENDAR"), body[:200]
    assert title.encode() in body, "the todo is not in the calendar"


#: Run inside a worker: the queues on compose.yaml's SQS server (SQS_ENDPOINT_URL, fakes).
_LIST_QUEUES = """
import json, os, boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["SQS_ENDPOINT_URL"], region_name="us-east-1")
print(json.dumps(sqs.list_queues().get("QueueUrls", [])))
"""


def check_jobs_went_through_sqs(stack: Stack, worker: str) -> None:
    """With BROKER_URL=sqs://, the job queues exist on the sqs service (moto)."""
    queues = json.loads(compose.podman("exec", worker, "python", "-c", _LIST_QUEUES))
    if not queues or not all(urlsplit(q).hostname == "sqs" for q in queues):
        raise DeploymentFailure(f"no job queues on the sqs service: {queues}")


def http(
    method: str, url: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request, never through a proxy, and only ever to 127.0.0.1."""
    if urlsplit(url).hostname != "127.0.0.1":
        raise DeploymentFailure(f"refusing to send a request anywhere but 127.0.0.1: {url}")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _NO_PROXY.open(request, timeout=5) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}, b""
