#!/usr/bin/python3
# Simulated daemon for the services scenarios: grows its own PSS (/proc/self/smaps_rollup) to the requested size in
# MiB, so the simulated size IS what a PSS-based attribution should report (interpreter overhead included), then
# writes its PSS to /run/es-sim/<name>.ready and sleeps. Usage: es_hog.py NAME SIZE_MIB
import os
import sys
import time


def pss_kb() -> int:
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise SystemExit("no Pss in smaps_rollup")


name, target_kb = sys.argv[1], int(float(sys.argv[2]) * 1024)
chunks = []
while True:
    missing = target_kb - pss_kb()
    if missing <= 8:
        break
    chunk = bytearray(missing * 1024 - 4096 if missing > 8 else 4096)
    for offset in range(0, len(chunk), 4096):  # touch every page: calloc'd pages are not resident until written
        chunk[offset] = 1
    chunks.append(chunk)
os.makedirs("/run/es-sim", exist_ok=True)
with open(f"/run/es-sim/{name}.ready", "w") as handle:
    handle.write(f"{pss_kb()}\n")
while True:
    time.sleep(3600)
