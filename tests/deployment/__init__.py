"""Deployment checks: Terraform, the ECS task definitions run under podman, compose."""
