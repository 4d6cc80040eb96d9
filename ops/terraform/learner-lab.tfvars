# AWS Academy Learner Lab settings for TaskOverflow.
#
#   terraform apply -var-file=learner-lab.tfvars \
#     -var existing_task_role_arn=$(aws iam get-role --role-name LabRole --query Role.Arn --output text) \
#     -var image_tag=$(git rev-parse --short HEAD)
#
# Sources, cited below by tag:
#   [LL]    the Learner Lab README, "Service usage and other restrictions" (Vocareum, pt-br edition updated
#           24/06/2025): https://labs.vocareum.com/web/4789711/5275926.0/ASNLIB/public/docs/lang/pt-br/README.html
#           (needs a lab login; public copy of the English text:
#           https://github.com/Ywintersss/aws-demo-app/blob/8f0de8ea15658d523778ebdef13fd54f466bbe7a/servicerestrictions.md)
#   [LL-old] an older "Learner Lab - Foundational Level" README, same sections, stricter RDS rules
#           (seen in public repository content; no public URL found)
#   [15SOAT] a Learner Lab deployment that probed the account: https://github.com/15SOAT-JVGG/tech-challenge-fase-1/issues/28
#           and https://github.com/15SOAT-JVGG/tech-challenge-fase-1/blob/main/infra/README.md
# Lines marked "budget" are not lab restrictions: they keep the lab budget alive ([LL], "Preserving your budget").
# The LabRole ARN holds the account ID, so it is passed with -var (above), not written here.

# --- Region and network -------------------------------------------------------------------

# [LL] "Region restriction": all service access is limited to us-east-1 and us-west-2.
region = "us-east-1"

environment = "learner-lab"

# The lab account has a default VPC without a NAT gateway (a NAT gateway is billed hourly; [LL] lists
# it among what eats the budget), so tasks use public IPs to reach ECR, SQS, Logs and Secrets Manager.
subnet_ids       = null # null = the default VPC's subnets; budget: pass 2 subnets (-var 'subnet_ids=["subnet-a","subnet-b"]'); every ALB AZ bills a public IPv4
assign_public_ip = true

# --- IAM ----------------------------------------------------------------------------------

# [LL] IAM: "You cannot create users or groups. You cannot create roles, except that you can create
# service-linked roles." [LL] ECS: "set LabRole as the task role and task execution role".
# Pass it on the command line (see the top); a value here would hard-code the account ID.
# existing_task_role_arn = "arn:aws:iam::<account-id>:role/LabRole"

# --- Images -------------------------------------------------------------------------------

# [LL] ECR: "The LabRole IAM role has read-only access to this service and as a console user you
# have write access": terraform runs with the "AWS Details" (console user) credentials, so it can
# push; the tasks (LabRole) only pull.
build_images = true

# --- Database -----------------------------------------------------------------------------

# [LL] RDS: "Supported instance types: nano, micro, small, and medium (choose Burstable classes)",
# "On-Demand DB instance class types only". [15SOAT]: db.t3.micro verified, larger than
# db.t3.medium refused. db.t4g.micro (the default) is micro too but was not seen verified.
db_instance_class = "db.t3.micro"

# [LL] RDS: "EBS volumes - size up to 100 GB". rds.tf sets max_allocated_storage = 5 x this,
# so 20 is the most that keeps storage autoscaling at or under 100 GB.
db_allocated_storage = 20

# [LL-old] RDS: "Multi-AZ deployments are not supported" (the current [LL] text no longer says
# so; budget either way: Multi-AZ doubles the instance cost).
db_multi_az = false

# [LL] RDS: "When a lab session ends, the lab environment may not stop an RDS instance ... if you
# leave it stopped for seven days, AWS will start it again": destroy at the end of the work, so
# deletion protection must be off (it guards the database and ALB; off, ECR repositories are
# deleted with their images and each destroy leaves a uniquely named final snapshot).
deletion_protection = false

# budget: the fewest days the validation allows.
db_backup_retention_days = 1

# [LL] RDS: "PIOPS storage types are not supported"; "Supported storage types: ... General Purpose
# SSD (gp2)"; [15SOAT] ran gp3 in a lab (Postgres 16, db.t3.micro). gp2 is what the lab documents.
db_storage_type = "gp2"

# [LL] RDS: "Enhanced monitoring is not supported": rds.tf never sets monitoring_interval (0 = off). Nothing to set.

# Not documented either way in [LL] (unsure): keep the defaults unless apply fails on them.
# db_performance_insights_enabled  = false # needs variable db_performance_insights_enabled (rds.tf hard-codes true)
# db_manage_master_user_password   = false # needs variable db_manage_master_user_password (rds.tf hard-codes true)
# db_iam_database_authentication   = false # needs variable db_iam_database_authentication (rds.tf hard-codes true)

# budget: every destroy keeps a final snapshot (billed storage); delete old ones by hand, or:
# db_skip_final_snapshot = true # needs variable db_skip_final_snapshot (rds.tf hard-codes skip_final_snapshot = false)

# --- Encryption and monitoring ------------------------------------------------------------

# [LL] KMS is listed ("This service can assume the LabRole IAM role") but nothing says whether the
# lab may create keys and key policies (kms:CreateKey, logs:AssociateKmsKey), or whether LabRole
# may kms:Decrypt a customer key (the tasks need it to read the RDS-managed secret). No customer
# key then: ECR's AES-256, aws/secretsmanager, CloudWatch Logs' own encryption, aws/rds for the
# database (always), and an unencrypted alarm topic.
create_kms_key = false

# [LL] lists Amazon CloudWatch with no restriction; Container Insights is billed per metric (budget).
# The worker autoscaling reads ECS/ContainerInsights RunningTaskCount, so keep it on unless replaced.
# enable_container_insights = false # needs variable enable_container_insights (ecs.tf hard-codes "enabled")

# budget: CloudWatch Logs storage.
log_retention_days = 7

# [LL] lists SNS ("can assume the LabRole") but not whether email subscriptions get out; unsure.
# alarm_email = "you@example.com"

# [LL] Route 53: "You cannot register a domain", so there is no certificate for HTTPS.
certificate_arn = null

# --- Who may call the API -----------------------------------------------------------------

# The course's clients (the practical's tests, the web page) send no API key: keep keys off.
# On, the API's keys live in Secrets Manager, which LabRole already reads for the database
# password; nothing in [LL] limits Secrets Manager.
api_keys_enabled = false

# Anyone may reach the load balancer (the default). To keep a lab deployment to yourself,
# narrow it to your address: -var 'allowed_cidrs=["203.0.113.7/32"]' (curl -s https://checkip.amazonaws.com).
# allowed_cidrs = ["0.0.0.0/0"]

# --- Task counts and sizes (budget) -------------------------------------------------------

# [LL] lists AWS Fargate with no task-count or vCPU limit, but warns "Any attempt to exceed a service
# limit, may result in immediate deactivation of the AWS account". Keep counts small.
api_desired_count = 1
api_cpu           = 256
api_memory        = 512
worker_min_count  = 1
worker_max_count  = 3
worker_cpu        = 512
worker_memory     = 1024
