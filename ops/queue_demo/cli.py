"""Publish 100 numbered messages to an SQS queue, or receive and print them.

    queue-demo --name csse6400_prac --client-name alice --send
    queue-demo --name csse6400_prac --client-name bob --receive
    queue-demo --name csse6400_prac.fifo --client-name alice --prepend "run2 " --send

Standard queues deliver out of order and occasionally twice; FIFO queues (names ending in
``.fifo``) deliver in order and, with content-based deduplication, drop a body already sent
in the last 5 minutes (hence ``--prepend``). ``--endpoint-url`` points it at a local
SQS-compatible server (``make demo-queues`` creates the practical's queues there).
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import boto3
import click
from botocore.exceptions import BotoCoreError, ClientError

#: Long-poll wait per receive: replies as soon as messages arrive, at most one call per 10 s.
WAIT_TIME_S = 10


def connect(region: str, endpoint_url: str | None) -> Any:
    return boto3.client("sqs", region_name=region, endpoint_url=endpoint_url)


def queue_url(sqs: Any, name: str, region: str, endpoint_url: str | None) -> str:
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            where = endpoint_url or f"region {region}"
            raise click.ClickException(f"queue {name!r} does not exist ({where})") from None
        raise


def send(sqs: Any, url: str, *, name: str, client_name: str, prepend: str, count: int) -> None:
    fifo = name.endswith(".fifo")
    with click.progressbar(range(count), label=f"Sending to {name}") as numbers:
        for i in numbers:
            message: dict[str, Any] = {
                "QueueUrl": url,
                "MessageBody": f"{prepend}Message {i}",
                "MessageAttributes": {"client": {"DataType": "String", "StringValue": client_name}},
            }
            if fifo:
                # One group: strict order. No deduplication id: the queue's content-based
                # deduplication drops bodies already sent in the last 5 minutes.
                message["MessageGroupId"] = "default"
            sqs.send_message(**message)


def receive(sqs: Any, url: str) -> None:
    while True:
        response = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=WAIT_TIME_S,
            MessageAttributeNames=["All"],
        )
        for message in response.get("Messages", []):
            attribute = message.get("MessageAttributes", {}).get("client", {})
            sender = attribute.get("StringValue", "(no client)")
            click.echo(
                f"[{datetime.now().strftime('%H:%M:%S.%f')[:-3]}] {sender}: {message['Body']}"
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@click.command(help=__doc__.split("\n\n")[0] if __doc__ else None)
@click.option("--name", required=True, help="queue name (ending in .fifo for a FIFO queue)")
@click.option("--client-name", required=True, help="sent as the 'client' message attribute")
@click.option("--send/--receive", "sending", default=True, show_default=True)
@click.option("--prepend", default="", help="text glued in front of every body")
@click.option("--count", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--region", default="us-east-1", show_default=True, envvar="AWS_REGION")
@click.option(
    "--endpoint-url",
    default=None,
    envvar="SQS_ENDPOINT_URL",
    help="an SQS-compatible server, e.g. http://127.0.0.1:5000",
)
def main(
    name: str,
    client_name: str,
    sending: bool,
    prepend: str,
    count: int,
    region: str,
    endpoint_url: str | None,
) -> None:
    sqs = connect(region, endpoint_url)
    try:
        url = queue_url(sqs, name, region, endpoint_url)
        if sending:
            send(sqs, url, name=name, client_name=client_name, prepend=prepend, count=count)
            click.echo(f"sent {count} messages to {name}")
        else:
            click.echo(f"receiving from {name} (Ctrl-C to stop)", err=True)
            receive(sqs, url)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except (BotoCoreError, ClientError) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
