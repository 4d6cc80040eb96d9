# --- API keys (var.api_keys_enabled): accepted keys' hashes for the API, a first key -------
# The API reads the accepted keys from a secret holding name:sha256hex entries (hashes only;
# models/settings.py parse_api_key_hashes), at start and every API_KEYS_REFRESH_S, so keys
# are added and removed without a restart (ops/README.md, "API keys").
#
# Terraform writes both secrets once, through write-only arguments: the first key comes from
# Secrets Manager's own generator as an ephemeral value (no random provider here), so neither
# the key nor its hash is ever stored in the Terraform state or a plan file. From then on
# operators own the secrets (rotation edits the entries; Terraform never writes them again
# unless secret_string_wo_version changes).

ephemeral "aws_secretsmanager_random_password" "initial_api_key" {
  count = var.api_keys_enabled ? 1 : 0
  # Letters and digits: valid in a Bearer token and in a shell without quoting (~285 bits).
  password_length     = 48
  exclude_punctuation = true
  include_space       = false
}

# What the API accepts: "initial:<sha256 hex of the first key>", then whatever the operators
# add (python -m api.keys new NAME prints a key and its entry).
resource "aws_secretsmanager_secret" "api_keys" {
  #checkov:skip=CKV2_AWS_57:Keys are handed to clients, so no Lambda can rotate them; operators rotate by editing the entries (ops/README.md, "API keys"), which the API picks up without a restart.
  count       = var.api_keys_enabled ? 1 : 0
  name_prefix = "${var.name}-api-keys-"
  description = "TaskOverflow API: accepted API keys as name:sha256hex entries (hashes only), read by the API every API_KEYS_REFRESH_S"
  kms_key_id  = local.kms_key_arn # null: aws/secretsmanager
  # A destroyed secret can be restored for a week; name_prefix lets a new apply create its
  # secret meanwhile (a fixed name is taken until the deletion completes).
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "api_keys" {
  count     = var.api_keys_enabled ? 1 : 0
  secret_id = aws_secretsmanager_secret.api_keys[0].id
  # The same ephemeral key as the plaintext copy below (one generator call per apply). An
  # apply that stops between the two writes leaves them disagreeing: put a new entry in
  # (python -m api.keys new NAME), as for any rotation.
  secret_string_wo         = "initial:${sha256(ephemeral.aws_secretsmanager_random_password.initial_api_key[0].random_password)}"
  secret_string_wo_version = 1

  lifecycle {
    # The entries belong to the operators after the first apply.
    ignore_changes = [version_stages]
  }
}

# The first key itself, for the operator to hand to the first client. The API cannot read
# it (its role may read only the hashes above). A secret rather than a sensitive output:
# reading it needs IAM permission and is logged in CloudTrail, and deleting it (or
# retiring the "initial" entry) ends its life. Written write-only: it is not in the state.
resource "aws_secretsmanager_secret" "initial_api_key" {
  #checkov:skip=CKV2_AWS_57:A copy of a key handed to clients: it is retired by removing its entry from the api_keys secret, not rotated by a Lambda.
  count                   = var.api_keys_enabled ? 1 : 0
  name_prefix             = "${var.name}-initial-api-key-"
  description             = "TaskOverflow API: the first API key (plaintext; its hash is the api_keys secret's initial entry)"
  kms_key_id              = local.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "initial_api_key" {
  count                    = var.api_keys_enabled ? 1 : 0
  secret_id                = aws_secretsmanager_secret.initial_api_key[0].id
  secret_string_wo         = ephemeral.aws_secretsmanager_random_password.initial_api_key[0].random_password
  secret_string_wo_version = 1

  lifecycle {
    ignore_changes = [version_stages]
  }
}
