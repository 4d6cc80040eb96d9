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
  kms_key_id        = aws_kms_key.main.arn
}

locals {
  # Everything both processes read (models/settings.py); DB_PASSWORD comes as a secret.
  common_environment = {
    DATABASE_URL             = "postgresql://${local.db_username}@${aws_db_instance.main.endpoint}/${local.db_name}?sslmode=require"
    BROKER_URL               = "sqs://"
    SQS_REGION               = var.region
    BROKER_NAMESPACE         = local.namespace
    QUEUE_NAME               = var.queue_name
    JOB_TIME_LIMIT_MS        = tostring(var.job_time_limit_ms)
    JOB_MAX_RETRIES          = tostring(var.job_max_retries)
    JOB_MAX_BACKOFF_MS       = tostring(var.job_max_backoff_ms)
    SQS_VISIBILITY_TIMEOUT_S = tostring(local.visibility_timeout_s)
    SQS_MAX_RECEIVE_COUNT    = tostring(var.sqs_max_receive_count)
    LOG_FORMAT               = "json"
  }
  api_environment = merge(local.common_environment, {
    UVICORN_WORKERS = "1"
  })
  worker_environment = merge(local.common_environment, {
    WORKER_PROCESSES           = "1"
    DRAMATIQ_THREADS           = tostring(var.worker_threads)
    WORKER_SHUTDOWN_TIMEOUT_MS = tostring(local.worker_shutdown_ms)
  })
  migrate_environment = {
    DATABASE_URL = local.common_environment.DATABASE_URL
    LOG_FORMAT   = "json"
  }
  secrets = [{
    name      = "DB_PASSWORD"
    valueFrom = "${aws_db_instance.main.master_user_secret[0].secret_arn}:password::"
  }]

  # Shared by every container: non-root, read-only root filesystem, a writable /tmp.
  container_base = {
    essential              = true
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    secrets                = local.secrets
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

  container_definitions = jsonencode([merge(local.container_base, {
    name         = "api"
    image        = local.image_urls["api"]
    portMappings = [{ containerPort = local.api_port, protocol = "tcp" }]
    environment  = [for k, v in local.api_environment : { name = k, value = v }]
    healthCheck = {
      command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${local.api_port}${local.health_path}', timeout=2)"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 15
    }
    stopTimeout      = 20
    logConfiguration = local.log_configuration["api"]
  })])
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

  container_definitions = jsonencode([merge(local.container_base, {
    name        = "worker"
    image       = local.image_urls["worker"]
    environment = [for k, v in local.worker_environment : { name = k, value = v }]
    # SIGTERM first; Dramatiq hands running jobs back within WORKER_SHUTDOWN_TIMEOUT_MS (25 s),
    # before ECS's SIGKILL at stopTimeout.
    stopTimeout      = local.worker_stop_timeout_s
    logConfiguration = local.log_configuration["worker"]
  })])
}

# One-off schema migration, run before each deploy (ops/README.md shows the command).
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

  container_definitions = jsonencode([merge(local.container_base, {
    name             = "migrate"
    image            = local.image_urls["api"]
    command          = ["alembic", "upgrade", "head"]
    environment      = [for k, v in local.migrate_environment : { name = k, value = v }]
    logConfiguration = local.log_configuration["migrate"]
  })])
}

resource "aws_ecs_service" "api" {
  #checkov:skip=CKV_AWS_333:var.assign_public_ip (default true) is needed in subnets without a NAT gateway, like the default VPC, to reach ECR and SQS; inbound traffic is still limited by the tasks security group.
  name            = "${var.name}-api"
  cluster         = aws_ecs_cluster.main.id
  task_definition = aws_ecs_task_definition.api.arn
  desired_count   = var.api_desired_count
  launch_type     = "FARGATE"

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

  depends_on = [aws_lb_listener.http]
}

resource "aws_ecs_service" "worker" {
  #checkov:skip=CKV_AWS_333:var.assign_public_ip (default true) is needed in subnets without a NAT gateway, like the default VPC, to reach ECR and SQS; inbound traffic is still limited by the tasks security group.
  name            = "${var.name}-worker"
  cluster         = aws_ecs_cluster.main.id
  task_definition = aws_ecs_task_definition.worker.arn
  desired_count   = var.worker_min_count
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = local.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = var.assign_public_ip
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # Autoscaling owns the count after creation.
  lifecycle {
    ignore_changes = [desired_count]
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
