variable "region" {
  description = "AWS region for every resource (the practical uses us-east-1)."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Prefix of every resource name; also the broker namespace (queues are <name>_<queue_name>)."
  type        = string
  default     = "taskoverflow"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "environment" {
  description = "Deployment stage, recorded in the tags (e.g. dev, staging, prod)."
  type        = string
  default     = "dev"
}

variable "subnet_ids" {
  description = "Subnets of one VPC for the load balancer, tasks and database (two or more AZs); the VPC is theirs. null: the default VPC's subnets (as in the Learner Lab)."
  type        = list(string)
  default     = null

  validation {
    condition     = var.subnet_ids == null || length(coalesce(var.subnet_ids, [])) >= 2
    error_message = "subnet_ids needs subnets in at least two availability zones (the load balancer and RDS require it)."
  }
}

variable "assign_public_ip" {
  description = "Give tasks public IPs: needed where subnets have no NAT gateway (the default VPC) to reach ECR and SQS."
  type        = bool
  default     = true
}

variable "existing_task_role_arn" {
  description = "Use this IAM role (e.g. the Learner Lab's LabRole) as task and execution role instead of creating least-privilege roles."
  type        = string
  default     = null
}

variable "image_tag" {
  description = "Tag of the images to build, push and run (the repositories are immutable: use a new tag per release, e.g. the git commit)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid Docker tag other than latest."
  }
}

variable "migrate_on_apply" {
  description = "Run the schema migration task (ops/aws/run-migration.sh, needs the AWS CLI where terraform runs) after registering new task definitions and before the services roll out; false: run it yourself before deploying."
  type        = bool
  default     = true
}

variable "build_images" {
  description = "Build and push both images from this checkout with the docker provider (needs a Docker engine where terraform runs)."
  type        = bool
  default     = true
}

variable "create_kms_key" {
  description = "Create a customer-managed KMS key for the images, logs, alarm topic and secrets. false: each service's own encryption (ECR AES-256, aws/secretsmanager, CloudWatch Logs' default, an unencrypted alarm topic), for accounts that may not create keys or key policies (the Learner Lab documents nothing about kms:CreateKey). The database always uses aws/rds."
  type        = bool
  default     = true
}

variable "queue_name" {
  description = "Dramatiq queue of calendar jobs (QUEUE_NAME)."
  type        = string
  default     = "ical"
}

variable "job_time_limit_ms" {
  description = "JOB_TIME_LIMIT_MS: an attempt running longer is interrupted. The SQS visibility timeout is derived from it."
  type        = number
  default     = 60000

  validation {
    condition     = var.job_time_limit_ms >= 1000 && var.job_time_limit_ms <= 3600000
    error_message = "job_time_limit_ms must be between 1 s and 1 h."
  }
}

variable "job_max_retries" {
  description = "JOB_MAX_RETRIES: transient failures retried this many times before FAILURE."
  type        = number
  default     = 5
}

variable "job_max_backoff_ms" {
  description = "JOB_MAX_BACKOFF_MS: longest retry delay. SQS cannot delay a message more than 15 minutes."
  type        = number
  default     = 60000

  validation {
    condition     = var.job_max_backoff_ms <= 900000
    error_message = "job_max_backoff_ms must be at most 900000 (SQS's 15-minute delay cap)."
  }
}

variable "sqs_max_receive_count" {
  description = "Receives of one message before SQS moves it to the DLQ (SQS_MAX_RECEIVE_COUNT): catches crash loops and undecodable messages."
  type        = number
  default     = 5

  validation {
    condition     = var.sqs_max_receive_count >= 1 && var.sqs_max_receive_count <= 1000
    error_message = "sqs_max_receive_count must be between 1 and 1000."
  }
}

variable "api_desired_count" {
  description = "API tasks behind the load balancer (a rollout runs one more beside them)."
  type        = number
  default     = 2

  validation {
    condition     = var.api_desired_count >= 1 && floor(var.api_desired_count) == var.api_desired_count
    error_message = "api_desired_count must be a whole number, at least 1."
  }
}

variable "api_db_pool_size" {
  description = "DB_POOL_SIZE of each API task: its database connections (and broker-send threads)."
  type        = number
  default     = 5

  validation {
    condition     = var.api_db_pool_size >= 1
    error_message = "api_db_pool_size must be at least 1."
  }
}

variable "api_cpu" {
  description = "CPU units per API task (1024 = 1 vCPU)."
  type        = number
  default     = 512
}

variable "api_memory" {
  description = "Memory (MiB) per API task."
  type        = number
  default     = 1024
}

variable "worker_min_count" {
  description = "Fewest worker tasks (autoscaling floor)."
  type        = number
  default     = 1
}

variable "worker_max_count" {
  description = "Most worker tasks (autoscaling ceiling). Each holds worker_threads + 1 database connections: the plan refuses a ceiling the database cannot serve, counting the API's extra task during a rollout (see db_connection_reserve)."
  type        = number
  default     = 5

  validation {
    condition     = var.worker_max_count >= 1
    error_message = "worker_max_count must be at least 1."
  }
}

variable "worker_threads" {
  description = "DRAMATIQ_THREADS per worker task."
  type        = number
  default     = 8
}

variable "worker_cpu" {
  description = "CPU units per worker task."
  type        = number
  default     = 1024
}

variable "worker_memory" {
  description = "Memory (MiB) per worker task."
  type        = number
  default     = 2048
}

variable "queue_wait_p95_alarm_ms" {
  description = "Alarm when the 95th percentile of jobs' queue wait (submission to first claim, ms) stays above this for 15 minutes."
  type        = number
  default     = 60000
}

variable "backlog_per_worker_target" {
  description = "Autoscaling target: visible job messages per running worker task."
  type        = number
  default     = 50
}

variable "db_instance_class" {
  description = "RDS instance class (its memory sets max_connections; see rds.tf for the classes the connection budget knows)."
  type        = string
  default     = "db.t4g.micro"
}

variable "db_connection_reserve" {
  description = "Database connections kept free at full scale for people and tools (psql, the RDS console, monitoring) besides the superuser slots RDS reserves."
  type        = number
  default     = 8
}

variable "db_storage_type" {
  description = "RDS storage type: gp3, or gp2 where gp3 is not offered (the Learner Lab lists only gp2)."
  type        = string
  default     = "gp3"

  validation {
    condition     = contains(["gp2", "gp3"], var.db_storage_type)
    error_message = "db_storage_type must be gp2 or gp3."
  }
}

variable "db_allocated_storage" {
  description = "RDS storage (GiB)."
  type        = number
  default     = 20
}

variable "db_multi_az" {
  description = "Run the database in two availability zones (recommended for production; doubles its cost)."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the data: the database and load balancer refuse deletion, and ECR repositories holding images too. Set false (then apply) before `terraform destroy`."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups."
  type        = number
  default     = 7

  validation {
    condition     = var.db_backup_retention_days >= 1
    error_message = "Backups stay on: db_backup_retention_days must be at least 1."
  }
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps container logs."
  type        = number
  default     = 365
}

variable "alarm_email" {
  description = "Address subscribed to the alarms topic (null: no subscription)."
  type        = string
  default     = null
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS on the load balancer; null serves plain HTTP on port 80 (as the practical does)."
  type        = string
  default     = null
}

# --- Who may reach the API, and what it accepts (models/settings.py AccessSettings, LimitSettings)

variable "allowed_cidrs" {
  description = "IPv4 CIDR ranges that may reach the load balancer (HTTP, and HTTPS with a certificate): [\"0.0.0.0/0\"] is anyone; narrow it (e.g. your office's or campus's range) to keep the API private. The load balancer is IPv4 only, so IPv6 ranges are refused; each range takes up to two of the security group's 60 inbound rules."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.allowed_cidrs) >= 1 && length(var.allowed_cidrs) <= 30
    error_message = "allowed_cidrs needs 1 to 30 ranges (an empty list would leave the load balancer unreachable)."
  }

  validation {
    # cidrnetmask accepts IPv4 only; cidrsubnet(c, 0, 0) == c refuses host bits (10.0.0.1/8),
    # which AWS would otherwise store as another range than the one written.
    condition     = alltrue([for c in var.allowed_cidrs : can(cidrnetmask(c)) && try(cidrsubnet(c, 0, 0) == c, false)])
    error_message = "Every allowed_cidrs entry must be an IPv4 network in CIDR form with no host bits set, e.g. 203.0.113.0/24 or 0.0.0.0/0."
  }
}

variable "api_keys_enabled" {
  description = "Require an API key for writes and job endpoints (Authorization: Bearer <key>): creates a Secrets Manager secret of accepted keys' name:sha256 entries, read by the API every API_KEYS_REFRESH_S (rotation without a restart, ops/README.md), and an initial key in a second secret for the operator. false: no keys, the course contract."
  type        = bool
  default     = false
}

variable "cors_allow_origins" {
  description = "CORS_ALLOW_ORIGINS: origins (scheme://host[:port]) whose web pages may call the API from a browser. []: none (the API's own page needs none)."
  type        = list(string)
  default     = []

  validation {
    # The same rule as models/settings.py AccessSettings (an origin, no path).
    condition     = alltrue([for o in var.cors_allow_origins : can(regex("^https?://[^/\\s,]+/?$", o))])
    error_message = "Every cors_allow_origins entry must be an origin: http(s)://host[:port], no path."
  }
}

variable "jobs_queued_per_worker_thread" {
  description = "Backpressure: the API answers new jobs 503 (Retry-After) once the unfinished jobs reach worker_max_count x worker processes x worker_threads x this (JOBS_MAX_UNFINISHED), i.e. about this many jobs waiting for each worker thread at full scale. 20 with the other defaults gives 960, near the code's own default of 1000; it must leave each worker task more than backlog_per_worker_target jobs, or autoscaling could never reach its ceiling."
  type        = number
  default     = 20

  validation {
    condition     = var.jobs_queued_per_worker_thread >= 1 && floor(var.jobs_queued_per_worker_thread) == var.jobs_queued_per_worker_thread
    error_message = "jobs_queued_per_worker_thread must be a whole number, at least 1."
  }
}

variable "api_limits" {
  description = "Other limits of the API task, by environment variable name, e.g. { RATE_LIMIT_WRITES_PER_MINUTE = 600 }: TODOS_MAX, CALENDAR_MAX_EVENTS, JOBS_MAX_UNFINISHED_PER_CLIENT, BACKLOG_RETRY_AFTER_S, RATE_LIMIT_READS_PER_MINUTE, RATE_LIMIT_WRITES_PER_MINUTE (0: no rate limit). Unset ones keep the code's defaults (README, configuration)."
  type        = map(number)
  default     = {}

  validation {
    condition = alltrue([for name in keys(var.api_limits) : contains([
      "TODOS_MAX", "CALENDAR_MAX_EVENTS", "JOBS_MAX_UNFINISHED_PER_CLIENT", "BACKLOG_RETRY_AFTER_S",
      "RATE_LIMIT_READS_PER_MINUTE", "RATE_LIMIT_WRITES_PER_MINUTE",
    ], name)])
    error_message = "api_limits takes TODOS_MAX, CALENDAR_MAX_EVENTS, JOBS_MAX_UNFINISHED_PER_CLIENT, BACKLOG_RETRY_AFTER_S, RATE_LIMIT_READS_PER_MINUTE and RATE_LIMIT_WRITES_PER_MINUTE (JOBS_MAX_UNFINISHED comes from jobs_queued_per_worker_thread)."
  }

  validation {
    condition     = alltrue([for value in values(var.api_limits) : value >= 0 && floor(value) == value])
    error_message = "api_limits values must be whole numbers, 0 or more (the code refuses 0 for all but the rate limits)."
  }
}
