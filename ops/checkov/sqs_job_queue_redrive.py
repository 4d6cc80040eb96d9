"""CKV_TO_1: every SQS job queue has a redrive policy to a dead-letter queue.

Queues declare their role in a ``QueueRole`` tag (job, dead-letter, demo); a queue without
the tag fails, so a new queue cannot slip past the rule by being unlabelled.
"""

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

ROLES = {"job", "dead-letter", "demo"}


class SQSJobQueueRedrivesToDLQ(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Every SQS job queue has a redrive policy to a dead-letter queue",
            id="CKV_TO_1",
            categories=[CheckCategories.GENERAL_SECURITY],
            supported_resources=["aws_sqs_queue"],
        )

    def scan_resource_conf(self, conf: dict) -> CheckResult:  # type: ignore[type-arg]
        tags = (conf.get("tags") or [{}])[0] or {}
        role = tags.get("QueueRole") if isinstance(tags, dict) else None
        if role not in ROLES:
            return CheckResult.FAILED
        if role != "job":
            return CheckResult.PASSED
        policy = (conf.get("redrive_policy") or [None])[0]
        if (
            isinstance(policy, dict)
            and policy.get("deadLetterTargetArn")
            and policy.get("maxReceiveCount")
        ):
            return CheckResult.PASSED
        return CheckResult.FAILED


check = SQSJobQueueRedrivesToDLQ()
