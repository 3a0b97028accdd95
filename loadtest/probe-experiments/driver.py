"""driver.py KIND PER_SECOND SECONDS [ROWS]: one kind of the archiver's work at a fixed rate.

read: COPY (SELECT ... row_to_json ...) of ROWS rows TO /dev/null (the server does the work, the
client nothing); delete: DELETE of ROWS consecutive keys; record: one 10,000-key JSON text.
"""
import os, random, subprocess, sys, time

kind, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
env = dict(os.environ, PGHOST=os.environ.get("PGHOST", "127.0.0.1"), PGUSER=os.environ.get("PGUSER", "postgres"))
psql = subprocess.Popen(["psql", "-q", "-d", "exp_probe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
end, i = time.time() + seconds, 0
while time.time() < end:
    started = time.time()
    if kind == "read":
        lo = random.randint(1, 400000)
        q = (f"COPY (SELECT id::text, created_at::text, xmin::text, row_to_json(a)::text FROM audit a "
             f"WHERE id > {lo} ORDER BY a.id LIMIT {rows}) TO '/dev/null';")
    elif kind == "delete":
        lo = 1 + i * rows
        q = f"DELETE FROM audit WHERE id >= {lo} AND id < {lo + rows};"
    else:
        q = "INSERT INTO rec (pks) SELECT json_agg(g::text)::text FROM generate_series(1, 10000) g;"
    i += 1
    psql.stdin.write(q + "\n")
    psql.stdin.flush()
    time.sleep(max(0.0, 1 / rate - (time.time() - started)))
psql.stdin.close()
psql.wait()
