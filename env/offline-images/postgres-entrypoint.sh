#!/bin/sh
# Offline stand-in for the official postgres image's entrypoint contract:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, data in
# /var/lib/postgresql/data (or $PGDATA), password auth from other hosts, and
# a command (`postgres -c name=value ...`, or just `-c ...`) passed to the server,
# and /docker-entrypoint-initdb.d/*.sql run once into POSTGRES_DB on first init.
set -eu
case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ $# -gt 0 ] && [ "$1" != postgres ]; then exec "$@"; fi
[ $# -gt 0 ] && shift
PGBIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp); printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"; chown postgres "$pwfile"
  su postgres -s /bin/sh -c "$PGBIN/initdb -D '$PGDATA' -U '$POSTGRES_USER' --pwfile='$pwfile' --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null"
  rm -f "$pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "host all all ::/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != "postgres" ]; then
    su postgres -s /bin/sh -c "$PGBIN/postgres --single -D '$PGDATA' postgres" >/dev/null <<SQL
CREATE DATABASE "$POSTGRES_DB";
SQL
  fi
  if ls /docker-entrypoint-initdb.d/*.sql >/dev/null 2>&1; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    for f in /docker-entrypoint-initdb.d/*.sql; do
      echo "entrypoint: running $f"
      runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$f"
    done
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi
# exec, not `runuser` (which stays PID 1 as the server's parent, ignores the
# image's STOPSIGNAL SIGINT and so made every `docker stop` wait out its 10 s
# before SIGKILL): the server itself is PID 1 and shuts down fast on SIGINT,
# as under the official image's gosu.
exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$PGBIN/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
