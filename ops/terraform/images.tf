# --- The practical's build-and-push, with the docker provider (var.build_images) ------------
# Everything that needs the kreuzwerker/docker provider is in this file (its requirement is
# in versions.tf); the rest of the configuration reads only local.pushed_image_digests. The
# Terraform check (make terraform-check) swaps this file and versions.tf for its own, which
# push to an emulated ECR instead: the docker provider and a Docker engine are not there.

data "aws_ecr_authorization_token" "registry" {}

provider "docker" {
  registry_auth {
    address  = split("/", aws_ecr_repository.app["api"].repository_url)[0]
    username = data.aws_ecr_authorization_token.registry.user_name
    password = data.aws_ecr_authorization_token.registry.password
  }
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


locals {
  # kind -> digest of the image this apply pushed (empty without build_images).
  pushed_image_digests = { for kind, image in docker_registry_image.app : kind => image.sha256_digest }
}
