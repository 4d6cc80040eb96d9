#!/usr/bin/env bash
# Runs the schema migration (`alembic upgrade head`) as a one-off ECS task and waits for it:
# exits 0 only if the task's container exited 0.
#
#   ops/aws/run-migration.sh "$(terraform -chdir=ops/terraform output -json migration)"
#
# The argument (or $MIGRATION, as `terraform apply` passes it) is the JSON of Terraform's
# `migration` output: region, cluster, task_definition, subnets, security_groups,
# assign_public_ip. Needs the AWS CLI and python3.
set -euo pipefail

spec=${1:-${MIGRATION:-}}
[ -n "$spec" ] || { echo "usage: $0 '<terraform output -json migration>'" >&2; exit 2; }

# One field of the spec, as the AWS CLI wants it (lists joined with commas).
field() {
  python3 -c '
import json, sys
value = json.loads(sys.argv[1])[sys.argv[2]]
if isinstance(value, bool):
    value = "ENABLED" if value else "DISABLED"
elif isinstance(value, list):
    value = ",".join(value)
print(value)' "$spec" "$1"
}

region=$(field region)
cluster=$(field cluster)
network="awsvpcConfiguration={subnets=[$(field subnets)],securityGroups=[$(field security_groups)],assignPublicIp=$(field assign_public_ip)}"

echo "migration: starting $(field task_definition) on $cluster"
task=$(aws ecs run-task --region "$region" --cluster "$cluster" --launch-type FARGATE \
  --task-definition "$(field task_definition)" --network-configuration "$network" \
  --started-by terraform-migrate --query 'tasks[0].taskArn' --output text)
if [ -z "$task" ] || [ "$task" = None ]; then
  echo "migration: ECS started no task (see the failures in: aws ecs run-task ... --output json)" >&2
  exit 1
fi
echo "migration: waiting for $task"
# `wait tasks-stopped` gives up after 10 minutes; a migration may take longer (up to an hour).
for attempt in 1 2 3 4 5 6; do
  aws ecs wait tasks-stopped --region "$region" --cluster "$cluster" --tasks "$task" && break
  [ "$attempt" = 6 ] && { echo "migration: $task still running after an hour" >&2; exit 1; }
  echo "migration: still running"
done
code=$(aws ecs describe-tasks --region "$region" --cluster "$cluster" --tasks "$task" \
  --query 'tasks[0].containers[0].exitCode' --output text)
reason=$(aws ecs describe-tasks --region "$region" --cluster "$cluster" --tasks "$task" \
  --query 'tasks[0].stoppedReason' --output text)
if [ "$code" != 0 ]; then
  echo "migration: FAILED (exit code $code; $reason). Its log: CloudWatch group /ecs/<name>/migrate" >&2
  exit 1
fi
echo "migration: done"
