"""The door (api.access) on real API processes: rate limits shared by two processes through
Redis, X-Forwarded-For believed only from a trusted proxy, API keys on and off, and a key
rotation through a Secrets Manager secret (moto) with no restart and no failed request."""

from __future__ import annotations

import threading
import time

import boto3
import httpx

from api.keys import key_hash, new_key
from tests.processes import FAKE_AWS, free_port, start_api
from tests.waiting import wait_for

TODOS = "/api/v1/todos"


def test_two_api_processes_share_each_clients_limit_by_its_trusted_forwarded_address(
    service_env, processes
):
    env = {
        **service_env,
        "RATE_LIMIT_WRITES_PER_MINUTE": "6",
        "TRUSTED_PROXIES": "127.0.0.1/32",  # the test plays the load balancer
    }
    bases = []
    for _ in range(2):
        port = free_port()
        processes.append(start_api(env, port))
        bases.append(f"http://127.0.0.1:{port}")

    def create(i: int, client: str) -> httpx.Response:
        # Each client's own claim first, then what "the load balancer" saw.
        forwarded = f"6.6.6.{i}, {client}"
        return httpx.post(
            f"{bases[i % 2]}{TODOS}", json={"title": "t"}, headers={"X-Forwarded-For": forwarded}
        )

    alice = [create(i, "198.51.100.1").status_code for i in range(8)]
    assert alice == [201] * 6 + [429] * 2  # one budget across both processes
    assert create(0, "198.51.100.2").status_code == 201  # another client: its own budget
    # Through the trusted proxy, the scheme is the one the client used.
    submitted = httpx.post(
        f"{bases[0]}/api/v1/todos/ical",
        headers={"X-Forwarded-For": "198.51.100.3", "X-Forwarded-Proto": "https"},
    )
    assert submitted.status_code == 202
    assert submitted.json()["task_url"].startswith("https://")

    # Without TRUSTED_PROXIES the header is only a claim: rotating it changes nothing.
    untrusted = {**env, "TRUSTED_PROXIES": ""}
    port = free_port()
    processes.append(start_api(untrusted, port))
    spoofed = [
        httpx.post(
            f"http://127.0.0.1:{port}{TODOS}",
            json={"title": "t"},
            headers={"X-Forwarded-For": f"203.0.113.{i}", "X-Forwarded-Proto": "https"},
        )
        for i in range(8)
    ]
    assert [r.status_code for r in spoofed].count(201) <= 6
    assert spoofed[-1].status_code == 429
    assert int(spoofed[-1].headers["retry-after"]) >= 1


def test_api_keys_off_by_default_ignore_authorization(api):
    created = httpx.post(
        f"{api}{TODOS}", json={"title": "open"}, headers={"Authorization": "Bearer whatever"}
    )
    assert created.status_code == 201
    assert httpx.post(f"{api}/api/v1/todos/ical").status_code == 202


def _secret_client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
    )


def test_api_keys_from_a_secret_guard_writes_and_jobs_and_rotate_without_restart(
    service_env, processes, sqs_endpoint
):
    old, new = new_key(), new_key()
    secrets = _secret_client(sqs_endpoint)
    arn = secrets.create_secret(Name=f"keys-{time.time_ns()}", SecretString=f"old:{key_hash(old)}")[
        "ARN"
    ]
    port = free_port()
    env = {
        **service_env,
        **FAKE_AWS,
        "AWS_ENDPOINT_URL": sqs_endpoint,
        "API_KEYS_SECRET_ARN": arn,
        "API_KEYS_REFRESH_S": "1",
    }
    processes.append(start_api(env, port))
    base = f"http://127.0.0.1:{port}"

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    wait_for(
        lambda: (
            httpx.post(f"{base}{TODOS}", json={"title": "x"}, headers=bearer(old)).status_code
            == 201
        ),
        timeout=15,
        what="the keys to load",
    )
    missing = httpx.post(f"{base}{TODOS}", json={"title": "x"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.json()["error"]
    wrong = httpx.post(f"{base}{TODOS}", json={"title": "x"}, headers=bearer(new))
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert httpx.get(f"{base}{TODOS}").status_code == 200  # reads of todos stay open
    assert httpx.get(f"{base}/api/v1/health").status_code == 200
    assert httpx.get(f"{base}/api/v1/jobs").status_code == 401  # jobs need the key
    job = httpx.post(f"{base}/api/v1/todos/ical", headers=bearer(old))
    assert job.status_code == 202
    status_url = job.json()["task_url"]
    assert httpx.get(status_url).status_code == 401
    assert httpx.get(status_url, headers=bearer(old)).status_code == 200

    # Rotation: a client keeps working throughout, switching keys once both are accepted.
    current = [old]
    failures: list[int] = []
    stop = threading.Event()

    def steady_client() -> None:
        while not stop.is_set():
            answer = httpx.get(status_url, headers=bearer(current[0]))
            if answer.status_code != 200:
                failures.append(answer.status_code)
            time.sleep(0.05)

    worker = threading.Thread(target=steady_client)
    worker.start()
    try:
        secrets.put_secret_value(
            SecretId=arn, SecretString=f"old:{key_hash(old)}\nnew:{key_hash(new)}"
        )
        wait_for(
            lambda: httpx.get(status_url, headers=bearer(new)).status_code == 200,
            timeout=15,
            what="the new key to be accepted",
        )
        current[0] = new
        time.sleep(0.3)
        secrets.put_secret_value(SecretId=arn, SecretString=f"new:{key_hash(new)}")
        wait_for(
            lambda: httpx.get(status_url, headers=bearer(old)).status_code == 401,
            timeout=15,
            what="the old key to be refused",
        )
        time.sleep(1)
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert httpx.get(status_url, headers=bearer(new)).status_code == 200
