# TaskOverflow on AWS: images in ECR, jobs in SQS, the API and a separately scaled worker pool
# on ECS Fargate, Postgres on RDS, logs/metrics/alarms in CloudWatch. See ../README.md.

locals {
  tags = {
    Project     = "taskoverflow"
    Environment = var.environment
    ManagedBy   = "terraform"
  }

  # The broker's names (models/sqs.py queue_names): <namespace>_<queue>, and _dlq.
  namespace      = replace(var.name, "-", "_")
  job_queue_name = "${local.namespace}_${var.queue_name}"
  dlq_name       = "${local.job_queue_name}_dlq"

  # models/settings.py: visibility = ceil(time limit) + SQS_VISIBILITY_MARGIN_S (30 s), so a
  # running job's message is never handed to a second worker.
  job_time_limit_s     = ceil(var.job_time_limit_ms / 1000)
  visibility_timeout_s = local.job_time_limit_s + 30

  # Worker shutdown on SIGTERM (ECS stop, scale-in, deploy): Dramatiq interrupts running jobs
  # at once and waits up to worker_shutdown_ms for their threads (longer than the database's
  # statement timeout, so even a job blocked in a query is interrupted by then), then stops
  # its consumers, which finish their current long poll (SQS_WAIT_TIME_S, 5 s). stopTimeout
  # (ECS's SIGKILL; at most 120 s on Fargate) leaves a margin after both.
  db_statement_timeout_ms = 30000
  worker_shutdown_ms      = 40000
  sqs_wait_time_s         = 5
  worker_stop_timeout_s   = 60

  # The API's rollout surges by exactly one task: the smallest maximum percent that ECS
  # (rounding down) turns into desired + 1 tasks, e.g. 200 for one task, 150 for two.
  api_deployment_maximum_percent = ceil(100 * (var.api_desired_count + 1) / var.api_desired_count)

  api_port = 6400
  # Liveness (no database): both the container health check and the load balancer ask it.
  # ECS stops and replaces a task that fails either, so a check that reached the database
  # would make a database failover, reboot or maintenance window replace every API task at
  # once. Those tasks would come back to the same outage; meanwhile each answers 503 with
  # Retry-After itself. A wrong database URL, password or TLS option is caught before any
  # rollout instead: the migration task connects with the same settings and fails the apply.
  health_path         = "/api/v1/health"
  message_retention_s = 14 * 86400
  db_name             = "taskoverflow"
  db_username         = "taskoverflow"
  create_roles        = var.existing_task_role_arn == null

  # Networking: the given subnets and the VPC they are in, or the default VPC's subnets.
  use_default_vpc = var.subnet_ids == null
  subnet_ids      = local.use_default_vpc ? data.aws_subnets.default[0].ids : var.subnet_ids
  vpc_ids         = local.use_default_vpc ? [data.aws_vpc.default[0].id] : distinct([for s in data.aws_subnet.given : s.vpc_id])
  vpc_id          = local.vpc_ids[0]

  image_kinds = toset(["api", "worker"])

  # Task definitions pin each image by digest, never by tag: a task can only start from the
  # image that was pushed, and the plan fails early if it has not been.
  image_digests = {
    for kind in keys(aws_ecr_repository.app) : kind => (
      var.build_images ? local.pushed_image_digests[kind] : data.aws_ecr_image.app[kind].image_digest
    )
  }
  image_refs = {
    for kind, repo in aws_ecr_repository.app : kind => "${repo.repository_url}@${local.image_digests[kind]}"
  }
}

# The account's default VPC, read only when no subnets are given (accounts and regions
# without one then still plan).
data "aws_vpc" "default" {
  count   = local.use_default_vpc ? 1 : 0
  default = true
}

data "aws_subnets" "default" {
  count = local.use_default_vpc ? 1 : 0
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }
}

data "aws_subnet" "given" {
  for_each = toset(coalesce(var.subnet_ids, []))
  id       = each.value
}

# --- Security groups: internet -> ALB -> API tasks; API + worker tasks -> RDS -------------

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "TaskOverflow load balancer: HTTP(S) from the internet"
  vpc_id      = local.vpc_id

  lifecycle {
    # The load balancer, tasks and database share one VPC.
    precondition {
      condition     = length(local.vpc_ids) == 1
      error_message = "subnet_ids are in several VPCs (${join(", ", local.vpc_ids)}): give subnets of one VPC."
    }
  }
}

# One rule per allowed range (var.allowed_cidrs; anyone by default).
resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  #checkov:skip=CKV_AWS_260:This is the public entry point of the API (var.allowed_cidrs narrows it); with a certificate the listener only redirects to HTTPS.
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTP from ${each.value} (redirected to HTTPS when a certificate is set)"
  cidr_ipv4         = each.value
  from_port         = 80
  to_port           = 80
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each          = var.certificate_arn == null ? toset([]) : toset(var.allowed_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from ${each.value}"
  cidr_ipv4         = each.value
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

# The rules were single (HTTP) and counted (HTTPS) before allowed_cidrs: an existing
# deployment keeps them as the 0.0.0.0/0 instances instead of replacing them.
moved {
  from = aws_vpc_security_group_ingress_rule.alb_http
  to   = aws_vpc_security_group_ingress_rule.alb_http["0.0.0.0/0"]
}

moved {
  from = aws_vpc_security_group_ingress_rule.alb_https[0]
  to   = aws_vpc_security_group_ingress_rule.alb_https["0.0.0.0/0"]
}

resource "aws_vpc_security_group_egress_rule" "alb_to_api" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the API tasks"
  referenced_security_group_id = aws_security_group.tasks.id
  from_port                    = local.api_port
  to_port                      = local.api_port
  ip_protocol                  = "tcp"
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "TaskOverflow ECS tasks (API and workers)"
  vpc_id      = local.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "api_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "API port from the load balancer only"
  referenced_security_group_id = aws_security_group.alb.id
  from_port                    = local.api_port
  to_port                      = local.api_port
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to AWS APIs (SQS, ECR, CloudWatch Logs, Secrets Manager)"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_db" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "Postgres"
  referenced_security_group_id = aws_security_group.db.id
  from_port                    = 5432
  to_port                      = 5432
  ip_protocol                  = "tcp"
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "TaskOverflow Postgres: only from the ECS tasks"
  vpc_id      = local.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_tasks" {
  security_group_id            = aws_security_group.db.id
  description                  = "Postgres from the ECS tasks"
  referenced_security_group_id = aws_security_group.tasks.id
  from_port                    = 5432
  to_port                      = 5432
  ip_protocol                  = "tcp"
}
