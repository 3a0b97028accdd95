"""hog.py BUSY_MS PERIOD_MS SECONDS: a busy loop BUSY_MS in every PERIOD_MS (run it under
`nice -n 19` or `chrt -i 0` to see that priority does not help)."""
import sys, time

busy, period = float(sys.argv[1]) / 1000, float(sys.argv[2]) / 1000
end = time.time() + float(sys.argv[3])
while time.time() < end:
    t = time.time()
    while time.time() - t < busy:
        pass
    time.sleep(max(0.0, period - busy))
