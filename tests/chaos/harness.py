"""Chaos harness: real API, worker and broker processes, many jobs, injected faults.

    python -m tests.chaos.harness --broker redis --jobs 1500 --kills 15 --sigterms 3
    python -m tests.chaos.harness --broker sqs --jobs 1000 --kills 8 --sigterms 2

Faults: worker process groups SIGKILLed and restarted (1), the broker (a private
redis-server) stopped ~10 s and restarted empty (2, Redis only), every job's message sent
twice, concurrently with the API's own send (5), busy workers SIGTERMed and restarted (7).

The worker faults are aimed at running jobs. The submitter keeps a backlog of unfinished
jobs, so that every worker thread has one; the faults are spread over the stream of
submissions, one at a time (each waits until the jobs the previous one interrupted have run
again), and each waits until the group it targets is running a job on every thread.
Postgres says which jobs run where: a running job holds an advisory lock on its own
connection, and /proc says which process owns that connection. The group is frozen
(SIGSTOP) while the harness reads what it runs, then signalled. A job counts as interrupted
only if it was running in that group at the signal and the group never recorded it a success.

The submitter behaves like a client: a 503 (queue down) or 429 is retried after its
Retry-After. Checks every accepted job (202) ends SUCCESS with output identical to a
fault-free run and none is left PENDING/STARTED/RETRY; the rows of 503-refused submissions
must be FAILURE with the reason; every job a SIGKILL interrupted runs again within 30 s; the
faults interrupted running jobs. Prints one line per fault (stderr) and one JSON summary;
exits 1 if any of that does not hold.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine, create_engine, text

from models import JobKind
from models.lifecycle import lock_key
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

#: Todos every calendar holds (a 4.9 MB calendar). With a group's threads sharing its
#: process's core an attempt runs for about a second (0.6-1.6 s measured): long enough for a
#: SIGTERM, which Dramatiq acts on within a second, to find jobs still running.
TODOS = 30_000
WORKER_GROUPS = 2
#: Worker threads per group: each fault can interrupt at most this many jobs.
THREADS = 12
#: How long a fault waits for its group to be running a job on every thread, then on three
#: in four (SQS workers hold no more messages than threads, and half are duplicates, so a
#: full group is rarer there), then on any.
FULL_WAIT_S = 2
SATURATION_WAIT_S = 10
#: The share of the jobs over whose submission the faults are spread.
FAULTS_WITHIN = 0.75
#: Longest a job may take from the SIGKILL that interrupted it to running again.
RERUN_LIMIT_S = 30
#: A SIGTERMed group still there after this long is killed, as ECS does at the task's stop
#: timeout: start_worker gives it WORKER_SHUTDOWN_TIMEOUT_MS=10000 to hand its jobs back.
STOP_TIMEOUT_S = 15


@dataclass
class Fault:
    """One signal to a worker group: what it was running then, and what became of it."""

    signal: str
    #: The group's processes as ``job_attempts.worker`` names them (host:pid).
    workers: set[str]
    #: Jobs running in the group just before the signal: their ``started_at`` then.
    running: dict[str, object]
    #: Seconds from the signal until each of those jobs ran again (or had ended).
    rerun_s: dict[str, float] = field(default_factory=dict)
    #: Those of ``running`` that the group never finished (filled in after the run).
    interrupted: list[str] = field(default_factory=list)


@dataclass
class Run:
    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    throttled: int = 0
    #: Any other answer to a submission (None: no answer), retried like a 503.
    other_answers: Counter[str] = field(default_factory=Counter)
    broker_outages: int = 0
    #: SIGTERMed groups that had not exited by STOP_TIMEOUT_S, so were killed.
    stop_timeouts: int = 0
    duplicates_sent: int = 0
    faults: list[Fault] = field(default_factory=list)
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
        # The harness is one client submitting a thousand jobs, on purpose: the API's rate
        # limits and job quotas (tested elsewhere) must not stand between it and the faults.
        "RATE_LIMIT_READS_PER_MINUTE": "0",
        "RATE_LIMIT_WRITES_PER_MINUTE": "0",
        "JOBS_MAX_UNFINISHED": "1000000",
        "JOBS_MAX_UNFINISHED_PER_CLIENT": "1000000",
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


def seed_todos(engine: Engine, todos: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO todos"
                " (title, description, completed, deadline_at, created_at, updated_at)"
                " SELECT 'Chaos ' || i, 'todo; number, ' || i, false,"
                " timestamp '2030-01-01' + i * interval '1 hour',"
                " timestamp '2026-01-01', timestamp '2026-01-01' FROM generate_series(1, :n) AS i"
            ),
            {"n": todos},
        )


def statuses(engine: Engine, ids: list[str]) -> dict[str, tuple[str, object]]:
    """``{id: (status, started_at)}``; never the results (megabytes each, polled often)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id::text, status, started_at FROM jobs WHERE id::text = ANY(:ids)"),
            {"ids": ids},
        ).all()
    return {r[0]: (r[1], r[2]) for r in rows}


def identical_results(engine: Engine, ids: list[str], reference_id: str) -> int:
    """How many of ``ids`` are SUCCESS with a result byte for byte the reference job's
    (Postgres compares text with a deterministic collation byte-wise)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM jobs WHERE id::text = ANY(:ids) AND status = 'SUCCESS'"
                    " AND result = (SELECT result FROM jobs WHERE id::text = :reference)"
                ),
                {"ids": ids, "reference": reference_id},
            ).scalar_one()
        )


def unfinished(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM jobs WHERE status IN ('PENDING', 'STARTED', 'RETRY')")
            ).scalar_one()
        )


def wait_all_final(engine: Engine, ids: list[str], timeout: float) -> dict[str, tuple[str, object]]:
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
        rows: dict[str, tuple[str, object]] = timed_out.last
        return rows


# --- Which jobs a worker group is running ---------------------------------------------------
# A running job holds an advisory lock on its own database connection (workers/runner.py), so
# Postgres knows which jobs run on which connections; /proc knows which processes own those
# connections' client ports. Linux only, like the rest of the harness (process groups).


def group_pids(leader: int) -> list[int]:
    """The processes of the process group ``leader`` leads (a worker group: the dramatiq CLI,
    its worker process, its metrics server)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after it.
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == leader:
            pids.append(int(entry))
    return pids


def client_ports(pids: list[int]) -> list[int]:
    """The local TCP ports of the sockets ``pids`` have open."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)  # the header
                for line in lines:
                    # sl local_address rem_address st ... uid timeout inode
                    columns = line.split()
                    if columns[9] in inodes:
                        ports.append(int(columns[1].rpartition(":")[2], 16))
        except OSError:
            continue
    return ports


def running_in(engine: Engine, pids: list[int], keys: dict[int, str]) -> dict[str, object]:
    """The jobs STARTED whose advisory lock a connection of ``pids`` holds: ``{id: started_at}``.
    ``keys``: the accepted jobs by their lock key (models.lifecycle.lock_key)."""
    ports = client_ports(pids)
    if not ports:
        return {}
    with engine.connect() as conn:
        # A bigint advisory lock shows as its high half (classid) and low half (objid). A job
        # mid-run holds its lock on a connection with no write transaction open (it reads);
        # the reconciler, which try-locks the jobs of dead workers within its pass, writes
        # (and holds those locks only until its commit): its locks are not running jobs.
        held = conn.execute(
            text(
                "SELECT l.classid::bigint, l.objid::bigint FROM pg_locks l"
                " JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND a.datname = current_database() AND a.client_port = ANY(:ports)"
                " AND a.backend_xid IS NULL"
            ),
            {"ports": ports},
        ).all()
        locked = [
            keys[key]
            for high, low in held
            if (key := int.from_bytes(((high << 32) | low).to_bytes(8, "big"), "big", signed=True))
            in keys
        ]
        if not locked:
            return {}
        rows = conn.execute(
            text(
                "SELECT id::text, started_at FROM jobs"
                " WHERE id::text = ANY(:ids) AND status = 'STARTED'"
            ),
            {"ids": locked},
        ).all()
    return {r[0]: r[1] for r in rows}


def worker_names(pids: list[int]) -> set[str]:
    """``pids`` as ``job_attempts.worker`` names them (models.lifecycle: host:pid)."""
    host = socket.gethostname()
    return {f"{host}:{pid}"[:64] for pid in pids}


def settle_interrupted(engine: Engine, faults: list[Fault]) -> None:
    """Each fault's ``interrupted``: the jobs it caught running that its group never recorded
    a success for (a job that ended between the look and the signal, or finished within a
    SIGTERM's grace, was not interrupted)."""
    ids = sorted({j for f in faults for j in f.running})
    with engine.connect() as conn:
        succeeded = conn.execute(
            text(
                "SELECT job_id::text, worker FROM job_attempts"
                " WHERE outcome = 'success' AND job_id::text = ANY(:ids)"
            ),
            {"ids": ids},
        ).all()
    counted: set[tuple[str, object]] = set()  # (job, started_at): one attempt
    for fault in faults:
        done_here = {job for job, worker in succeeded if worker in fault.workers}
        # An attempt is interrupted once, by the first fault that caught it.
        attempts = {(j, at) for j, at in fault.running.items() if j not in done_here} - counted
        counted |= attempts
        fault.interrupted = sorted(j for j, _ in attempts)


def retry_after(response: httpx.Response | None) -> float:
    """How long a client waits before submitting again: the answer's Retry-After (seconds),
    else 1 s; never more than 30 s (an HTTP-date is not expected from this API)."""
    if response is not None:
        try:
            return min(max(float(response.headers["Retry-After"]), 0.1), 30.0)
        except (KeyError, ValueError):
            pass
    return 1.0


def fault_plan(kills: int, sigterms: int) -> list[tuple[float, int]]:
    """(share of the jobs submitted, signal) of each fault, spread over the first
    FAULTS_WITHIN of the jobs: a fault may lag its share (it waits for the previous group's
    restart), and must still find a backlog to interrupt."""
    plan = [((i + 0.5) / (kills + 1), signal.SIGKILL) for i in range(kills)]
    plan += [((i + 0.7) / (sigterms + 1), signal.SIGTERM) for i in range(sigterms)]
    return sorted((share * FAULTS_WITHIN, sig) for share, sig in plan)


def run(
    broker: str,
    jobs: int,
    kills: int,
    sigterms: int,
    outage_s: float,
    *,
    threads: int = THREADS,
    backlog: int | None = None,
    todos: int = TODOS,
) -> dict:  # type: ignore[type-arg]
    """One chaos run; the summary ``main`` prints. ``backlog``: unfinished jobs the submitter
    keeps (default: two per worker thread, so a thread never waits for work)."""
    backlog = backlog or 2 * threads * WORKER_GROUPS
    result = Run()
    with ExitStack() as stack:
        # The in-process duplicator's boto3 client needs them (SQS); restored afterwards.
        stack.enter_context(fake_aws_credentials())
        database_url = stack.enter_context(scratch_database("taskoverflow_chaos"))
        migrate(database_url)
        # One engine for the run (the recovery watchers poll every 0.1 s), disposed before the
        # scratch database is dropped.
        engine = create_engine(normalise_database_url(database_url), pool_size=10)
        stack.callback(engine.dispose)
        seed_todos(engine, todos)
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
        # Should the run fail midway: no more submissions, and no group restarted after the
        # others were stopped (callbacks run last registered first).
        stopping = threading.Event()
        restarts: list[threading.Thread] = []

        def join_restarts() -> None:
            for restart in restarts:
                restart.join()

        stack.callback(join_restarts)
        stack.callback(stopping.set)
        port = free_port()
        processes.append(start_api(env, port))
        api = f"http://127.0.0.1:{port}"
        workers = [start_worker(env, threads=threads) for _ in range(WORKER_GROUPS)]
        processes.extend(workers)

        client = httpx.Client(timeout=10)
        stack.callback(client.close)
        # The fault-free reference output.
        reference_id = client.post(f"{api}/api/v1/todos/ical").json()["task_id"]
        reference = wait_all_final(engine, [reference_id], 60)[reference_id]
        assert reference[0] == "SUCCESS", reference

        settings = Settings.from_env(env)
        duplicator = build_broker(settings.broker)
        keys: dict[int, str] = {}  # accepted jobs by advisory lock key

        def submit_one() -> None:
            # Like a real client: a 503 (queue down) or 429 is retried after its Retry-After.
            while not stopping.is_set():
                try:
                    response = client.post(f"{api}/api/v1/todos/ical")
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 202:
                    break
                status = None if response is None else response.status_code
                with result.lock:
                    if status == 503:
                        result.refused += 1
                    elif status == 429:
                        result.throttled += 1
                    else:
                        result.other_answers[str(status)] += 1
                time.sleep(retry_after(response))
            else:
                return  # the run is over
            job_id = response.json()["task_id"]
            with result.lock:
                keys[lock_key(uuid.UUID(job_id))] = job_id
                result.accepted.append(job_id)
            # Fault 5: a second copy of the message, racing the API's own.
            threading.Thread(target=duplicate, args=(job_id,), daemon=True).start()

        def submit() -> None:
            # Tops the unfinished jobs up to the backlog: every worker thread always has work,
            # and no job waits long enough in the queue to be re-sent as stranded.
            while len(result.accepted) < jobs and not stopping.is_set():
                room = min(backlog - unfinished(engine), jobs - len(result.accepted))
                for _ in range(room):
                    submit_one()
                if room <= 0:
                    time.sleep(0.05)

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

        watchers: list[threading.Thread] = []

        def watch_rerun(fault: Fault, signalled_at: float) -> None:
            # Time until every job running at the signal has started again (or ended).
            waiting = dict(fault.running)
            while waiting and time.monotonic() - signalled_at <= 120:
                for job_id, (status, started_at) in statuses(engine, list(waiting)).items():
                    if status == "SUCCESS" or started_at != waiting[job_id]:
                        fault.rerun_s[job_id] = round(time.monotonic() - signalled_at, 2)
                        waiting.pop(job_id)
                time.sleep(0.1)

        def replace(index: int, victim: Process) -> None:
            # Until the group has exited (a SIGTERMed one hands its jobs back first) or, like
            # a container past its stop timeout, is killed; then a new one in its place.
            try:
                victim.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with result.lock:
                    result.stop_timeouts += 1
            victim.signal_group(signal.SIGKILL)  # anything of it that lingers
            victim.stop(signal.SIGKILL)
            workers[index] = start_worker(env, threads=threads)
            processes.append(workers[index])

        def fault(index: int, sig: int) -> None:
            join_restarts()  # every group is back before the next fault: never two down at once
            victim = workers[index]
            pids = group_pids(victim.popen.pid)
            # Strike when every thread of the group is running a job; after FULL_WAIT_S, when
            # most are; after SATURATION_WAIT_S, whatever it runs (counted honestly either
            # way). Not once every job is submitted: a draining queue will not fill the group.
            began_waiting = time.monotonic()
            while (waited := time.monotonic() - began_waiting) < SATURATION_WAIT_S:
                with result.lock:
                    current = dict(keys)
                need = threads if waited < FULL_WAIT_S else math.ceil(threads * 3 / 4)
                if len(running_in(engine, pids, current)) >= need or not submitter.is_alive():
                    break
                time.sleep(0.05)
            # Freeze the group while reading what it runs, so that the signal lands on exactly
            # those jobs (a look then a signal would let some finish in between).
            victim.signal_group(signal.SIGSTOP)
            with result.lock:
                current = dict(keys)
            struck = Fault(
                signal.Signals(sig).name, worker_names(pids), running_in(engine, pids, current)
            )
            if sig == signal.SIGKILL:
                victim.signal_group(sig)  # the whole group, as when a container is killed
            else:
                # To the main process only, as a container runtime does (tests/processes.py);
                # it is pending until the group runs again, at once.
                victim.popen.send_signal(sig)
                victim.signal_group(signal.SIGCONT)
            signalled_at = time.monotonic()
            result.faults.append(struck)
            print(
                f"{signalled_at - began:6.1f} s  {struck.signal} group {index}:"
                f" {len(struck.running)} jobs running (after {waited:.1f} s),"
                f" {len(result.accepted)}/{jobs} submitted",
                file=sys.stderr,
            )
            watcher = threading.Thread(target=watch_rerun, args=(struck, signalled_at), daemon=True)
            watcher.start()
            watchers.append(watcher)
            # The replacement starts meanwhile: the other group's wait for a full set of
            # running jobs overlaps it.
            restart = threading.Thread(target=replace, args=(index, victim))
            restart.start()
            restarts.append(restart)

        plan: list[tuple[float, Callable[[], None]]] = [
            (share, functools.partial(fault, n % WORKER_GROUPS, sig))
            for n, (share, sig) in enumerate(fault_plan(kills, sigterms))
        ]
        if broker == "redis" and outage_s:

            def outage() -> None:
                redis.stop()
                print(
                    f"{time.monotonic() - began:6.1f} s  Redis stopped for {outage_s:g} s,"
                    f" {len(result.accepted)}/{jobs} submitted",
                    file=sys.stderr,
                )
                time.sleep(outage_s)
                redis.start()
                result.broker_outages += 1

            # Early enough that jobs are still being submitted (and some refused) when it
            # comes, even if the worker faults before it run late.
            plan.append((0.4 * FAULTS_WITHIN, outage))
        plan.sort(key=lambda p: p[0])

        submitter = threading.Thread(target=submit)
        began = time.monotonic()
        submitter.start()
        for share, action in plan:
            # Faults follow the submissions, not the clock: spread over the stream of jobs
            # however fast this machine runs them.
            while len(result.accepted) < share * jobs and submitter.is_alive():
                time.sleep(0.05)
            # One fault at a time: the jobs the last one interrupted run again first, so that
            # each "fault -> running again" measures that fault alone (a job re-sent after a
            # kill, then held unstarted by the next group killed, waits for a second re-send).
            deadline = time.monotonic() + RERUN_LIMIT_S
            for watcher in watchers:
                watcher.join(timeout=max(0.0, deadline - time.monotonic()))
            action()
        submitter.join()
        join_restarts()
        submitted_s = time.monotonic() - began

        final = wait_all_final(engine, result.accepted, timeout=240)
        time.sleep(3)  # let the last reruns be observed
        all_rows = statuses(engine, result.accepted)
        settle_interrupted(engine, result.faults)
        identical = identical_results(engine, result.accepted, reference_id)
        with engine.connect() as conn:
            by_status: dict[str, int] = {
                status: count
                for status, count in conn.execute(
                    text("SELECT status, count(*) FROM jobs GROUP BY status")
                )
            }
            refused_ok = conn.execute(
                text(
                    "SELECT count(*) FROM jobs WHERE status = 'FAILURE'"
                    " AND error LIKE '%job queue could not be reached%'"
                )
            ).scalar()
        total_s = time.monotonic() - began

    succeeded = [j for j, r in all_rows.items() if r[0] == "SUCCESS"]
    faults = result.faults

    # A job interrupted but never seen running again counts as the watchers' whole 120 s.
    def reruns(sig: str) -> list[float]:
        return [f.rerun_s.get(j, 120.0) for f in faults if f.signal == sig for j in f.interrupted]

    lost = len(result.accepted) - len(succeeded)
    interrupted = sum(len(f.interrupted) for f in faults)
    max_kill_rerun = max(reruns("SIGKILL"), default=0.0)
    summary: dict = {  # type: ignore[type-arg]
        "broker": broker,
        "jobs_submitted": jobs,
        "accepted": len(result.accepted),
        "refused_503": result.refused,
        "refused_marked_failure": refused_ok,
        "throttled_429": result.throttled,
        "other_answers": dict(result.other_answers),
        "succeeded": len(succeeded),
        "identical_to_fault_free": identical,
        "lost_or_stuck": lost,
        "final_status_counts": by_status,
        "sigkills": sum(f.signal == "SIGKILL" for f in faults),
        "sigterms": sum(f.signal == "SIGTERM" for f in faults),
        "broker_outages": result.broker_outages,
        "duplicate_messages": result.duplicates_sent,
        "jobs_running_in_group_at_faults": sum(len(f.running) for f in faults),
        "jobs_interrupted_by_faults": interrupted,
        "interrupted_by_sigkill": sum(len(f.interrupted) for f in faults if f.signal == "SIGKILL"),
        "interrupted_by_sigterm": sum(len(f.interrupted) for f in faults if f.signal == "SIGTERM"),
        "interrupted_per_fault": [len(f.interrupted) for f in faults],
        "slowest_rerun_per_fault_s": [
            max((f.rerun_s.get(j, 120.0) for j in f.interrupted), default=0.0) for f in faults
        ],
        "max_kill_to_rerun_s": max_kill_rerun,
        "max_sigterm_to_rerun_s": max(reruns("SIGTERM"), default=0.0),
        "sigterm_stop_timeouts": result.stop_timeouts,
        "todos_per_calendar": todos,
        "threads_per_group": threads,
        "backlog": backlog,
        "until_last_fault_s": round(submitted_s, 1),
        "run_s": round(total_s, 1),
    }
    summary["ok"] = (
        lost == 0
        and identical == len(result.accepted)
        and refused_ok == result.refused
        and max_kill_rerun <= RERUN_LIMIT_S
        and all(r[0] == "SUCCESS" for r in final.values())
        # Faults that hit only idle workers would prove nothing.
        and (interrupted > 0 or not faults)
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["redis", "sqs"], default="redis")
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--sigterms", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=10, help="Redis down this long")
    parser.add_argument("--threads", type=int, default=THREADS, help="per worker group")
    parser.add_argument("--backlog", type=int, default=None, help="unfinished jobs kept")
    parser.add_argument("--todos", type=int, default=TODOS, help="per calendar")
    args = parser.parse_args()
    summary = run(
        args.broker,
        args.jobs,
        args.kills,
        args.sigterms,
        args.outage_s,
        threads=args.threads,
        backlog=args.backlog,
        todos=args.todos,
    )
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
