"""Chaos harness: real API, worker and broker processes, many jobs, injected faults.

    python -m tests.chaos.harness --broker redis --jobs 1000 --kills 10      # full run
    python -m tests.chaos.harness --broker sqs --jobs 300 --kills 10

Faults: worker process groups SIGKILLed and restarted (1), the broker (a private
redis-server) stopped ~10 s and restarted empty (2, Redis only), every job's message sent
twice, concurrently with the API's own send (5), busy workers SIGTERMed and restarted (7).
The submitter behaves like a client: a 503 (queue down) is retried until accepted. Checks
every accepted job (202) ends SUCCESS with output identical to a fault-free run and none is
left PENDING/STARTED/RETRY; the rows of refused submissions must be FAILURE with the
reason. Prints one JSON summary; exits 1 if any promise was broken.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine, create_engine, text

from models import JobKind
from models.queue import build_broker, send_job
from models.settings import Settings, normalise_database_url
from tests.processes import (
    FAKE_AWS,
    MotoServer,
    PrivateRedis,
    Process,
    fake_aws_credentials,
    free_port,
    start_api,
    start_worker,
)
from tests.services import migrate, scratch_database
from tests.waiting import WaitTimeout, wait_for

#: Todos every calendar holds: enough that an attempt takes tens of ms and can be interrupted.
TODOS = 2000
WORKER_GROUPS = 2


@dataclass
class Run:
    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    kills: int = 0
    sigterms: int = 0
    broker_outages: int = 0
    duplicates_sent: int = 0
    recoveries_s: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def chaos_env(database_url: str, broker: str, endpoint: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "BROKER_NAMESPACE": f"chaos_{uuid.uuid4().hex[:8]}",
        "LOG_FORMAT": "json",
        # Production defaults for delivery (heartbeat 15 s, maintenance 5 %, visibility =
        # time limit + 30 s); a shorter reconciler period so a lost message (Redis restarted
        # empty) is re-sent within seconds rather than a minute.
        "JOB_TIME_LIMIT_MS": "20000",
        "JOB_MAX_BACKOFF_MS": "2000",
        "JOB_MIN_BACKOFF_MS": "200",
        "RECONCILE_INTERVAL_S": "2",
        "RECONCILE_PENDING_AFTER_S": "10",
        "BROKER_SEND_TIMEOUT_S": "2",
    }
    if broker == "redis":
        env["BROKER_URL"] = endpoint
    else:
        # Fake credentials: the endpoint is the local moto server, never AWS.
        env.update(
            {
                "BROKER_URL": "sqs://",
                "SQS_ENDPOINT_URL": endpoint,
                "SQS_CREATE_QUEUES": "true",
                "SQS_WAIT_TIME_S": "1",
                **FAKE_AWS,
            }
        )
    return env


def seed_todos(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO todos"
                " (title, description, completed, deadline_at, created_at, updated_at)"
                " SELECT 'Chaos ' || i, 'todo; number, ' || i, false,"
                " timestamp '2030-01-01' + i * interval '1 hour',"
                " timestamp '2026-01-01', timestamp '2026-01-01' FROM generate_series(1, :n) AS i"
            ),
            {"n": TODOS},
        )


def statuses(engine: Engine, ids: list[str]) -> dict[str, tuple[str, object, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id::text, status, started_at, result FROM jobs WHERE id::text = ANY(:ids)"
            ),
            {"ids": ids},
        ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def wait_all_final(
    engine: Engine, ids: list[str], timeout: float
) -> dict[str, tuple[str, object, object]]:
    """The jobs' rows once all are SUCCESS or FAILURE, or as they are after ``timeout`` s:
    the summary counts a job still unfinished then as lost or stuck."""
    try:
        return wait_for(
            lambda: statuses(engine, ids),
            lambda rows: all(r[0] in ("SUCCESS", "FAILURE") for r in rows.values()),
            timeout=timeout,
            interval=1,
            what=f"{len(ids)} jobs to finish",
        )
    except WaitTimeout as timed_out:
        rows: dict[str, tuple[str, object, object]] = timed_out.last
        return rows


def run(broker: str, jobs: int, kills: int, sigterms: int, outage_s: float, seconds: float) -> dict:  # type: ignore[type-arg]
    result = Run()
    with ExitStack() as stack:
        # The in-process duplicator's boto3 client needs them (SQS); restored afterwards.
        stack.enter_context(fake_aws_credentials())
        database_url = stack.enter_context(scratch_database("taskoverflow_chaos"))
        migrate(database_url)
        # One engine for the run (the recovery watchers poll every 0.1 s), disposed before the
        # scratch database is dropped.
        engine = create_engine(normalise_database_url(database_url))
        stack.callback(engine.dispose)
        seed_todos(engine)
        if broker == "redis":
            redis = PrivateRedis()
            redis.start()
            stack.callback(redis.stop)
            endpoint = redis.url
        else:
            moto = MotoServer()
            stack.callback(moto.stop)
            endpoint = moto.url
        env = chaos_env(database_url, broker, endpoint)
        processes: list[Process] = []
        stack.callback(lambda: [p.stop(signal.SIGKILL) for p in processes])
        port = free_port()
        processes.append(start_api(env, port))
        api = f"http://127.0.0.1:{port}"
        workers = [start_worker(env, threads=4) for _ in range(WORKER_GROUPS)]
        processes.extend(workers)

        client = httpx.Client(timeout=10)
        stack.callback(client.close)
        # The fault-free reference output.
        reference_id = client.post(f"{api}/api/v1/todos/ical").json()["task_id"]
        reference = wait_all_final(engine, [reference_id], 60)[reference_id]
        assert reference[0] == "SUCCESS", reference

        settings = Settings.from_env(env)
        duplicator = build_broker(settings.broker)
        stop = threading.Event()

        def submit() -> None:
            # Like a real client: a 503 (queue down) is retried until the job is accepted.
            interval = seconds / jobs
            for _ in range(jobs):
                started = time.monotonic()
                while True:
                    try:
                        response = client.post(f"{api}/api/v1/todos/ical")
                    except httpx.HTTPError:
                        response = None
                    if response is not None and response.status_code == 202:
                        break
                    with result.lock:
                        result.refused += 1
                    time.sleep(0.5)
                job_id = response.json()["task_id"]
                with result.lock:
                    result.accepted.append(job_id)
                # Fault 5: a second copy of the message, racing the API's own.
                threading.Thread(target=duplicate, args=(job_id,), daemon=True).start()
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
            stop.set()

        def duplicate(job_id: str) -> None:
            for _ in range(20):
                try:
                    send_job(
                        duplicator, settings.broker.queue_name, JobKind.ICAL, uuid.UUID(job_id)
                    )
                    with result.lock:
                        result.duplicates_sent += 1
                    return
                except Exception:
                    time.sleep(1)  # the broker is down: try again

        def watch_recovery(killed_at: float, running: dict[str, object]) -> None:
            # Time until every job that was STARTED at the kill has started again (or ended).
            while running:
                rows = statuses(engine, list(running))
                for job_id, (status, started_at, _) in rows.items():
                    if status == "SUCCESS" or started_at != running[job_id]:
                        with result.lock:
                            result.recoveries_s.append(round(time.monotonic() - killed_at, 2))
                        running.pop(job_id)
                if time.monotonic() - killed_at > 120:
                    return
                time.sleep(0.1)

        def fault(index: int, sig: int) -> None:
            victim = workers[index % WORKER_GROUPS]
            with result.lock:
                ids = list(result.accepted)
            running = {
                j: r[1] for j, r in statuses(engine, ids[-400:]).items() if r[0] == "STARTED"
            }
            victim.stop(sig, timeout=40)
            threading.Thread(
                target=watch_recovery, args=(time.monotonic(), running), daemon=True
            ).start()
            workers[index % WORKER_GROUPS] = start_worker(env, threads=4)
            processes.append(workers[index % WORKER_GROUPS])

        plan: list[tuple[float, Callable[[], None]]] = []
        for i in range(kills):
            plan.append((seconds * (i + 0.5) / (kills + 1), lambda i=i: fault(i, signal.SIGKILL)))
        for i in range(sigterms):
            plan.append(
                (seconds * (i + 0.7) / (sigterms + 1), lambda i=i: fault(i + 1, signal.SIGTERM))
            )
        if broker == "redis" and outage_s:

            def outage() -> None:
                redis.stop()
                time.sleep(outage_s)
                redis.start()
                result.broker_outages += 1

            plan.append((seconds * 0.45, outage))
        plan.sort(key=lambda p: p[0])

        submitter = threading.Thread(target=submit)
        began = time.monotonic()
        submitter.start()
        for at, action in plan:
            time.sleep(max(0.0, at - (time.monotonic() - began)))
            action()
        submitter.join()
        result.kills, result.sigterms = kills, sigterms

        final = wait_all_final(engine, result.accepted, timeout=240)
        time.sleep(3)  # let the last recoveries be observed
        all_rows = statuses(engine, result.accepted)
        with engine.connect() as conn:
            by_status = dict(
                conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
            )
            refused_ok = conn.execute(
                text(
                    "SELECT count(*) FROM jobs WHERE status = 'FAILURE'"
                    " AND error LIKE '%job queue could not be reached%'"
                )
            ).scalar()

    succeeded = [j for j, r in all_rows.items() if r[0] == "SUCCESS"]
    identical = sum(1 for j in succeeded if all_rows[j][2] == reference[2])
    summary = {
        "broker": broker,
        "jobs_submitted": jobs,
        "accepted": len(result.accepted),
        "refused_503": result.refused,
        "refused_marked_failure": refused_ok,
        "succeeded": len(succeeded),
        "identical_to_fault_free": identical,
        "lost_or_stuck": len(result.accepted) - len(succeeded),
        "final_status_counts": by_status,
        "sigkills": result.kills,
        "sigterms": result.sigterms,
        "broker_outages": result.broker_outages,
        "duplicate_messages": result.duplicates_sent,
        "jobs_interrupted_by_faults": len(result.recoveries_s),
        "max_kill_to_rerun_s": max(result.recoveries_s, default=0.0),
        "todos_per_calendar": TODOS,
    }
    summary["ok"] = (
        summary["lost_or_stuck"] == 0
        and identical == len(result.accepted)
        and refused_ok == result.refused
        and summary["max_kill_to_rerun_s"] <= 30
        and all(r[0] in ("SUCCESS",) for r in final.values())
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["redis", "sqs"], default="redis")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--sigterms", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=10)
    parser.add_argument(
        "--seconds", type=float, default=60, help="spread submissions over this long"
    )
    args = parser.parse_args()
    summary = run(args.broker, args.jobs, args.kills, args.sigterms, args.outage_s, args.seconds)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
