#!/usr/bin/env python
"""`make demo`'s closing check: every warehouse robot of the fleet reports the three layers with megabytes
reclaimed (services from MemAvailable, SWIOTLB and carve-outs from MemTotal across the simulated boot), and no
host outside the group took part in the run.

    python tests/sim/demo_check.py REPORT.json INVENTORY.yml [GROUP]

Prints one line per robot and the fleet total; exits 1 naming what is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

LAYERS = ("services", "swiotlb", "carveouts")


def group_hosts(inventory: dict, group: str) -> list[str]:
    children = ((inventory.get("all") or {}).get("children")) or {}
    return sorted(((children.get(group) or {}).get("hosts")) or {})


def check(report: dict, robots: list[str]) -> tuple[list[str], list[str]]:
    """(lines to print, problems)."""
    rows = {row["host"]: row for row in report.get("hosts", [])}
    lines, problems = [], []
    if not robots:
        problems.append("no warehouse robot in the inventory")
    for robot in robots:
        row = rows.get(robot)
        if row is None:
            problems.append(f"{robot}: not in the report")
            continue
        mb = row.get("reclaimed_mb") or {}
        lines.append(f"{robot}: " + ", ".join(f"{layer} {mb.get(layer)} MB ({row['layer_status'].get(layer)})"
                                              for layer in LAYERS))  # fmt: skip
        for layer in LAYERS:
            value = mb.get(layer)
            if not isinstance(value, (int, float)) or value <= 0:
                problems.append(f"{robot}: layer {layer} reclaimed {value!r} MB ({row['layer_status'].get(layer)})")
    others = sorted(set(rows) - set(robots))
    if others:
        problems.append(f"hosts outside the group in the report: {', '.join(others)}")
    totals = report.get("totals") or {}
    lines.append(f"fleet: {totals.get('reclaimed_mb')} = {totals.get('reclaimed_mb_total')} MB")
    return lines, problems


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    report = json.loads(Path(argv[1]).read_text())
    robots = group_hosts(yaml.safe_load(Path(argv[2]).read_text()), argv[3] if len(argv) == 4 else "warehouse-robots")
    lines, problems = check(report, robots)
    print("\n".join(lines))
    if problems:
        print("demo: NOT all three layers reclaimed on every robot:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"demo: all three layers reclaimed memory on each of the {len(robots)} warehouse robots")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
