# --- ECR: one repository per image, immutable tags, scanned on push ------------------------

resource "aws_ecr_repository" "app" {
  for_each = toset(["api", "worker"])

  name                 = "${var.name}-${each.key}"
  image_tag_mutability = "IMMUTABLE"
  # Unprotected (deletion_protection = false, as before a destroy), a repository is deleted
  # with its images; protected, it refuses while it holds any.
  force_delete = !var.deletion_protection

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }
}

resource "aws_ecr_lifecycle_policy" "app" {
  for_each   = aws_ecr_repository.app
  repository = each.value.name

  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 20 most recent images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 20
      }
      action = { type = "expire" }
    }]
  })
}

# The practical's build-and-push: both images from this checkout, tagged var.image_tag.
resource "docker_image" "app" {
  for_each = var.build_images ? aws_ecr_repository.app : {}

  name = "${each.value.repository_url}:${var.image_tag}"
  build {
    context    = "${path.module}/../.."
    dockerfile = "Dockerfile.${each.key}"
    platform   = "linux/amd64"
  }
}

resource "docker_registry_image" "app" {
  for_each = docker_image.app

  name          = each.value.name
  keep_remotely = true
}

# Without build_images the images are pushed by hand (ops/README.md): look up the digest of
# image_tag in each repository, so a plan fails unless it is there.
data "aws_ecr_image" "app" {
  for_each = var.build_images ? {} : aws_ecr_repository.app

  repository_name = each.value.name
  image_tag       = var.image_tag
}

resource "aws_kms_key" "main" {
  description             = "${var.name}: ECR images, SQS messages, logs and secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 14
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:A key policy's "*" resource means this key only; the account root must administer it (AWS's default key policy).
  #checkov:skip=CKV_AWS_356:Same: in a key policy, resource "*" is the key itself.
  #checkov:skip=CKV_AWS_109:Same: the account-root statement keeps the key manageable (without it the key can become unmanageable).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  # Alarms publish to the SNS topic encrypted with this key: CloudWatch must be able to use
  # it, or every alarm notification is dropped (the key policy AWS documents for alarms on
  # encrypted topics).
  statement {
    sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
  }
}
