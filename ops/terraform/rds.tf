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
  # Refuse unencrypted connections (the tasks connect with sslmode=require).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

resource "aws_db_instance" "main" {
  #checkov:skip=CKV_AWS_157:Multi-AZ doubles the database cost; it is var.db_multi_az, on for production.
  #checkov:skip=CKV_AWS_118:Enhanced monitoring needs an IAM role the Learner Lab cannot create; Performance Insights is on.
  identifier     = var.name
  engine         = "postgres"
  engine_version = "16"
  instance_class = var.db_instance_class

  db_name  = local.db_name
  username = local.db_username
  # RDS generates the password and keeps it in Secrets Manager: it never passes through
  # Terraform state. Tasks receive it as DB_PASSWORD (models/settings.py).
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.main.key_id

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_allocated_storage * 5
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.main.arn

  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.main.name

  multi_az                            = var.db_multi_az
  backup_retention_period             = var.db_backup_retention_days
  copy_tags_to_snapshot               = true
  deletion_protection                 = var.db_deletion_protection
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-final"
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.main.arn
}
