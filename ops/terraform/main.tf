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
  job_time_limit_s      = ceil(var.job_time_limit_ms / 1000)
  visibility_timeout_s  = local.job_time_limit_s + 30
  worker_shutdown_ms    = 25000
  worker_stop_timeout_s = 30 # > worker_shutdown_ms: running jobs are handed back first
  api_port              = 6400
  health_path           = "/api/v1/health"
  message_retention_s   = 14 * 86400
  db_name               = "taskoverflow"
  db_username           = "taskoverflow"
  create_roles          = var.existing_task_role_arn == null
  vpc_id                = coalesce(var.vpc_id, data.aws_vpc.default.id)
  subnet_ids            = coalesce(var.subnet_ids, data.aws_subnets.default.ids)
  image_urls = {
    for kind, repo in aws_ecr_repository.app : kind => "${repo.repository_url}:${var.image_tag}"
  }
}

data "aws_vpc" "default" {
  default = true
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }
}

data "aws_caller_identity" "current" {}

# --- Security groups: internet -> ALB -> API tasks; API + worker tasks -> RDS -------------

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "TaskOverflow load balancer: HTTP(S) from the internet"
  vpc_id      = local.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  #checkov:skip=CKV_AWS_260:This is the public entry point of the API; with a certificate the listener only redirects to HTTPS.
  security_group_id = aws_security_group.alb.id
  description       = "HTTP from anywhere (redirected to HTTPS when a certificate is set)"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = 80
  to_port           = 80
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  count             = var.certificate_arn == null ? 0 : 1
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from anywhere"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
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
