"""stats.py NAME...: p95, p99 and the typical p99 (median of 5-second windows' p99s) of each run."""
import glob, statistics, sys


def quantile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


for name in sys.argv[1:]:
    rows = []
    for f in glob.glob(f"lat_{name}.*"):
        for line in open(f):
            p = line.split()  # client, transaction, latency (us), script, epoch s, epoch us
            rows.append((int(p[4]) + int(p[5]) / 1e6, int(p[2]) / 1000.0))
    if not rows:
        print(f"{name}: no log")
        continue
    rows.sort()
    windows = {}
    for t, ms in rows:
        windows.setdefault(int((t - rows[0][0]) // 5), []).append(ms)
    full = [quantile(v, 0.99) for v in windows.values() if len(v) >= 100]
    typical = statistics.median(full) if full else float("nan")
    all_ms = [ms for _, ms in rows]
    print(f"{name:16s} n={len(all_ms)} p95={quantile(all_ms, .95):.2f} p99={quantile(all_ms, .99):.2f} typical p99={typical:.2f} ms")
