# Stands in for ops/terraform/versions.tf in the Terraform check: the same Terraform and AWS
# provider constraints (tests/deployment/test_terraform_real.py compares them), without the
# docker provider, which is neither in the offline mirror nor usable without a Docker engine.
terraform {
  # 1.11: ephemeral values and write-only arguments (api_keys.tf keeps the first API key
  # out of the state).
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }
}



variable "moto_endpoint" {
  description = "URL of the moto server the provider calls (moto_override.tf), e.g. http://127.0.0.1:5000."
  type        = string
}
