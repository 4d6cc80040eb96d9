# --- SQS: the job queue and its DLQ, under the names the broker looks up -----------------

resource "aws_sqs_queue" "jobs_dlq" {
  name                      = local.dlq_name
  message_retention_seconds = local.message_retention_s
  sqs_managed_sse_enabled   = true
  # QueueRole drives ops/checkov's check that every job queue redrives to a DLQ.
  tags = { QueueRole = "dead-letter" }
}

resource "aws_sqs_queue" "jobs" {
  name                      = local.job_queue_name
  message_retention_seconds = local.message_retention_s
  # Longer than an attempt may run, so a running job's message is not handed out twice;
  # a crashed worker's job comes back after it. The workers send the same value.
  visibility_timeout_seconds = local.visibility_timeout_s
  # The workers long-poll (SQS_WAIT_TIME_S); this is the default for other receivers.
  receive_wait_time_seconds = 5
  sqs_managed_sse_enabled   = true

  # Catches what the workers cannot: messages they cannot decode, and crash loops.
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.jobs_dlq.arn
    maxReceiveCount     = var.sqs_max_receive_count
  })
  tags = { QueueRole = "job" }
}

resource "aws_sqs_queue_redrive_allow_policy" "jobs_dlq" {
  queue_url = aws_sqs_queue.jobs_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.jobs.arn]
  })
}

# --- The practical's queue demo (ops/queue_demo): a standard and a FIFO queue -------------

resource "aws_sqs_queue" "demo" {
  # Fixed names: the practical's clients and walkthrough use them.
  name                    = "csse6400_prac"
  sqs_managed_sse_enabled = true
  tags                    = { QueueRole = "demo" }
}

resource "aws_sqs_queue" "demo_fifo" {
  name                        = "csse6400_prac.fifo"
  fifo_queue                  = true
  content_based_deduplication = true
  sqs_managed_sse_enabled     = true
  tags                        = { QueueRole = "demo" }
}
