#!/bin/sh
# As the official redis image: `redis-server ...` (or bare flags) runs as the redis user with
# protected mode off (the official build turns that default off), listening on all addresses;
# arguments given after it (compose's `command`) override these defaults.
set -e
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
  if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
