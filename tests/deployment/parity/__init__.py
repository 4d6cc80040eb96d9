"""`make aws-parity`: the ECS task definitions from ops/terraform, run under podman."""
