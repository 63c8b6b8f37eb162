# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the device itself shows about its carveouts, and drift against the state recorded after the capsule.

An L4T upgrade can stage NVIDIA's stock capsule (package ``nvidia-l4t-bootloader``), which restores the stock
MB1/MB2 BCT at the next boot; a stored capsule checksum cannot see that (docs/carveouts.md, "Drift"). So the state
is read from the device each time and compared with the snapshot taken right after edgeslim's capsule was verified:

- ``reserved_memory``: children of /reserved-memory in the live device tree with status okay, name -> size in bytes
  (devicetree.reserved_memory) [jetson-facts §7: /proc/device-tree/reserved-memory];
- ``engines``: the recipes' kernel nodes, found by compatible (dt_overlay.plan), path -> status;
- ``memtotal_kb``: MemTotal; ``boot_memory_total_kb``: the kernel's boot line
  ``Memory: <avail>K/<total>K available (...)`` (mm/mm_init.c mem_init_print_info), the RAM the kernel was given;
- ``firmware_version`` / ``boot_slot``: nvbootctrl ``Current version`` / ``Current bootloader slot``.

Pure Python.
"""

from __future__ import annotations

import re

_MEMORY_LINE = re.compile(r"\bMemory: (\d+)K/(\d+)K available\b")


def boot_memory_total_kb(kernel_log: str | None) -> int | None:
    """Total of the kernel's ``Memory: <avail>K/<total>K available`` boot line (the last one, if the log repeats)."""
    found = _MEMORY_LINE.findall(kernel_log or "")
    return int(found[-1][1]) if found else None


def _mib(size: int | None) -> str:
    return "size unknown" if size is None else f"{size / 1048576:.1f} MiB"


def drift(baseline: dict, now: dict, tolerance_kb: int) -> list[str]:
    """What differs from ``baseline`` in a way that means stock carveouts came back; empty = none seen.

    Only regressions count: a carveout that is gone, an engine that stays disabled or more memory than recorded is
    not drift. A value missing on either side is skipped (the caller reports it as a note, never as a pass).
    """
    out: list[str] = []
    version_then, version_now = baseline.get("firmware_version"), now.get("firmware_version")
    if version_then and version_now and version_then != version_now:
        out.append(
            f"boot firmware version {version_now}, {version_then} when edgeslim's capsule was verified: the firmware "
            "was replaced behind edgeslim (an L4T upgrade staging NVIDIA's capsule?)"
        )
    slot_then, slot_now = baseline.get("boot_slot"), now.get("boot_slot")
    if slot_then and slot_now and slot_then != slot_now:
        out.append(
            f"boot chain {slot_now}, {slot_then} when edgeslim's capsule was verified: the device boots the other "
            "chain, which need not hold edgeslim's BCT"
        )
    rm_then, rm_now = baseline.get("reserved_memory"), now.get("reserved_memory")
    if isinstance(rm_then, dict) and isinstance(rm_now, dict):
        for name in sorted(rm_now):
            if name not in rm_then:
                out.append(f"carveout {name} present again ({_mib(rm_now[name])}): firmware changed behind edgeslim")
            elif (rm_now[name] or 0) > (rm_then[name] or 0):
                out.append(f"carveout {name} grew from {_mib(rm_then[name])} to {_mib(rm_now[name])}")
    eng_then, eng_now = baseline.get("engines"), now.get("engines")
    if isinstance(eng_then, dict) and isinstance(eng_now, dict):
        for path in sorted(eng_now):
            if eng_then.get(path) == "disabled" and eng_now[path] != "disabled":
                out.append(f"engine node {path} enabled again (status {eng_now[path]}, disabled when verified)")
    for key, label in (("memtotal_kb", "MemTotal"), ("boot_memory_total_kb", "kernel boot memory total")):
        then, cur = baseline.get(key), now.get(key)
        if isinstance(then, int) and isinstance(cur, int) and then - cur > tolerance_kb:
            out.append(
                f"{label} {cur // 1024} MiB, {(then - cur) / 1024:.1f} MiB below the {then // 1024} MiB recorded after "
                "edgeslim's capsule"
            )
    return out


def unchecked(baseline: dict, now: dict) -> list[str]:
    """Signals that could not be compared (missing on one side), so a clean drift list is not over-read."""
    keys = ("firmware_version", "boot_slot", "reserved_memory", "engines", "memtotal_kb", "boot_memory_total_kb")
    return [k for k in keys if baseline.get(k) is None or now.get(k) is None]
