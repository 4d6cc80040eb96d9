terraform {
  # 1.11: ephemeral values and write-only arguments (api_keys.tf keeps the first API key
  # out of the state).
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    # The practical builds and pushes the images from Terraform with this provider.
    docker = {
      source  = "kreuzwerker/docker"
      version = "~> 3.0"
    }
  }
}
