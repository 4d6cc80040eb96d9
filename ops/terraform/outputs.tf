output "api_url" {
  description = "Base URL of the API and web page."
  value       = "${var.certificate_arn == null ? "http" : "https"}://${aws_lb.api.dns_name}"
}

output "ecr_repositories" {
  description = "Repository URLs of the api and worker images."
  value       = { for kind, repo in aws_ecr_repository.app : kind => repo.repository_url }
}

output "job_queue_url" {
  description = "The calendar job queue."
  value       = aws_sqs_queue.jobs.url
}

output "dead_letter_queue_url" {
  description = "Where failed and undecodable job messages end up."
  value       = aws_sqs_queue.jobs_dlq.url
}

output "demo_queue_urls" {
  description = "The practical's queue demo queues (standard and FIFO)."
  value       = { standard = aws_sqs_queue.demo.url, fifo = aws_sqs_queue.demo_fifo.url }
}

output "cluster_name" {
  description = "ECS cluster."
  value       = aws_ecs_cluster.main.name
}

output "migration" {
  description = "What ops/aws/run-migration.sh needs to run the migration task by hand: ops/aws/run-migration.sh \"$(terraform output -json migration)\"."
  value       = local.migration
}

output "database_secret_arn" {
  description = "Secrets Manager secret holding the database password (managed by RDS)."
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "log_groups" {
  description = "CloudWatch log groups of the api, worker and migrate containers."
  value       = { for kind, group in aws_cloudwatch_log_group.app : kind => group.name }
}

output "dashboard_url" {
  description = "The CloudWatch dashboard."
  value       = "https://${var.region}.console.aws.amazon.com/cloudwatch/home?region=${var.region}#dashboards:name=${aws_cloudwatch_dashboard.main.dashboard_name}"
}

output "api_keys_secret_arn" {
  description = "With api_keys_enabled: the secret of accepted API keys (name:sha256hex entries) the API reads every API_KEYS_REFRESH_S; add and remove entries here to rotate keys (ops/README.md, \"API keys\"). null otherwise."
  value       = one(aws_secretsmanager_secret.api_keys[*].arn)
}

output "initial_api_key_secret_arn" {
  description = "With api_keys_enabled: the secret holding the first API key in plaintext (entry \"initial\"): aws secretsmanager get-secret-value --secret-id <this> --query SecretString --output text. null otherwise."
  value       = one(aws_secretsmanager_secret.initial_api_key[*].arn)
}
