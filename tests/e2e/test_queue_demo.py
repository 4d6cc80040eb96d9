"""The practical's queue demo, as real CLI invocations against a moto server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import boto3
import pytest

from tests.processes import BIN, MotoServer, Process
from tests.services import ROOT
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\.\d{3}\] (.+?): (.*)$")


@pytest.fixture(scope="module")
def endpoint(sqs_endpoint: str) -> Iterator[str]:
    """A moto server of this module's own, holding the practical's two queues."""
    server = MotoServer()
    done = subprocess.run(
        [str(BIN / "queue-demo-queues"), "--endpoint-url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "queues ready: csse6400_prac, csse6400_prac.fifo" in done.stdout
    yield server.url
    server.stop()


def demo(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "queue-demo"), "--endpoint-url", endpoint, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def receive(
    endpoint: str, queue: str, *, expect: int, settle_s: float = 2.0
) -> list[tuple[str, str]]:
    """Run the receiver until ``expect`` lines, then ``settle_s`` more (a duplicate or extra
    message would arrive then), and stop it with Ctrl-C."""
    proc = Process(
        "queue-demo",
        [
            str(BIN / "queue-demo"),
            "--endpoint-url",
            endpoint,
            "--name",
            queue,
            "--client-name",
            "bob",
            "--receive",
        ],
        {},
    )

    def received() -> list[tuple[str, str]]:
        proc.check_running()
        return _lines(proc)

    try:
        wait_for(
            received,
            lambda lines: len(lines) >= expect,
            timeout=60,
            interval=0.1,
            what=f"{expect} messages from {queue}",
        )
        time.sleep(settle_s)
    finally:
        stopped = proc.stop(signal.SIGINT)  # Ctrl-C
    assert stopped == 0, proc.log()
    assert "stopped" in proc.log()
    return _lines(proc)


def _lines(proc: Process) -> list[tuple[str, str]]:
    found = (LINE.match(line) for line in proc.log().splitlines())
    return [(m.group(1), m.group(2)) for m in found if m]


def test_standard_queue_delivers_all_100(endpoint: str):
    """Standard queue: every one of the 100 messages arrives (in whatever order)."""
    sent = demo(endpoint, "--name", "csse6400_prac", "--client-name", "alice")
    assert sent.returncode == 0, sent.stderr
    assert "sent 100 messages to csse6400_prac" in sent.stdout
    lines = receive(endpoint, "csse6400_prac", expect=100)
    assert {body for _, body in lines} == {f"Message {i}" for i in range(100)}
    assert {client for client, _ in lines} == {"alice"}


def test_fifo_queue_delivers_in_order_and_deduplicates(endpoint: str):
    """FIFO: a re-run within the dedup window adds nothing, --prepend adds 100; in order.

    Both re-runs happen before receiving: moto forgets a deduplication id once its message
    is deleted, whereas SQS remembers it for 5 minutes after the send.
    """
    args = ("--name", "csse6400_prac.fifo", "--client-name", "alice")
    assert demo(endpoint, *args).returncode == 0
    assert demo(endpoint, *args).returncode == 0  # same bodies: deduplicated
    assert demo(endpoint, *args, "--prepend", "run 2: ").returncode == 0  # new bodies
    lines = receive(endpoint, "csse6400_prac.fifo", expect=200)
    assert [body for _, body in lines] == [f"Message {i}" for i in range(100)] + [
        f"run 2: Message {i}" for i in range(100)
    ]


def test_message_without_client_attribute_is_printed_not_fatal(endpoint: str):
    """A message sent by another tool, without the attribute, is shown as such."""
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    url = sqs.get_queue_url(QueueName="csse6400_prac")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="from elsewhere")
    assert receive(endpoint, "csse6400_prac", expect=1) == [("(no client)", "from elsewhere")]


def test_missing_queue_is_a_one_line_error(endpoint: str):
    """A queue that does not exist: exit 1 and one clear line, no traceback."""
    done = demo(endpoint, "--name", "no_such_queue", "--client-name", "alice")
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: queue 'no_such_queue' does not exist ({endpoint})"


def test_help_lists_the_practicals_options():
    """--name, --client-name, --send/--receive, --prepend, --count, --region, --endpoint-url."""
    done = subprocess.run(
        [str(BIN / "queue-demo"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ},
    )
    for option in (
        "--name",
        "--client-name",
        "--send / --receive",
        "--prepend",
        "--count",
        "--region",
        "--endpoint-url",
    ):
        assert option in done.stdout
