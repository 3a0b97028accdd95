#!/usr/bin/env bash
# setup.sh ROWS: (re)creates database exp_probe with an audit table of ROWS rows 100 days old.
set -euo pipefail
export PGHOST="${PGHOST:-127.0.0.1}" PGUSER="${PGUSER:-postgres}"
rows="${1:-500000}"
psql -q -c "DROP DATABASE IF EXISTS exp_probe" -c "CREATE DATABASE exp_probe"
psql -q -d exp_probe <<SQL
CREATE TABLE audit (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, user_id int, action text,
                    table_name text, record_id bigint, new_values jsonb);
CREATE INDEX ON audit (created_at);
INSERT INTO audit (created_at, user_id, action, table_name, record_id, new_values)
SELECT now() - interval '100 days' + (g || ' seconds')::interval, g % 1000, 'UPDATE', 'users', g,
       jsonb_build_object('name', repeat('x', 200), 'n', g)
FROM generate_series(1, $rows) g;
CREATE TABLE rec (id serial, pks text);
VACUUM ANALYZE audit;
CHECKPOINT;
SQL
