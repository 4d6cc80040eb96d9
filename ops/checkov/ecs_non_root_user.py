"""CKV_TO_2: every ECS container runs as a non-root user.

Passes when each container definition sets ``user`` to something other than root/0, or is
one of ``local.containers`` (ops/terraform/ecs.tf), all built on ``local.container_base``;
tests/deployment/test_terraform.py checks the rendered definitions' users are non-root.
"""

import re

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

# The definitions reach checkov as text with quotes escaped to varying depths.
_USER = re.compile(r"""\buser\\*['"]\s*[:=]\s*\\*['"]([^'"\\]*)""")


class ECSContainersRunAsNonRoot(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Every ECS container runs as a non-root user",
            id="CKV_TO_2",
            categories=[CheckCategories.IAM],
            supported_resources=["aws_ecs_task_definition"],
        )

    def scan_resource_conf(self, conf: dict) -> CheckResult:  # type: ignore[type-arg]
        text = str((conf.get("container_definitions") or [""])[0])
        users = _USER.findall(text)
        if any(user.split(":")[0] in ("", "0", "root") for user in users):
            return CheckResult.FAILED
        if users or "local.container_base" in text or "local.containers[" in text:
            return CheckResult.PASSED
        return CheckResult.FAILED


check = ECSContainersRunAsNonRoot()
