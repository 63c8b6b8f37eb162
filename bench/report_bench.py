"""Benchmark: build and render the fleet report for synthetic fleets (prints figures; not a test).

.venv/bin/python bench/report_bench.py [hosts ...]     (default: 100 1000 10000)
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.edgeslim.jetson.plugins.module_utils import report


def host(i: int) -> dict:
    return {
        "model": "NVIDIA Jetson Orin Nano Developer Kit",
        "profile": "warehouse_robot",
        "memory": {
            "before": {"MemTotal_kb": 7802880, "MemAvailable_kb": 6689000 + i % 977, "boot_id": "a"},
            "after": {"MemTotal_kb": 7802880, "MemAvailable_kb": 7730000 + i % 911, "boot_id": "a"},
        },
        "layers": {
            "services": {"status": "applied", "reclaimed_mb": 1017.0 + i % 5, "measured_by": "MemAvailable"},
            "swiotlb": {"status": "pending_reboot", "reclaimed_mb": None, "measured_by": "MemTotal"},
        },
        "status": "ok",
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 10000]
    for n in sizes:
        custom = {f"robot-{i:05d}": host(i) for i in range(n)}
        outcomes = {h: ("failed" if i % 50 == 0 else "ok") for i, h in enumerate(custom)}
        t0 = time.perf_counter()
        rows = report.build_rows(custom, outcomes)
        sizes_out = {fmt: len(render(rows)) for fmt, render in report.RENDERERS.items()}
        elapsed = time.perf_counter() - t0
        tracemalloc.start()  # a second pass for memory: tracing slows Python several-fold
        rows = report.build_rows(custom, outcomes)
        for render in report.RENDERERS.values():
            render(rows)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"report: {n:6d} hosts  rows+{len(report.RENDERERS)} renderings {elapsed * 1000:7.1f} ms  "
              f"peak {peak / 1048576:6.1f} MiB  "
              + "  ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sizes_out.items()))  # fmt: skip


if __name__ == "__main__":
    main()
