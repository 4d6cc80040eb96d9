# --- CloudWatch: the workers' job metrics (Embedded Metric Format), alarms, dashboard -------

locals {
  # The workers run with METRICS_EMF=true and METRICS_NAMESPACE = this (ecs.tf) and write one
  # EMF line per ended job attempt to their log group; CloudWatch Logs turns each into metrics
  # (no agent, no metric filter). Names and dimensions: workers/metrics.py (EMF_*, DIM_*);
  # tests/unit/test_metric_names.py holds both sides to them.
  metrics_namespace = "TaskOverflow/${var.name}"
  # Every job kind (models.job.JobKind): alarms and widgets are per kind (the Kind dimension).
  job_kinds = ["ical"]
}

# Encrypted with the customer key when there is one. Not with the AWS-managed aws/sns key:
# its policy cannot be changed to let CloudWatch publish, and alarms would be dropped.
resource "aws_sns_topic" "alarms" {
  #checkov:skip=CKV_AWS_26:Encrypted with the customer key unless create_kms_key is false, where aws/sns would silently drop every alarm.
  name              = "${var.name}-alarms"
  kms_master_key_id = local.kms_key_arn
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count     = var.alarm_email == null ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  alarm_name          = "${var.name}-jobs-dead-lettered"
  alarm_description   = "A job message reached the DLQ (${local.dlq_name}): a job failed for good or a message could not be processed. Inspect it, fix, then redrive."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.jobs_dlq.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "oldest_job" {
  alarm_name          = "${var.name}-jobs-waiting-too-long"
  alarm_description   = "The oldest job message has waited over 5 minutes: workers are down, stuck or too few."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.jobs.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 300
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${var.name}-api-5xx"
  alarm_description   = "The API answered 5xx (503s mean the database or queue is unreachable; 500s are bugs: see the api log group)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_Target_5XX_Count"
  dimensions          = { LoadBalancer = aws_lb.api.arn_suffix, TargetGroup = aws_lb_target_group.api.arn_suffix }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 5
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "api_unhealthy" {
  alarm_name          = "${var.name}-api-unhealthy-hosts"
  alarm_description   = "An API task fails the load balancer's health check (${local.health_path})."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.api.arn_suffix, TargetGroup = aws_lb_target_group.api.arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "jobs_failing" {
  for_each = toset(local.job_kinds)

  alarm_name          = "${var.name}-${each.key}-jobs-failing"
  alarm_description   = "${each.key} jobs ended FAILURE in the last 5 minutes (the job rows' error column, and the console, say why)."
  namespace           = local.metrics_namespace
  metric_name         = "JobsFinished"
  dimensions          = { Kind = each.key, Status = "FAILURE" }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "queue_wait_p95" {
  for_each = toset(local.job_kinds)

  alarm_name         = "${var.name}-${each.key}-queue-wait-p95"
  alarm_description  = "95 % of ${each.key} jobs waited over ${var.queue_wait_p95_alarm_ms} ms for a worker, three 5-minute periods in a row: the pool is too small (see its autoscaling max), stuck, or failing to start."
  namespace          = local.metrics_namespace
  metric_name        = "QueueWait"
  dimensions         = { Kind = each.key }
  extended_statistic = "p95"
  # A handful of jobs make a meaningless p95: such periods leave the alarm as it is.
  evaluate_low_sample_count_percentiles = "ignore"
  period                                = 300
  evaluation_periods                    = 3
  comparison_operator                   = "GreaterThanThreshold"
  threshold                             = var.queue_wait_p95_alarm_ms
  treat_missing_data                    = "notBreaching"
  alarm_actions                         = [aws_sns_topic.alarms.arn]
  ok_actions                            = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_dashboard" "main" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = [
      {
        type = "metric", x = 0, y = 0, width = 12, height = 6
        properties = {
          title  = "Job queue depth"
          region = var.region
          stat   = "Maximum"
          period = 60
          metrics = [
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.jobs.name, { label = "waiting" }],
            ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", aws_sqs_queue.jobs.name, { label = "in progress" }],
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.jobs_dlq.name, { label = "dead-lettered" }],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 0, width = 12, height = 6
        properties = {
          title  = "Jobs finished per minute"
          region = var.region
          stat   = "Sum"
          period = 60
          metrics = flatten([for kind in local.job_kinds : [
            for status in ["SUCCESS", "FAILURE", "CANCELLED"] :
            [local.metrics_namespace, "JobsFinished", "Kind", kind, "Status", status, { label = "${kind} ${status}" }]
          ]])
        }
      },
      {
        type = "metric", x = 0, y = 6, width = 12, height = 6
        properties = {
          title  = "Queue wait and run time (ms)"
          region = var.region
          period = 60
          metrics = flatten([for kind in local.job_kinds : [
            [local.metrics_namespace, "QueueWait", "Kind", kind, { stat = "p50", label = "${kind} queue wait p50" }],
            [local.metrics_namespace, "QueueWait", "Kind", kind, { stat = "p95", label = "${kind} queue wait p95" }],
            [local.metrics_namespace, "RunTime", "Kind", kind, "Outcome", "success", { stat = "p50", label = "${kind} run time p50" }],
            [local.metrics_namespace, "RunTime", "Kind", kind, "Outcome", "success", { stat = "p95", label = "${kind} run time p95" }],
          ]])
        }
      },
      {
        type = "metric", x = 0, y = 18, width = 24, height = 6
        properties = {
          title  = "Job attempts per minute, by how they ended"
          region = var.region
          stat   = "Sum"
          period = 60
          metrics = flatten([for kind in local.job_kinds : [
            for outcome in ["success", "retry", "failure", "cancelled"] :
            [local.metrics_namespace, "Attempts", "Kind", kind, "Outcome", outcome, { label = "${kind} ${outcome}" }]
          ]])
        }
      },
      {
        type = "metric", x = 12, y = 6, width = 12, height = 6
        properties = {
          title  = "API errors and oldest waiting job"
          region = var.region
          stat   = "Sum"
          period = 60
          metrics = [
            ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "LoadBalancer", aws_lb.api.arn_suffix, { label = "API 5xx" }],
            ["AWS/ApplicationELB", "HTTPCode_Target_4XX_Count", "LoadBalancer", aws_lb.api.arn_suffix, { label = "API 4xx" }],
            ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", aws_sqs_queue.jobs.name, { stat = "Maximum", label = "oldest job (s)", yAxis = "right" }],
          ]
        }
      },
      {
        type = "metric", x = 0, y = 12, width = 24, height = 6
        properties = {
          title  = "Running tasks"
          region = var.region
          stat   = "Average"
          period = 60
          metrics = [
            ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", aws_ecs_cluster.main.name, "ServiceName", aws_ecs_service.api.name, { label = "api" }],
            ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", aws_ecs_cluster.main.name, "ServiceName", aws_ecs_service.worker.name, { label = "workers" }],
          ]
        }
      },
    ]
  })
}
