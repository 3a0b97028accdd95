#!/usr/bin/env python3
"""Lays the archiver's spans beside the probes of one `db-impact --timeline` run.

    timeline.py OUT_DIR

OUT_DIR holds report.json (its figures `probes` and `probes_t0_unix`) and coordinator.log (the
archiver's JSON log at DEBUG, with a line for each span's close and its busy and idle time).

For each kind of span (a read page, a delete chunk, each stage of a batch, the governor's sample)
it prints how often a probe overlapped one: over all probes while archiving, and over the slow
ones (above the baseline's typical p99 of their kind). A kind the slow probes overlap much more
often than all probes do (lift well over 1) is what the tail waits on; slow probes that overlap
nothing point away from the archiver's database work.

Then, per kind of probe, how many were above 1.2x their baseline's typical p99 (the criterion's
line: more than 1 % of them lifts the p99 past it), and of the probes that overlapped a read page,
a delete chunk, an upload or a batch record, how many of those were.
"""
import bisect
import json
import re
import sys
from datetime import datetime
from pathlib import Path

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(text):
    m = re.fullmatch(r"([0-9.]+)\s*(ns|µs|us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def spans(log):
    """(kind, start, end) in Unix seconds, from the log's span-close lines."""
    out = []
    for line in log.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        f = e.get("fields", {})
        if f.get("message") != "close" or "span" not in e:
            continue
        s = e["span"]
        kind = s["name"] if s["name"] != "stage" else "stage " + s.get("otel.name", "?")
        end = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        out.append((kind, end - seconds(f["time.busy"]) - seconds(f["time.idle"]), end))
    return out


def merged(intervals):
    """The union of the intervals, sorted and disjoint."""
    out = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def overlaps(probe, union):
    """Whether the probe's (start, end) meets the disjoint sorted intervals `union`."""
    a, b = probe
    i = bisect.bisect_left(union, [a, a])
    return any(0 <= j < len(union) and union[j][0] < b and a < union[j][1] for j in (i - 1, i))


def main(out_dir):
    out_dir = Path(out_dir)
    fig = json.loads((out_dir / "report.json").read_text())["figures"]
    t0 = fig["probes_t0_unix"]
    by_kind = {}
    for kind, s, e in spans(out_dir / "coordinator.log"):
        by_kind.setdefault(kind, []).append((s, e))
    if not by_kind:
        sys.exit("no span closes in coordinator.log: was the run made with --timeline?")
    first = min(s for v in by_kind.values() for s, _ in v)
    last = max(e for v in by_kind.values() for _, e in v)
    threshold = {k: fig[f"{k}_typical_p99_ms_baseline"] for k in ("insert", "read")}
    probes = []
    for t, kind, ms in fig["probes"]:
        end = t0 + t
        if first <= end <= last:
            probes.append(((end - ms / 1000, end), ms > threshold[kind]))
    slow = [p for p, is_slow in probes if is_slow]
    print(f"{len(probes)} probes while archiving ({last - first:.1f} s), {len(slow)} above the baseline's typical p99")
    print(f"{'span':<22}{'count':>7}{'busy %':>8}{'all %':>8}{'slow %':>8}{'lift':>6}")
    work = merged([i for k, v in by_kind.items() if k not in ("archive_item", "batch") for i in v])
    none = [p for p in slow if not overlaps(p, work)]
    for kind, raw in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        intervals = merged(raw)
        covered = sum(e - s for s, e in intervals) / (last - first) * 100
        on_all = sum(overlaps(p, intervals) for p, _ in probes) / max(len(probes), 1) * 100
        on_slow = sum(overlaps(p, intervals) for p in slow) / max(len(slow), 1) * 100
        lift = on_slow / on_all if on_all else float("nan")
        print(f"{kind:<22}{len(raw):>7}{covered:>8.1f}{on_all:>8.1f}{on_slow:>8.1f}{lift:>6.2f}")
    print(f"slow probes overlapping no page, chunk, stage or sample: {len(none)} of {len(slow)}")
    print()
    judged(fig, t0, by_kind, first, last)


def judged(fig, t0, by_kind, first, last):
    """Per kind of probe: the share above 1.2x its baseline's typical p99 (the criterion's line),
    and of the probes that overlapped each kind of span, how many were above it."""
    kinds = ("page", "delete_chunk", "stage upload", "stage checkpoint")
    unions = {k: merged(by_kind.get(k, [])) for k in kinds}
    for probe in ("insert", "read"):
        line = fig[f"{probe}_typical_p99_ms_baseline"] * 1.2
        probes = [((t0 + t - ms / 1000, t0 + t), ms > line) for t, k, ms in fig["probes"] if k == probe and first <= t0 + t <= last]
        over = [p for p, is_over in probes if is_over]
        text = f"{probe}: {len(over)} of {len(probes)} above 1.2x ({len(over) / max(len(probes), 1) * 100:.2f} %)"
        for k in kinds:
            met = sum(overlaps(p, unions[k]) for p, _ in probes)
            text += f"; {k} {sum(overlaps(p, unions[k]) for p in over)} of {met}"
        print(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
