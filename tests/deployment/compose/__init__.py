"""compose.yaml under podman-compose, on locally built stand-ins of its third-party images."""
