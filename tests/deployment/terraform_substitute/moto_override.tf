# The Terraform check's account: every AWS API the configuration calls goes to a moto server
# on 127.0.0.1 (var.moto_endpoint, declared in this folder's versions.tf, since an override
# file cannot declare a variable), as moto's fixed account 123456789012. Terraform merges
# these arguments into ops/terraform's provider "aws" block, which keeps its region and
# default tags.

provider "aws" {
  access_key                  = "moto"
  secret_key                  = "moto"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true

  endpoints {
    applicationautoscaling = var.moto_endpoint
    cloudwatch             = var.moto_endpoint
    ec2                    = var.moto_endpoint
    ecr                    = var.moto_endpoint
    ecs                    = var.moto_endpoint
    elbv2                  = var.moto_endpoint
    iam                    = var.moto_endpoint
    kms                    = var.moto_endpoint
    logs                   = var.moto_endpoint
    rds                    = var.moto_endpoint
    secretsmanager         = var.moto_endpoint
    sns                    = var.moto_endpoint
    sqs                    = var.moto_endpoint
    sts                    = var.moto_endpoint
  }
}
