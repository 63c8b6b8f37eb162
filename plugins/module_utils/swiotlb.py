# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SWIOTLB pool use and size (pure Python, device side).

- The kernel's debugfs counters (``/sys/kernel/debug/swiotlb``), read and sampled over a window.
- The pool size to recommend from the observed high-water mark.
- The pool the running kernel allocates for ``swiotlb=<slots>``, so a verifier accepts the kernel's rounding.

Kernel facts [KERNEL-SWIOTLB-5.10, KERNEL-SWIOTLB-5.15, KERNEL-SWIOTLB-6.8 in docs/references.md]:

- Every counter counts slots of 2 KiB (IO_TLB_SIZE = 1 << IO_TLB_SHIFT, 11).
- ``io_tlb_nslabs`` and ``io_tlb_used`` exist on 5.10, 5.15 and 6.8; ``io_tlb_used_hiwater`` (the most slots in use
  at once since boot, or since someone wrote 0 to it) only on 6.x (6.8 has it). On 5.15 and 6.8 the files exist only
  when a pool was allocated; the directory exists regardless.
- ``swiotlb=N`` is rounded up to a multiple of IO_TLB_SEGSIZE (128) on every version. 6.x kernels also split the
  pool into areas (``swiotlb=N,<nareas>``, else the possible CPUs), each a power of two: when nareas is set the pool
  is raised to at least 128 x nareas and rounded up to a power of two (``round_up_default_nslabs``,
  ``swiotlb_adjust_nareas``). 5.10 and 5.15 have no areas.
"""

from __future__ import annotations

import math
import os
import re
import time

from ansible_collections.edgeslim.jetson.plugins.module_utils.extlinux import get_cmdline_arg

SLOT_BYTES = 2048  # IO_TLB_SIZE
SEGSIZE = 128  # IO_TLB_SEGSIZE
DEFAULT_SLOTS = 32768  # IO_TLB_DEFAULT_SIZE, 64 MiB
# struct io_tlb_slot per slot (kernel 6.1). Buffer and metadata are both memblock allocations, so both leave MemTotal:
# the emulated-boot lane measured SLOT_BYTES + SLOT_METADATA_BYTES per slot to the kB (docs/emulated-boot.md).
SLOT_METADATA_BYTES = 24
MIB = 1048576
DEBUGFS_PATH = "/sys/kernel/debug/swiotlb"
CPU_POSSIBLE_PATH = "/sys/devices/system/cpu/possible"
COUNTERS = {"nslabs": "io_tlb_nslabs", "used": "io_tlb_used", "hiwater": "io_tlb_used_hiwater"}


class SwiotlbError(ValueError):
    pass


def read_counters(path: str = DEBUGFS_PATH) -> dict:
    """One reading of the debugfs directory.

    ``present``: the directory exists. Each counter is an int, or None when its file is absent (e.g. no hiwater
    before 6.x, no files at all when no pool was allocated). ``problems`` says why a file could not be read.
    """
    out: dict = {"path": path, "present": os.path.isdir(path), "problems": []}
    for key, name in COUNTERS.items():
        out[key] = None
        if not out["present"]:
            continue
        fpath = os.path.join(path, name)
        try:
            with open(fpath, encoding="ascii", errors="replace") as handle:
                text = handle.read().strip()
        except FileNotFoundError:
            continue
        except (PermissionError, OSError) as exc:
            out["problems"].append(f"{fpath}: {exc.strerror or exc} (debugfs needs root)")
            continue
        if not text.isdigit():
            out["problems"].append(f"{fpath}: not a slot count: {text[:40]!r}")
            continue
        out[key] = int(text)
    if not out["present"]:
        out["problems"].append(f"{path} not present (debugfs not mounted, or a kernel without CONFIG_DEBUG_FS)")
    return out


def sample(path: str, window: float, interval: float, sleep=time.sleep, clock=time.monotonic) -> dict:
    """Read the counters at 0, ``interval``, 2 x ``interval``, ... up to ``window`` seconds (once when it is 0).

    Returns the last reading plus ``samples``, ``used_max`` and ``used_min`` over the readings.
    """
    if window < 0 or interval <= 0:
        raise SwiotlbError(f"window must be >= 0 and interval > 0 (got window={window}, interval={interval})")
    start = clock()
    readings = [read_counters(path)]
    # Readings at start + k * interval, so the count (window // interval + 1) does not drift with the read time.
    for k in range(1, int(window // interval) + 1):
        sleep(max(0.0, start + k * interval - clock()))
        readings.append(read_counters(path))
    used = [r["used"] for r in readings if r["used"] is not None]
    last = dict(readings[-1])
    last.update(
        samples=len(readings),
        used_max=max(used) if used else None,
        used_min=min(used) if used else None,
    )
    return last


def peak(reading: dict) -> tuple[int | None, str | None]:
    """Most slots seen in use: io_tlb_used_hiwater where the kernel has it, else the largest io_tlb_used sample."""
    hiwater, used_max = reading.get("hiwater"), reading.get("used_max", reading.get("used"))
    if hiwater is None and used_max is None:
        return None, None
    if hiwater is not None and (used_max is None or hiwater >= used_max):
        return hiwater, "io_tlb_used_hiwater"
    return used_max, "io_tlb_used"


def memtotal_cost_bytes(slots: int) -> int:
    """What a pool of ``slots`` slots takes off MemTotal: the 2 KiB buffers plus their metadata (kernel 6.1)."""
    return slots * (SLOT_BYTES + SLOT_METADATA_BYTES)


def mib_to_slots(mib: int) -> int:
    """Slots for a pool of ``mib`` MiB, rounded up to IO_TLB_SEGSIZE as the kernel does."""
    return align(mib * MIB // SLOT_BYTES, SEGSIZE)


def align(value: int, to: int) -> int:
    return -(-value // to) * to


def _pow2_up(value: int) -> int:
    return 1 << (value - 1).bit_length() if value > 1 else 1


def kernel_version(release: str) -> tuple[int, int] | None:
    """(major, minor) of a ``uname -r`` string such as ``5.15.148-tegra``."""
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def possible_cpus(text: str) -> int | None:
    """CPU count from /sys/devices/system/cpu/possible (``0-5``, ``0-3,6-7``, ``0``)."""
    count = 0
    for part in (text or "").strip().split(","):
        if not part:
            continue
        lo, _sep, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        count += (int(hi) - int(lo) + 1) if hi else 1
    return count or None


def nareas_of(setting: str | None) -> int | None:
    """The areas field of ``swiotlb=<slots>,<nareas>[,force|noforce]`` (6.x), None when absent."""
    fields = (setting or "").split(",")
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def allocated_slots(
    requested: int, release: str, cpus: int | None = None, nareas: int | None = None
) -> tuple[int, str]:
    """Slots the kernel ``release`` allocates for ``swiotlb=<requested>`` and how it got there.

    ``nareas`` is the command line's areas field (6.x), else ``cpus`` (the possible CPUs) decides on 6.x.
    Mirrors setup_io_tlb_npages + swiotlb_adjust_nareas + round_up_default_nslabs; the fallback that halves the
    pool when memblock cannot allocate it is a failure, not a rounding, so it is not modelled.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
        raise SwiotlbError(f"requested slots must be a positive integer, got {requested!r}")
    slabs = align(requested, SEGSIZE)
    how = f"aligned to {SEGSIZE} slots (IO_TLB_SEGSIZE)" if slabs != requested else "as requested"
    version = kernel_version(release)
    if version is None or version < (6, 0):
        return slabs, how
    areas = nareas if nareas is not None else cpus
    if areas is None:
        return slabs, how + "; areas unknown (possible CPUs not readable)"
    areas = 1 if areas == 0 else _pow2_up(areas)
    if slabs < SEGSIZE * areas:
        return _pow2_up(SEGSIZE * areas), f"raised to {SEGSIZE} x {areas} areas"
    if slabs & (slabs - 1) == 0:
        return slabs, how
    return _pow2_up(slabs), f"rounded up to a power of two ({areas} areas)"


def log_mib(slots: int) -> int:
    """The MB figure of ``software IO TLB: mapped [mem ...] (NMB)``: (nslabs << IO_TLB_SHIFT) >> 20."""
    return slots * SLOT_BYTES // MIB


def pool_accepted(expected: int, pool_slots: int | None = None, pool_log_mib: float | None = None) -> bool | None:
    """Does the running pool match what the kernel allocates for the request? None when the pool is unknown.

    debugfs io_tlb_nslabs must equal ``expected``; the kernel log's MB figure (floored) must equal its floor.
    """
    if pool_slots is not None:
        return pool_slots == expected
    if pool_log_mib is not None:
        return int(pool_log_mib) == log_mib(expected)
    return None


def recommend(
    peak_slots: int,
    pool_slots: int | None,
    release: str,
    cpus: int | None = None,
    factor: float = 2.0,
    floor_mib: int = 4,
) -> dict:
    """Pool size in whole MiB for ``swiotlb_size_mib``: the peak times ``factor``, never below ``floor_mib``.

    A peak at the pool size means the pool ran full: the real demand is unknown, so the current size is kept.
    ``kernel_slots`` is what this kernel allocates for the recommendation (its rounding, areas on 6.x).
    """
    if factor < 1:
        raise SwiotlbError(f"margin factor must be >= 1, got {factor}")
    if floor_mib <= 0:
        raise SwiotlbError(f"floor must be > 0 MiB (never swiotlb=0), got {floor_mib}")
    need_mib = max(floor_mib, math.ceil(peak_slots * SLOT_BYTES * factor / MIB))
    saturated = pool_slots is not None and peak_slots >= pool_slots
    if saturated:
        need_mib = max(need_mib, math.ceil(pool_slots * SLOT_BYTES / MIB))
        basis = "the pool ran full: keep at least its current size and look for 'swiotlb buffer is full'"
    elif need_mib == floor_mib:
        basis = f"floor ({floor_mib} MiB)"
    else:
        basis = f"high-water mark x {factor:g}"
    slots = mib_to_slots(need_mib)
    kernel_slots, how = allocated_slots(slots, release, cpus)
    return {
        "size_mib": need_mib,
        "slots": slots,
        "kernel_slots": kernel_slots,
        "kernel_mib": kernel_slots * SLOT_BYTES / MIB,
        "kernel_rounding": how,
        "basis": basis,
        "saturated": saturated,
        "shrinks": pool_slots is not None and kernel_slots < pool_slots,
        "margin_factor": factor,
        "floor_mib": floor_mib,
    }


def pool_use(
    debugfs_path: str,
    cmdline: str,
    release: str,
    cpu_possible: str,
    window: float = 0,
    interval: float = 5,
    margin_factor: float = 2,
    floor_mib: int = 4,
    requested_slots: int | None = None,
    pool_log_mib: float | None = None,
) -> dict:
    """The pool's use as edgeslim.jetson.swiotlb_info returns it (the layer's guard reads ``peak_slots``): the
    debugfs counters sampled over ``window`` seconds, the kernel (``release``, the possible CPUs), the peak and a
    recommendation; with ``requested_slots`` also what the kernel allocates for that request (``expected_slots``).
    Raises SwiotlbError on a counter that cannot be sampled."""
    reading = sample(debugfs_path, window, interval)
    setting = get_cmdline_arg(cmdline, "swiotlb")
    kernel = {
        "release": release,
        "version": kernel_version(release),
        "possible_cpus": possible_cpus(cpu_possible),
        "nareas": nareas_of(setting if isinstance(setting, str) else None),
    }
    top, source = peak(reading)
    pool = reading["nslabs"]
    result = {
        "present": reading["present"],
        "pool_slots": pool,
        "pool_mib": None if pool is None else pool * SLOT_BYTES / MIB,
        "used_slots": reading["used"],
        "hiwater_slots": reading["hiwater"],
        "used_max_slots": reading["used_max"],
        "samples": reading["samples"],
        "peak_slots": top,
        "peak_source": source,
        "peak_mib": None if top is None else top * SLOT_BYTES / MIB,
        "kernel": kernel,
        "recommendation": None,
        "warnings_list": reading["problems"],
    }
    if top is not None:
        result["recommendation"] = recommend(top, pool, release, kernel["possible_cpus"], margin_factor, floor_mib)
    if requested_slots is not None:
        # The command line's areas field counts only when it is the setting being checked (the role writes slots only).
        running = setting.split(",")[0] if isinstance(setting, str) else None
        nareas = kernel["nareas"] if running == str(requested_slots) else None
        expected, how = allocated_slots(requested_slots, release, kernel["possible_cpus"], nareas)
        result.update(
            expected_slots=expected,
            expected_rounding=how,
            accepted=pool_accepted(expected, pool, pool_log_mib),
        )
    return result
