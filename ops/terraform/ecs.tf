# --- ECS Fargate: the API behind the ALB, the worker pool scaled on SQS backlog ------------

resource "aws_ecs_cluster" "main" {
  name = var.name

  # RunningTaskCount (worker autoscaling) and per-task CPU/memory come from Container Insights.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "app" {
  for_each = toset(["api", "worker", "migrate"])

  name              = "/ecs/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}

locals {
  database_url = "postgresql://${local.db_username}@${aws_db_instance.main.endpoint}/${local.db_name}?sslmode=require"
  # Where every process gets the database password (models/settings.py, DB_PASSWORD_SECRET_ARN).
  database_environment = {
    DATABASE_URL            = local.database_url
    DB_PASSWORD_SECRET_ARN  = aws_db_instance.main.master_user_secret[0].secret_arn
    DB_STATEMENT_TIMEOUT_MS = tostring(local.db_statement_timeout_ms)
    LOG_FORMAT              = "json"
  }
  # Everything the API and the workers both read (models/settings.py).
  common_environment = merge(local.database_environment, {
    BROKER_URL               = "sqs://"
    SQS_REGION               = var.region
    BROKER_NAMESPACE         = local.namespace
    QUEUE_NAME               = var.queue_name
    JOB_TIME_LIMIT_MS        = tostring(var.job_time_limit_ms)
    JOB_MAX_RETRIES          = tostring(var.job_max_retries)
    JOB_MAX_BACKOFF_MS       = tostring(var.job_max_backoff_ms)
    SQS_VISIBILITY_TIMEOUT_S = tostring(local.visibility_timeout_s)
    SQS_MAX_RECEIVE_COUNT    = tostring(var.sqs_max_receive_count)
    SQS_WAIT_TIME_S          = tostring(local.sqs_wait_time_s)
  })

  # Worker processes per worker task (WORKER_PROCESSES): one, so a task is the unit that
  # scales, and its connection budget (rds.tf) and capacity (below) follow from its threads.
  worker_processes = 1

  # Backpressure (JOBS_MAX_UNFINISHED): the API refuses new jobs with 503 once this many are
  # unfinished: about jobs_queued_per_worker_thread waiting for each worker thread the pool
  # can scale to, so the limit follows the capacity instead of a number typed separately.
  worker_capacity     = var.worker_max_count * local.worker_processes * var.worker_threads
  jobs_max_unfinished = local.worker_capacity * var.jobs_queued_per_worker_thread

  # TRUSTED_PROXIES: the load balancer's nodes have addresses in its subnets, so only a
  # connection from there has its X-Forwarded-For/-Proto believed (the task definition runs
  # uvicorn without proxy headers; the app decides). Tasks share those subnets, but the
  # tasks security group lets only the load balancer reach the API port.
  trusted_proxies = join(",", local.use_default_vpc ? [data.aws_vpc.default[0].cidr_block] : [for s in data.aws_subnet.given : s.cidr_block])

  # What only the API reads (models/settings.py AccessSettings, LimitSettings). Settings
  # left out keep the code's defaults; api_limits overrides some of them.
  api_environment = merge(
    { for name, value in var.api_limits : name => tostring(value) },
    {
      JOBS_MAX_UNFINISHED = tostring(local.jobs_max_unfinished)
      # The SQS deployment has no Redis: every API process counts in one Postgres table.
      RATE_LIMIT_STORE = "postgres"
      TRUSTED_PROXIES  = local.trusted_proxies
    },
    length(var.cors_allow_origins) == 0 ? {} : { CORS_ALLOW_ORIGINS = join(",", var.cors_allow_origins) },
    # The API reads the accepted keys' hashes from the secret itself, at start and every
    # API_KEYS_REFRESH_S, so a rotation needs no restart (ops/README.md, "API keys").
    var.api_keys_enabled ? { API_KEYS_SECRET_ARN = aws_secretsmanager_secret.api_keys[0].arn } : {},
  )

  # Shared by every container: non-root, read-only root filesystem, a writable /tmp. The
  # images declare VOLUME /tmp, so Fargate fills this task volume from the image's /tmp
  # (mode 1777); an undeclared path would be an empty root-owned 0755 directory.
  container_base = {
    essential              = true
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
  }

  # Each process logs to its own group (stdout JSON lines, CloudWatch Logs via awslogs).
  log_configuration = { for kind, group in aws_cloudwatch_log_group.app : kind => {
    logDriver = "awslogs"
    options = {
      awslogs-group         = group.name
      awslogs-region        = var.region
      awslogs-stream-prefix = kind
    }
  } }

  # The three container definitions, as ECS runs them. `make aws-parity` applies this
  # configuration to moto and runs what ECS registered under podman; the static tests
  # (tests/deployment/task_definitions.py) read them here, so keep them here, not inline.
  containers = {
    api = merge(local.container_base, {
      name         = "api"
      image        = local.image_refs["api"]
      portMappings = [{ containerPort = local.api_port, protocol = "tcp" }]
      environment = [for k, v in merge(local.common_environment, local.api_environment, {
        UVICORN_WORKERS = "1"
        DB_POOL_SIZE    = tostring(var.api_db_pool_size)
        # No /metrics: the port is behind the public load balancer, which would pass
        # "//metrics" and the like through, and on AWS the job metrics are EMF (below).
        API_METRICS = "false"
      }) : { name = k, value = v }]
      # Liveness only (no database), like the load balancer's check: ECS restarts a wedged
      # process, not a healthy one that waits out a database outage (main.tf, health_path).
      healthCheck = {
        command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${local.api_port}${local.health_path}', timeout=2)"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 15
      }
      stopTimeout      = 20
      logConfiguration = local.log_configuration["api"]
    })
    worker = merge(local.container_base, {
      name  = "worker"
      image = local.image_refs["worker"]
      environment = [for k, v in merge(local.common_environment, {
        WORKER_PROCESSES           = tostring(local.worker_processes)
        DRAMATIQ_THREADS           = tostring(var.worker_threads)
        WORKER_SHUTDOWN_TIMEOUT_MS = tostring(local.worker_shutdown_ms)
        # Job metrics as CloudWatch EMF log lines, read by the alarms and dashboard
        # (cloudwatch.tf). Nothing scrapes Prometheus on ECS: no /metrics process.
        METRICS_EMF         = "true"
        METRICS_NAMESPACE   = local.metrics_namespace
        WORKER_METRICS_PORT = "0"
      }) : { name = k, value = v }]
      # SIGTERM first; Dramatiq hands running jobs back within WORKER_SHUTDOWN_TIMEOUT_MS and
      # its consumers finish their long poll, all before ECS's SIGKILL at stopTimeout.
      stopTimeout      = local.worker_stop_timeout_s
      logConfiguration = local.log_configuration["worker"]
    })
    migrate = merge(local.container_base, {
      name             = "migrate"
      image            = local.image_refs["api"]
      command          = ["alembic", "upgrade", "head"]
      environment      = [for k, v in local.database_environment : { name = k, value = v }]
      logConfiguration = local.log_configuration["migrate"]
    })
  }
}

resource "aws_ecs_task_definition" "api" {
  #checkov:skip=CKV_AWS_249:Separate execution and task roles are created unless var.existing_task_role_arn is set (the Learner Lab allows only its LabRole).
  family                   = "${var.name}-api"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.api_cpu
  memory                   = var.api_memory
  execution_role_arn       = local.execution_role_arn
  task_role_arn            = local.api_role_arn

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([local.containers["api"]])

  lifecycle {
    # Autoscaling adds worker tasks while the backlog per task exceeds its target: if the
    # API refused jobs before the backlog could reach that target on every task, the pool
    # would never scale to its ceiling.
    precondition {
      condition     = local.jobs_max_unfinished > var.backlog_per_worker_target * var.worker_max_count
      error_message = "JOBS_MAX_UNFINISHED (${local.jobs_max_unfinished}) must exceed backlog_per_worker_target x worker_max_count (${var.backlog_per_worker_target * var.worker_max_count}), or the API refuses jobs before the workers scale out: raise jobs_queued_per_worker_thread."
    }
  }
}

resource "aws_ecs_task_definition" "worker" {
  #checkov:skip=CKV_AWS_249:Separate execution and task roles are created unless var.existing_task_role_arn is set (the Learner Lab allows only its LabRole).
  family                   = "${var.name}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_cpu
  memory                   = var.worker_memory
  execution_role_arn       = local.execution_role_arn
  task_role_arn            = local.worker_role_arn

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([local.containers["worker"]])
}

# One-off schema migration with the release's image: run after the new task definitions are
# registered and before the services roll out (terraform_data.migrate below), or by hand
# with ops/aws/run-migration.sh.
resource "aws_ecs_task_definition" "migrate" {
  #checkov:skip=CKV_AWS_249:Separate execution and task roles are created unless var.existing_task_role_arn is set (the Learner Lab allows only its LabRole).
  family                   = "${var.name}-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = local.execution_role_arn
  task_role_arn            = local.api_role_arn

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([local.containers["migrate"]])
}

locals {
  # What ops/aws/run-migration.sh needs to start the migration task (also an output).
  migration = {
    region           = var.region
    cluster          = aws_ecs_cluster.main.name
    task_definition  = aws_ecs_task_definition.migrate.arn
    subnets          = local.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = var.assign_public_ip
  }
}

# Migrate before deploy, in the same apply: a new migration task definition (a new image)
# runs to completion before either service is updated, so new code never meets the old
# schema; if it fails, the apply stops with the services untouched. Migrations must keep
# the previous release working (add, backfill, then remove in a later release), since old
# tasks serve until the rollout replaces them.
resource "terraform_data" "migrate" {
  count            = var.migrate_on_apply ? 1 : 0
  triggers_replace = [aws_ecs_task_definition.migrate.arn]

  # The task starts with the execution role (pull, logs) and runs with the API role (the
  # database password): both policies are in place first, or the first apply can race them
  # into AccessDenied. Role ARNs alone do not order this: a role exists before its policy.
  depends_on = [aws_iam_role_policy.execution, aws_iam_role_policy.api]

  provisioner "local-exec" {
    command     = "${path.module}/../aws/run-migration.sh"
    environment = { MIGRATION = jsonencode(local.migration) }
  }
}

resource "aws_ecs_service" "api" {
  #checkov:skip=CKV_AWS_333:var.assign_public_ip (default true) is needed in subnets without a NAT gateway, like the default VPC, to reach ECR and SQS; inbound traffic is still limited by the tasks security group.
  name            = "${var.name}-api"
  cluster         = aws_ecs_cluster.main.id
  task_definition = aws_ecs_task_definition.api.arn
  desired_count   = var.api_desired_count
  launch_type     = "FARGATE"
  # Load balancer health checks start counting once the app has had time to start.
  health_check_grace_period_seconds = 30
  # A rollout starts one new task at a time beside the running ones and stops an old one
  # only when a new one is healthy: never fewer tasks serving than desired, and one more
  # task's connections (counted in rds.tf) rather than ECS's default of twice as many.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = local.api_deployment_maximum_percent

  network_configuration {
    subnets          = local.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = var.assign_public_ip
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.api.arn
    container_name   = "api"
    container_port   = local.api_port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # apply succeeds only once the new tasks are running and stable: a rollout the circuit
  # breaker rolls back fails the apply instead of reporting success.
  wait_for_steady_state = true

  # With api_keys_enabled, new tasks read the keys at start: the secret's first value and
  # the role's grant exist before the rollout (otherwise the first read fails, and keyed
  # requests get 503 until the next API_KEYS_REFRESH_S).
  depends_on = [
    aws_lb_listener.http,
    terraform_data.migrate,
    aws_secretsmanager_secret_version.api_keys,
    aws_iam_role_policy.api,
    aws_iam_role_policy.execution,
  ]
}

resource "aws_ecs_service" "worker" {
  #checkov:skip=CKV_AWS_333:var.assign_public_ip (default true) is needed in subnets without a NAT gateway, like the default VPC, to reach ECR and SQS; inbound traffic is still limited by the tasks security group.
  name            = "${var.name}-worker"
  cluster         = aws_ecs_cluster.main.id
  task_definition = aws_ecs_task_definition.worker.arn
  desired_count   = var.worker_min_count
  launch_type     = "FARGATE"
  # A rollout replaces workers without ever running more than autoscaling's count, so the
  # database's connection budget (rds.tf) holds during deploys at full scale. Stopped
  # workers hand their running jobs back (SIGTERM, stopTimeout); the jobs wait in SQS until
  # the new tasks start, a pause of about one task start. A minimum above 0 would deadlock a
  # single-task pool: ECS rounds the minimum up and the maximum down.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = local.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = var.assign_public_ip
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # apply succeeds only once the new tasks are running and stable: a rollout the circuit
  # breaker rolls back fails the apply instead of reporting success.
  wait_for_steady_state = true

  # As for the API service: the workers' own policy (and the execution role's) before the
  # first task starts.
  depends_on = [terraform_data.migrate, aws_iam_role_policy.execution, aws_iam_role_policy.worker]

  lifecycle {
    # Autoscaling owns the count after creation.
    ignore_changes = [desired_count]
    # Every task at full scale must find a database connection (local.db_connections).
    precondition {
      condition     = local.db_connections.needed <= local.db_connections.available
      error_message = "At full scale, during a rollout, the tasks need ${local.db_connections.needed} database connections; ${var.db_instance_class} serves about ${local.db_connections.available} after the reserve. Lower worker_max_count, worker_threads, api_desired_count or api_db_pool_size, or choose a larger db_instance_class."
    }
  }
}

# Workers scale on backlog per task: visible job messages / running worker tasks.
resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.worker.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.worker_min_count
  max_capacity       = var.worker_max_count
}

resource "aws_appautoscaling_policy" "worker_backlog" {
  name               = "${var.name}-worker-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.backlog_per_worker_target
    scale_in_cooldown  = 120
    scale_out_cooldown = 30

    customized_metric_specification {
      metrics {
        id          = "visible"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = aws_sqs_queue.jobs.name
            }
          }
        }
      }
      metrics {
        id          = "tasks"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.main.name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.worker.name
            }
          }
        }
      }
      metrics {
        id          = "backlog_per_task"
        label       = "Visible job messages per running worker task"
        expression  = "IF(tasks > 0, visible / tasks, visible)"
        return_data = true
      }
    }
  }
}
