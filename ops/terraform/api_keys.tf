# --- API keys (var.api_keys_enabled): accepted keys' hashes for the API, a first key -------
# The API reads the accepted keys from a secret holding name:sha256hex entries (hashes only;
# models/settings.py parse_api_key_hashes), at start and every API_KEYS_REFRESH_S, so keys
# are added and removed without a restart (ops/README.md, "API keys").
#
# Terraform writes both secrets once: the first key comes from Secrets Manager's own
# generator (no random provider here), which is read again at every plan, so later plans
# ignore the secrets' contents; from then on operators own them (rotation edits the
# entries, and Terraform must not put the first key back).

data "aws_secretsmanager_random_password" "initial_api_key" {
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
  kms_key_id  = aws_kms_key.main.arn
  # A destroyed secret can be restored for a week; name_prefix lets a new apply create its
  # secret meanwhile (a fixed name is taken until the deletion completes).
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "api_keys" {
  count     = var.api_keys_enabled ? 1 : 0
  secret_id = aws_secretsmanager_secret.api_keys[0].id
  # From the stored first key, not the generator: the two always agree, even when an apply
  # stopped between them and the next one completes this.
  secret_string = "initial:${sha256(aws_secretsmanager_secret_version.initial_api_key[0].secret_string)}"

  lifecycle {
    # Written once (see the top): the generator gives another key at every plan, and the
    # entries belong to the operators after the first apply.
    ignore_changes = [secret_string, version_stages]
  }
}

# The first key itself, for the operator to hand to the first client. The API cannot read
# it (its role may read only the hashes above). A secret rather than a sensitive output:
# reading it needs IAM permission and is logged in CloudTrail, and deleting it (or
# retiring the "initial" entry) ends its life. Like every value Terraform writes, it is also
# in the Terraform state: keep the state private, and retire this key once clients have
# keys of their own.
resource "aws_secretsmanager_secret" "initial_api_key" {
  #checkov:skip=CKV2_AWS_57:A copy of a key handed to clients: it is retired by removing its entry from the api_keys secret, not rotated by a Lambda.
  count                   = var.api_keys_enabled ? 1 : 0
  name_prefix             = "${var.name}-initial-api-key-"
  description             = "TaskOverflow API: the first API key (plaintext; its hash is the api_keys secret's initial entry)"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "initial_api_key" {
  count         = var.api_keys_enabled ? 1 : 0
  secret_id     = aws_secretsmanager_secret.initial_api_key[0].id
  secret_string = data.aws_secretsmanager_random_password.initial_api_key[0].random_password

  lifecycle {
    ignore_changes = [secret_string, version_stages]
  }
}
