#!/usr/bin/env bash
# Makes (once) and starts a streaming replica of the local PostgreSQL for the tests: a cluster of
# its own under /var/lib/postgresql/archiver-replica-$PORT, made by `pg_basebackup -R`, listening
# on 127.0.0.1:$PORT (default 5433). Idempotent: a replica already running and streaming is left
# as it is; one that runs or starts but cannot stream (stopped for a while, it fell behind the WAL the
# primary keeps) is made anew.
# The primary is PGHOST:PGPORT (default 127.0.0.1:5432) with trust authentication; a line
# allowing replication connections from 127.0.0.1 is added to its pg_hba.conf if missing.
set -euo pipefail
PORT="${ARCHIVER_REPLICA_PORT:-5433}"
PRIMARY_HOST="${PGHOST:-127.0.0.1}"
PRIMARY_PORT="${PGPORT:-5432}"
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
DIR="/var/lib/postgresql/archiver-replica-$PORT"
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
q() { psql -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U postgres -Atqc "$1" postgres; }

standby() { psql -h 127.0.0.1 -p "$PORT" -U postgres -Atqc "$1" postgres 2>/dev/null | grep -qx "$2"; }
streaming() { standby "SELECT status FROM pg_stat_wal_receiver" streaming; }

if standby "SELECT pg_is_in_recovery()" t && streaming; then
  exit 0
fi

hba="$(q 'SHOW hba_file')"
if ! grep -Eq '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32' "$hba"; then
  echo "host replication all 127.0.0.1/32 trust" >> "$hba"
  q 'SELECT pg_reload_conf()' >/dev/null
fi

# A clone of the primary in $DIR, configured as a hot standby on $PORT.
make_replica() {
  rm -rf "$DIR"
  as_pg "'$BIN/pg_basebackup' -h '$PRIMARY_HOST' -p '$PRIMARY_PORT' -U postgres -D '$DIR' -R -X stream -c fast"
  cat > "$DIR/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '/tmp'
hot_standby = on
hba_file = '$DIR/pg_hba.conf'
ident_file = '$DIR/pg_ident.conf'
max_connections = 100
CONF
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' > "$DIR/pg_hba.conf"
  : > "$DIR/pg_ident.conf"
  chown postgres:postgres "$DIR/postgresql.conf" "$DIR/pg_hba.conf" "$DIR/pg_ident.conf" 2>/dev/null || true
}

# Starts the replica and waits up to $1 seconds for it to stream.
start_streaming() {
  as_pg "'$BIN/pg_ctl' -D '$DIR' -l '$DIR/replica.log' -w -t 60 start" >/dev/null
  for _ in $(seq 1 "$1"); do
    if standby "SELECT pg_is_in_recovery()" t && streaming; then return 0; fi
    sleep 1
  done
  return 1
}

stop_replica() { as_pg "'$BIN/pg_ctl' -D '$DIR' -m fast -w stop" >/dev/null 2>&1 || true; }

if standby "SELECT pg_is_in_recovery()" t; then
  for _ in $(seq 1 15); do
    if streaming; then exit 0; fi
    sleep 1
  done
  stop_replica
  echo "the replica on port $PORT runs but does not stream; making it anew" >&2
  make_replica
elif [ ! -f "$DIR/PG_VERSION" ]; then
  make_replica
fi

if start_streaming 30; then exit 0; fi
# It started but cannot stream: stopped for a while, it fell behind the WAL the primary keeps.
stop_replica
echo "the replica on port $PORT started but does not stream; making it anew" >&2
make_replica
if start_streaming 60; then exit 0; fi
echo "the replica on port $PORT did not come up streaming; see $DIR/replica.log" >&2
exit 1
