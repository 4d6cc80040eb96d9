# --- RDS Postgres: private, encrypted, backed up; password kept by RDS in Secrets Manager ---

resource "aws_db_subnet_group" "main" {
  name       = var.name
  subnet_ids = local.subnet_ids
}

resource "aws_db_parameter_group" "main" {
  name   = "${var.name}-pg16"
  family = "postgres16"

  # Slow statements and connections in the logs (exported to CloudWatch below).
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  # Refuse unencrypted connections (the tasks connect with sslmode=require; the API turns it
  # into asyncpg's ssl argument, api/database.py).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

resource "aws_db_instance" "main" {
  #checkov:skip=CKV_AWS_157:Multi-AZ doubles the database cost; it is var.db_multi_az, on for production.
  #checkov:skip=CKV_AWS_354:Performance Insights, like the storage and its snapshots, uses aws/rds: the final snapshot a destroy keeps must not depend on the customer key the destroy deletes.
  #checkov:skip=CKV_AWS_118:Enhanced monitoring needs an IAM role the Learner Lab cannot create; Performance Insights is on.
  identifier     = var.name
  engine         = "postgres"
  engine_version = "16"
  instance_class = var.db_instance_class

  db_name  = local.db_name
  username = local.db_username
  # RDS generates the password, keeps it in Secrets Manager and rotates it: it never passes
  # through Terraform state. Tasks get the secret's ARN (DB_PASSWORD_SECRET_ARN) and read the
  # password themselves, again whenever the database refuses it (models/credentials.py), so a
  # rotation needs no restart.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = local.kms_key_arn # null: aws/secretsmanager

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_allocated_storage * 5
  storage_type          = var.db_storage_type
  # Encrypted with the AWS-managed aws/rds key (kms_key_id unset), never the customer key:
  # the final snapshot a destroy keeps must outlive that key (ecr.tf, aws_kms_key.main).
  storage_encrypted = true

  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.main.name

  multi_az                = var.db_multi_az
  backup_retention_period = var.db_backup_retention_days
  copy_tags_to_snapshot   = true
  deletion_protection     = var.deletion_protection
  skip_final_snapshot     = false
  # Unique per database: a fixed name would make the next create/destroy cycle fail on the
  # snapshot the last one left. Fixed at creation (ignore_changes below).
  final_snapshot_identifier           = "${var.name}-final-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = keys(aws_cloudwatch_log_group.rds)
  performance_insights_enabled        = true

  lifecycle {
    ignore_changes = [final_snapshot_identifier]
  }

  # RDS creates the export's log groups itself unless they exist: then they would keep logs
  # forever, unencrypted, and outlive a destroy.
  depends_on = [aws_cloudwatch_log_group.rds]
}

# The groups RDS exports the database's logs to (slow statements, connections, DDL, upgrades),
# under the names RDS uses, with this stack's retention and key.
resource "aws_cloudwatch_log_group" "rds" {
  for_each = toset(["postgresql", "upgrade"])

  name              = "/aws/rds/instance/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}

# --- Connection budget: every task at full scale must get its database connections --------
locals {
  # RDS sets PostgreSQL's max_connections to DBInstanceClassMemory / 9531392 (at most 5000).
  # DBInstanceClassMemory is the class's memory less what RDS keeps for itself; taking about
  # 300 MiB off gives these (check with SHOW max_connections on your instance).
  db_memory_gib = {
    "db.t3.micro"  = 1, "db.t4g.micro" = 1,
    "db.t3.small"  = 2, "db.t4g.small" = 2,
    "db.t3.medium" = 4, "db.t4g.medium" = 4,
    "db.t3.large"  = 8, "db.t4g.large" = 8, "db.m5.large" = 8, "db.m6g.large" = 8, "db.m7g.large" = 8,
    "db.r6g.large" = 16, "db.r7g.large" = 16, "db.m6g.xlarge" = 16, "db.m7g.xlarge" = 16,
  }
  # A class missing from the table counts as 0: the plan then stops at the worker service's
  # precondition, asking for its memory here.
  db_max_connections = max(0, min(5000, floor((lookup(local.db_memory_gib, var.db_instance_class, 0) * 1024 - 300) * 1048576 / 9531392)))

  # Per process, from the code: the API's pool is DB_POOL_SIZE with no overflow
  # (api/database.py), plus the one connection its job events LISTEN on (api/job_events.py);
  # a worker process holds DRAMATIQ_THREADS + 1 (its reconciler) connections
  # (models/engine.py worker_pool_size). One more for a migration task.
  #
  # During a rollout ECS runs up to desired x deployment_maximum_percent / 100 tasks (rounded
  # down): the API's surge of one task (ecs.tf) is counted; the workers never surge.
  api_tasks_in_rollout = floor(var.api_desired_count * local.api_deployment_maximum_percent / 100)
  db_connections = {
    needed = (
      local.api_tasks_in_rollout * (var.api_db_pool_size + 1)
      + var.worker_max_count * local.worker_processes * (var.worker_threads + 1)
      + 1
    )
    # RDS keeps 3 slots for superusers (superuser_reserved_connections); the rest of the
    # reserve is for people and tools.
    available = local.db_max_connections - 3 - var.db_connection_reserve
  }
}
