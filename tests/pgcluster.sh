#!/bin/bash
# The test PostgreSQL: a private cluster (initdb) in DIR, listening on 127.0.0.1:PORT only, its
# Unix socket in DIR too, with fsync off (tests only: speed, no durability wanted). Used by the
# store tests (src/store/postgres/testing.rs): one cluster per test binary run, one database
# per test. The superuser is `nurture`, trusted on loopback (-A trust: tests only).
# Usage:  [NURTURE_PG_DURABLE=1] tests/pgcluster.sh start DIR PORT [OWNER_PID]
#             NURTURE_PG_DURABLE=1 keeps PostgreSQL's durable defaults (fsync, synchronous
#             commit): for benchmarks, which compare with sled flushing to disk.
#             With OWNER_PID, a watcher stops the cluster once that process is gone, so a test
#             binary that ends (or is killed) never leaves a server behind.
#         tests/pgcluster.sh stop DIR     (fast shutdown: open transactions are rolled back)
# Needs the Debian package postgresql (tests/run installs it). initdb refuses to run as root:
# as root the server tools run as the `postgres` user. Nothing outside DIR is written.
set -eu
cmd=$1 D=$2

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  echo "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): tests/run installs the package postgresql" >&2
  exit 1
fi

# Runs a server tool as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
start)
  PORT=$3 OWNER=${4:-}
  mkdir -p "$D"
  [ "$(id -u)" = 0 ] && chown postgres "$D"
  as_owner "$PGBIN/initdb" -D "$D/db" -A trust -U nurture --no-sync >"$D/initdb.log" 2>&1 \
    || { cat "$D/initdb.log" >&2; exit 1; }
  fast="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ "${NURTURE_PG_DURABLE:-}" = 1 ] && fast=""
  as_owner "$PGBIN/pg_ctl" -D "$D/db" -l "$D/server.log" -w start \
    -o "-p $PORT -k $D -c listen_addresses=127.0.0.1 -c max_connections=200 $fast" \
    >"$D/start.log" 2>&1 || { cat "$D/start.log" "$D/server.log" >&2; exit 1; }
  if [ -n "$OWNER" ]; then
    # Detached from the caller's output, so a test harness waiting on it does not hang.
    setsid bash -c "while kill -0 $OWNER 2>/dev/null; do sleep 1; done; \
      $(declare -f as_owner); as_owner '$PGBIN/pg_ctl' -D '$D/db' -m immediate stop; rm -rf '$D'" \
      </dev/null >/dev/null 2>&1 &
  fi
  ;;
stop)
  as_owner "$PGBIN/pg_ctl" -D "$D/db" -m fast stop >/dev/null
  ;;
*)
  echo "usage: $0 start DIR PORT [OWNER_PID] | stop DIR" >&2
  exit 2
  ;;
esac
