"""Create the job queue and its DLQ (with the redrive policy) on an SQS(-compatible) server.

For local development against moto; in production the Terraform in ops/ owns the queues.
Reads the same variables as the API and workers (BROKER_NAMESPACE, QUEUE_NAME, SQS_*).
"""

import os
import sys

import boto3

from models.settings import BrokerSettings, ConfigError, JobSettings, sqs_visibility_timeout_s
from models.sqs import client_config, create_queue_pair, queue_names


def main() -> int:
    environ = {"BROKER_URL": "sqs://", **os.environ}
    try:
        broker = BrokerSettings.from_env(environ)
        visibility = sqs_visibility_timeout_s(broker, JobSettings.from_env(environ))
    except ConfigError as exc:
        print(f"create_sqs_queues: {exc}", file=sys.stderr)
        return 1
    sqs = boto3.resource("sqs", endpoint_url=broker.sqs_endpoint_url, config=client_config(broker))
    main_name, _ = queue_names(broker)
    for url in create_queue_pair(
        sqs,
        main_name,
        max_receive_count=broker.sqs_max_receive_count,
        visibility_timeout_s=visibility,
    ):
        print(f"create_sqs_queues: ready {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
