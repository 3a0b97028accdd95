#!/usr/bin/env python3
"""How much a busy CPU slows work on another CPU of the same machine.

    python3 siblings.py [CPU_A CPU_B]      # default: 0 1

Times a fixed piece of CPU work pinned to CPU_A, first with CPU_B idle, then with a busy loop
pinned to CPU_B, and prints the ratio (best of five each). About 1.0 means the two CPUs do not
share a physical core; well above 1 (1.7 on the 2-vCPU build machine) means they do, or that the
host runs them on one: then any work on the machine, at any priority, slows everyone's queries
while it runs, and a gentle archiver can only do less of it.
"""
import multiprocessing
import os
import sys
import time


def work():
    started = time.perf_counter()
    x = 0
    for i in range(2_000_000):
        x += i * i
    return time.perf_counter() - started


def spin(cpu, seconds):
    os.sched_setaffinity(0, {cpu})
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main(a, b):
    os.sched_setaffinity(0, {a})
    alone = min(work() for _ in range(5))
    busy = multiprocessing.Process(target=spin, args=(b, 30))
    busy.start()
    time.sleep(0.5)
    try:
        beside = min(work() for _ in range(5))
    finally:
        busy.terminate()
        busy.join()
    print(f"CPU {a} alone: {alone * 1000:.1f} ms; with CPU {b} busy: {beside * 1000:.1f} ms; ratio {beside / alone:.2f}")


if __name__ == "__main__":
    cpus = [int(c) for c in sys.argv[1:3]] or [0, 1]
    main(*cpus)
