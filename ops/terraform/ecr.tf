# --- ECR: one repository per image, immutable tags, scanned on push ------------------------

resource "aws_ecr_repository" "app" {
  for_each = local.image_kinds

  name                 = "${var.name}-${each.key}"
  image_tag_mutability = "IMMUTABLE"
  # Unprotected (deletion_protection = false, as before a destroy), a repository is deleted
  # with its images; protected, it refuses while it holds any.
  force_delete = !var.deletion_protection

  image_scanning_configuration {
    scan_on_push = true
  }

  # With create_kms_key: the customer key; without: ECR's own AES-256 encryption.
  encryption_configuration {
    encryption_type = local.kms_key_arn == null ? "AES256" : "KMS"
    kms_key         = local.kms_key_arn
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

# Without build_images the images are pushed by hand before the apply (ops/README.md: the
# repositories first, with -target, then the push). The digest of image_tag is looked up by
# the repositories' names, not through the resources: the lookup then happens at plan time,
# and a plan whose images are not pushed yet fails there, before anything is created, instead
# of midway through an apply that has just created empty repositories.
data "aws_ecr_image" "app" {
  for_each = var.build_images ? toset([]) : local.image_kinds

  repository_name = "${var.name}-${each.key}"
  image_tag       = var.image_tag
}

# One customer-managed key (var.create_kms_key) for the images, logs, alarm topic and secrets.
# The database is not among them: its storage, and so its final snapshot, use the AWS-managed
# aws/rds key (rds.tf), which is never scheduled for deletion, so the snapshot a destroy keeps
# stays restorable after this key is gone. What else the key encrypts goes with the destroy:
# secrets are recoverable for 7 days (api_keys.tf), within this key's 14-day window.
resource "aws_kms_key" "main" {
  count                   = var.create_kms_key ? 1 : 0
  description             = "${var.name}: ECR images, logs, alarm topic and secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 14
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  count         = var.create_kms_key ? 1 : 0
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main[0].key_id
}

locals {
  # null without create_kms_key: each user then falls back to its service's own encryption.
  kms_key_arn = one(aws_kms_key.main[*].arn)
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
  # Only on behalf of this account's alarms (a service principal serves every account).
  statement {
    sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }

  # Only for this account's log groups in this region (the encryption context CloudWatch Logs
  # sends names the log group).
  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
}
