#!/bin/sh
# Creates the cluster on first start: the master user and database from POSTGRES_USER /
# POSTGRES_PASSWORD / POSTGRES_DB, a self-signed server certificate, and a pg_hba.conf that
# rejects every connection over the network without TLS and wants SCRAM for the rest. The
# postgres OS user keeps peer access over the local socket (for the harness to rotate the
# password, as RDS does).
set -eu
PGBIN=/usr/lib/postgresql/15/bin
DATA=/var/lib/postgresql/data
if [ ! -s "$DATA/PG_VERSION" ]; then
  mkdir -p "$DATA" && chown postgres:postgres "$DATA" && chmod 700 "$DATA"
  su postgres -c "$PGBIN/initdb -D $DATA --auth-local=peer --auth-host=scram-sha-256 -U postgres" >/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=postgres" \
    -keyout "$DATA/server.key" -out "$DATA/server.crt" 2>/dev/null
  chown postgres:postgres "$DATA/server.key" "$DATA/server.crt" && chmod 600 "$DATA/server.key"
  cat >"$DATA/pg_hba.conf" <<HBA
local     all all                  peer
hostnossl all all 0.0.0.0/0        reject
hostnossl all all ::/0             reject
hostssl   all all 0.0.0.0/0        scram-sha-256
hostssl   all all ::/0             scram-sha-256
HBA
  su postgres -c "$PGBIN/pg_ctl -D $DATA -o '-c listen_addresses=' -w start" >/dev/null
  su postgres -c "$PGBIN/psql -h /var/run/postgresql -p 5432 -q -v ON_ERROR_STOP=1" <<SQL
SET password_encryption = 'scram-sha-256';
CREATE ROLE "$POSTGRES_USER" LOGIN PASSWORD '$POSTGRES_PASSWORD';
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
SQL
  su postgres -c "$PGBIN/pg_ctl -D $DATA -w stop" >/dev/null
fi
exec su postgres -c "exec $PGBIN/postgres -D $DATA -c listen_addresses='*' -c ssl=on \
  -c ssl_cert_file=$DATA/server.crt -c ssl_key_file=$DATA/server.key \
  -c password_encryption=scram-sha-256"
