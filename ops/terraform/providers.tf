provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

# Who applies this (key policies name the account).
data "aws_caller_identity" "current" {}
