"""Our own checkov checks (run with --external-checks-dir ops/checkov): what checkov lacks."""
