# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Memory snapshots on the host: the one copy shared by ``edgeslim.jetson.memory_snapshot`` and
``edgeslim.jetson.engine``.

A snapshot is meminfo (median and spread of a few readings), the memory of some units (``unitmem``), a timestamp
and the boot identity. ``settle`` waits for MemAvailable to stop moving instead of sleeping a fixed time: after
units stop, their memory comes back over a second or two (processes exit, the kernel frees their pages), and a
fixed sleep is either too short on a loaded device or wasted on an idle one.

Functions take the ``AnsibleModule`` for ``run_command``/``get_bin_path`` and raise ``SnapshotError``.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.edgeslim.jetson.plugins.module_utils.meminfo import (
    MeminfoError,
    median_and_spread,
    parse_meminfo,
    select,
    to_mib,
)
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import UnitsError, parse_show
from ansible_collections.edgeslim.jetson.plugins.module_utils.unitmem import SHOW_PROPERTIES, UnitMemError, unit_memory

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
DROP_CACHES_PATH = "/proc/sys/vm/drop_caches"


def sampling_options(samples: int) -> dict[str, Any]:
    """argument_spec of the options every module that takes snapshots shares (``samples`` default differs)."""
    return {
        "samples": {"type": "int", "default": samples},
        "interval": {"type": "float", "default": 1.0},
        "drop_caches": {"type": "bool", "default": False},
        "boot_id_command": {"type": "list", "elements": "str"},
        "meminfo_path": {"type": "path", "default": "/proc/meminfo"},
    }


class SnapshotError(ValueError):
    """A reading that cannot be taken; the message is the module's failure message."""


def read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read()


def boot_identity(module: Any, argv: list[str] | None) -> str:
    """The boot identity: the output of ``argv``, or the kernel's boot_id."""
    if argv:
        rc, out, err = module.run_command(argv)
        if rc != 0 or not out.strip():
            raise SnapshotError(f"boot_id_command {argv} failed (rc {rc}): {err.strip() or 'no output'}")
        return out.strip()
    try:
        return read(BOOT_ID_PATH).strip()
    except OSError as exc:
        raise SnapshotError(f"cannot read {BOOT_ID_PATH}: {exc.strerror}") from exc


def units_memory(module: Any, names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Per loaded unit its memory (``unitmem``), and the names that are not loaded. ``["*"]``: every loaded
    service. One ``systemctl show`` for all of them."""
    if not names:
        return {}, []
    systemctl = module.get_bin_path("systemctl", required=True)
    if names == ["*"]:
        rc, out, err = module.run_command(
            [systemctl, "list-units", "--type=service", "--state=loaded", "--no-legend", "--plain", "--all"]
        )
        if rc != 0:
            raise SnapshotError(f"systemctl list-units failed: {err.strip()}")
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        if not names:
            return {}, []
    rc, out, err = module.run_command([systemctl, "show", "-p", ",".join((*SHOW_PROPERTIES, "LoadState")), *names])
    if rc != 0:
        raise SnapshotError(f"systemctl show failed: {err.strip()}")
    try:
        blocks = parse_show(out)
        if len(blocks) != len(names):
            raise SnapshotError(f"systemctl show returned {len(blocks)} blocks for {len(names)} units")
        found, missing = {}, []
        for name, props in zip(names, blocks):  # lengths checked above
            if props.get("LoadState") != "loaded":
                missing.append(name)
                continue
            found[name] = unit_memory(props).as_dict()
    except (UnitsError, UnitMemError, OSError) as exc:
        raise SnapshotError(str(exc)) from exc
    return found, missing


def drop_caches(module: Any) -> None:
    """``sync`` + ``echo 3 > drop_caches``, NVIDIA's memory-audit method (changes the page cache)."""
    module.run_command(["sync"], check_rc=True)
    try:
        with open(DROP_CACHES_PATH, "w", encoding="ascii") as handle:
            handle.write("3\n")
    except OSError as exc:
        raise SnapshotError(f"cannot drop caches ({DROP_CACHES_PATH}: {exc.strerror}); run without it") from exc


def read_meminfo(path: str) -> dict[str, int]:
    try:
        return select(parse_meminfo(read(path), path))
    except (MeminfoError, OSError) as exc:
        raise SnapshotError(str(exc)) from exc


def sample_meminfo(path: str, samples: int, interval: float, sleep: Callable[[float], Any] = time.sleep) -> list:
    readings = []
    for i in range(samples):
        if i:
            sleep(interval)
        readings.append(read_meminfo(path))
    return readings


def build_snapshot(
    readings: list[dict[str, int]],
    now: datetime.datetime,
    boot_id: str,
    units: dict[str, Any],
    missing: list[str],
    settle_seconds: float,
    dropped: bool,
) -> dict[str, Any]:
    """The snapshot structure of ``memory_snapshot`` (documented in its RETURN)."""
    median, spread = median_and_spread(readings)
    return {
        "timestamp": now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "epoch": now.timestamp(),
        "boot_id": boot_id,
        "samples": len(readings),
        "settle_seconds": settle_seconds,
        "caches_dropped": dropped,
        "meminfo_kb": median,
        "meminfo_mb": to_mib(median),
        "spread_kb": spread,
        "units": units,
        "units_missing": missing,
    }


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def settle(
    read_sample: Callable[[], dict[str, int]],
    timeout: float,
    interval: float,
    stable_kb: int,
    samples: int,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[dict[str, int]], dict[str, Any]]:
    """Read meminfo every ``interval`` s until the last ``samples`` readings of MemAvailable lie within
    ``stable_kb`` of each other, or ``timeout`` s have passed. Returns the last ``samples`` readings (the "after"
    snapshot is their median) and ``{reason: stable|timeout, seconds, readings, window_kb}``."""
    start = clock()
    readings = [read_sample()]
    while True:
        window = readings[-samples:]
        values = [r["MemAvailable"] for r in window]
        spread = max(values) - min(values)
        elapsed = clock() - start
        if len(window) >= samples and spread <= stable_kb:
            reason = "stable"
            break
        if elapsed >= timeout:
            reason = "timeout"
            break
        sleep(interval)
        readings.append(read_sample())
    return window, {
        "reason": reason,
        "seconds": round(elapsed, 1),
        "readings": len(readings),
        "window_kb": spread,
        "stable_kb": stable_kb,
        "timeout": timeout,
    }
