# --- IAM: one role per job, each allowed only what its process does -----------------------
# With var.existing_task_role_arn (the Learner Lab's LabRole, which forbids creating roles)
# none of this is created and that role is used for everything.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Execution role: what ECS itself needs to start a task (pull the images, write logs).
resource "aws_iam_role" "execution" {
  count              = local.create_roles ? 1 : 0
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "PullImages"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    resources = [for repo in aws_ecr_repository.app : repo.arn]
  }
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # this API has no resource-level permissions
  }
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for group in aws_cloudwatch_log_group.app : "${group.arn}:*"]
  }
}

# Every process reads the database password from the RDS-managed secret itself, at its first
# connection and again after a rotation (models/credentials.py).
data "aws_iam_policy_document" "read_database_password" {
  statement {
    sid       = "ReadDatabasePassword"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_db_instance.main.master_user_secret[0].secret_arn]
  }
  # With the customer key only: an AWS-managed key lets Secrets Manager decrypt for anyone
  # allowed to read the secret.
  dynamic "statement" {
    for_each = aws_kms_key.main[*].arn
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${var.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  count  = local.create_roles ? 1 : 0
  name   = "start-tasks"
  role   = aws_iam_role.execution[0].id
  policy = data.aws_iam_policy_document.execution.json
}

# API task role (also the migration task's): send calendar jobs (dramatiq-sqs also looks up
# the DLQ's URL; the console reads its depth), read the database password and, with api_keys_enabled, the API keys.
resource "aws_iam_role" "api" {
  count              = local.create_roles ? 1 : 0
  name               = "${var.name}-api"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "api" {
  source_policy_documents = [data.aws_iam_policy_document.read_database_password.json]
  statement {
    sid       = "SendJobs"
    actions   = ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.jobs.arn]
  }
  # The console's backlog (api/backlog.py) reads the DLQ's depth as well as the queue's.
  statement {
    sid       = "ReadDeadLetterQueue"
    actions   = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.jobs_dlq.arn]
  }
  # With api_keys_enabled: the accepted keys' hashes (API_KEYS_SECRET_ARN), that secret
  # only: never the first key's plaintext copy (api_keys.tf). Decrypting goes through
  # Secrets Manager with the same key as the database password (read_database_password).
  dynamic "statement" {
    for_each = aws_secretsmanager_secret.api_keys[*].arn
    content {
      sid       = "ReadApiKeys"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "api" {
  count  = local.create_roles ? 1 : 0
  name   = "send-jobs"
  role   = aws_iam_role.api[0].id
  policy = data.aws_iam_policy_document.api.json
}

# Worker task role: consume jobs, re-send retries (and the reconciler's re-sends) to the job
# queue, dead-letter failed ones.
resource "aws_iam_role" "worker" {
  count              = local.create_roles ? 1 : 0
  name               = "${var.name}-worker"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "worker" {
  source_policy_documents = [data.aws_iam_policy_document.read_database_password.json]
  statement {
    sid = "ConsumeJobs"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:SendMessage",
      "sqs:GetQueueUrl",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.jobs.arn]
  }
  statement {
    sid       = "DeadLetter"
    actions   = ["sqs:SendMessage", "sqs:GetQueueUrl"]
    resources = [aws_sqs_queue.jobs_dlq.arn]
  }
}

resource "aws_iam_role_policy" "worker" {
  count  = local.create_roles ? 1 : 0
  name   = "consume-jobs"
  role   = aws_iam_role.worker[0].id
  policy = data.aws_iam_policy_document.worker.json
}

locals {
  execution_role_arn = local.create_roles ? aws_iam_role.execution[0].arn : var.existing_task_role_arn
  api_role_arn       = local.create_roles ? aws_iam_role.api[0].arn : var.existing_task_role_arn
  worker_role_arn    = local.create_roles ? aws_iam_role.worker[0].arn : var.existing_task_role_arn
}
