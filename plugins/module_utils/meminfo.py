# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""/proc/meminfo parsing and sample statistics (pure Python).

Fields that matter for slimming [SKILL-AUDIT; derived]: MemTotal (boot layers: SWIOTLB, carveouts), MemAvailable
(services), MemFree, Buffers, Cached, Shmem, Swap*, CmaTotal/CmaFree (Jetson kernels) and NvMapMemUsed/NvMapMemFree
(NVIDIA's nvmap, on L4T kernels only).
"""

from __future__ import annotations

import re
import statistics

FIELDS = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Shmem", "SwapTotal", "SwapFree")
OPTIONAL_FIELDS = ("CmaTotal", "CmaFree", "NvMapMemUsed", "NvMapMemFree")
_LINE = re.compile(r"^([A-Za-z0-9_()]+):\s+(\d+)(?:\s+kB)?\s*$")


class MeminfoError(ValueError):
    """The file is not /proc/meminfo or lacks a required field."""


def parse_meminfo(text: str, source: str = "/proc/meminfo") -> dict[str, int]:
    """All ``Key: N kB`` lines as kB integers; the required FIELDS must be present."""
    values: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise MeminfoError(f"{source}: line {lineno} is not 'Key: value kB': {line[:60]!r}")
        values[m.group(1)] = int(m.group(2))
    missing = [f for f in FIELDS if f not in values]
    if missing:
        raise MeminfoError(f"{source}: missing {', '.join(missing)} (truncated or not a meminfo file)")
    return values


def select(values: dict[str, int]) -> dict[str, int]:
    """The fields the snapshot reports: required ones plus the optional Jetson ones when present."""
    return {k: values[k] for k in (*FIELDS, *OPTIONAL_FIELDS) if k in values}


def median_and_spread(samples: list[dict[str, int]]) -> tuple[dict[str, int], dict[str, int]]:
    """Per field: the median (int kB, lower median for even counts) and the spread (max - min)."""
    if not samples:
        raise MeminfoError("no samples")
    keys = [k for k in samples[0] if all(k in s for s in samples)]
    median = {k: int(statistics.median_low([s[k] for s in samples])) for k in keys}
    spread = {k: max(s[k] for s in samples) - min(s[k] for s in samples) for k in keys}
    return median, spread


def to_mib(values: dict[str, int]) -> dict[str, float]:
    return {k: round(v / 1024.0, 1) for k, v in values.items()}
