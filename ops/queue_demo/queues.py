"""Create the practical's two queues on an SQS(-compatible) server.

``csse6400_prac`` (standard) and ``csse6400_prac.fifo`` (FIFO with content-based
deduplication), as the practical's Terraform makes them in us-east-1. Idempotent.
"""

from __future__ import annotations

import click

from queue_demo.cli import connect

STANDARD = "csse6400_prac"
FIFO = "csse6400_prac.fifo"


@click.command(help=__doc__.split("\n\n")[0] if __doc__ else None)
@click.option("--region", default="us-east-1", show_default=True, envvar="AWS_REGION")
@click.option("--endpoint-url", default=None, envvar="SQS_ENDPOINT_URL")
def main(region: str, endpoint_url: str | None) -> None:
    sqs = connect(region, endpoint_url)
    sqs.create_queue(QueueName=STANDARD)
    sqs.create_queue(
        QueueName=FIFO,
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )
    click.echo(f"queues ready: {STANDARD}, {FIFO}")


if __name__ == "__main__":
    main()
