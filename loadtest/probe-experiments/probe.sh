#!/usr/bin/env bash
# probe.sh NAME SECONDS: RATE (default 100) single-row inserts a second, each timed (lat_NAME*).
set -euo pipefail
export PGHOST="${PGHOST:-127.0.0.1}" PGUSER="${PGUSER:-postgres}"
rm -f "lat_$1".*
echo "INSERT INTO audit (created_at, user_id, action, table_name, record_id, new_values) VALUES (now(), 1, 'PROBE', 'probes', 1, '{\"probe\": true}');" > probe.sql
pgbench -n -f probe.sql -R "${RATE:-100}" -T "$2" -c 1 -l --log-prefix="lat_$1" exp_probe >/dev/null 2>&1
