# Stands in for ops/terraform/images.tf (the docker provider's build-and-push) in the
# Terraform check: with build_images, each repository gets an image pushed through the ECR
# API of the emulated account (push_image.py), and its digest is read back the way the
# build_images=false path reads it. The rest of the configuration sees the same
# local.pushed_image_digests as in production.

variable "substitute_python" {
  description = "The Python (with boto3) that runs push_image.py."
  type        = string
}

variable "substitute_image_manifests" {
  description = "kind -> the image manifest (JSON) to push for it; kinds left out get a minimal one."
  type        = map(string)
  default     = {}
}

resource "terraform_data" "pushed_image" {
  for_each = var.build_images ? aws_ecr_repository.app : {}
  input    = { repository = each.value.name, tag = var.image_tag }

  provisioner "local-exec" {
    command = "${var.substitute_python} ${path.module}/push_image.py"
    environment = {
      REPOSITORY = each.value.name
      TAG        = var.image_tag
      MANIFEST   = lookup(var.substitute_image_manifests, each.key, "")
      REGION     = var.region
    }
  }
}

data "aws_ecr_image" "pushed" {
  for_each        = terraform_data.pushed_image
  repository_name = each.value.output.repository
  image_tag       = each.value.output.tag
}

locals {
  pushed_image_digests = { for kind, image in data.aws_ecr_image.pushed : kind => image.image_digest }
}
