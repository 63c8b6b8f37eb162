# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Memory held by systemd units (pure Python; the module runs systemctl and parses its output with
``systemd_units.parse_show``, the one ``systemctl show`` parser of the collection).

Per unit: systemd's MemoryCurrent when it is set (cgroup v2, as on L4T R36+), else the sum of ``Pss`` from
``/proc/PID/smaps_rollup`` over every process of the unit's control group, read from cgroup v2
``/sys/fs/cgroup<cg>/cgroup.procs`` or v1 ``/sys/fs/cgroup/systemd<cg>/cgroup.procs``, child groups included
(TESTBED.md: MemoryCurrent is ``[not set]`` in an unprivileged container on cgroup v1). PSS splits shared pages
fairly between processes, so the sum over units does not double count shared libraries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SHOW_PROPERTIES = ("Id", "ControlGroup", "MemoryCurrent", "ActiveState")
UNSET = {"", "[not set]", "18446744073709551615", "infinity"}


class UnitMemError(ValueError):
    pass


def cgroup_procs_paths(control_group: str, cgroup_root: str = "/sys/fs/cgroup") -> list[str]:
    """Candidate cgroup directories for a unit: v2 (unified) first, then the v1 systemd hierarchy."""
    cg = control_group.rstrip("/")
    return [f"{cgroup_root}{cg}", f"{cgroup_root}/unified{cg}", f"{cgroup_root}/systemd{cg}"]


def cgroup_pids(control_group: str, cgroup_root: str = "/sys/fs/cgroup") -> list[int]:
    """PIDs of the group and its children, from the first hierarchy that has the group."""
    for base in cgroup_procs_paths(control_group, cgroup_root):
        if not os.path.isfile(os.path.join(base, "cgroup.procs")):
            continue
        pids: list[int] = []
        for dirpath, _dirs, files in os.walk(base):
            if "cgroup.procs" in files:
                with open(os.path.join(dirpath, "cgroup.procs"), encoding="ascii") as handle:
                    pids += [int(x) for x in handle.read().split()]
        return sorted(set(pids))
    return []


def parse_pss_kb(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise UnitMemError("smaps_rollup without a Pss line")


def pss_kb(pid: int, proc_root: str = "/proc") -> int | None:
    """PSS of one process; None when it exited meanwhile (a race, not an error)."""
    try:
        with open(f"{proc_root}/{pid}/smaps_rollup", encoding="ascii") as handle:
            return parse_pss_kb(handle.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


@dataclass
class UnitMemory:
    memory_kb: int
    source: str
    pids: int
    active_state: str
    control_group: str

    def as_dict(self) -> dict:
        return {
            "memory_kb": self.memory_kb,
            "source": self.source,
            "pids": self.pids,
            "active_state": self.active_state,
            "control_group": self.control_group,
        }


def unit_memory(props: dict[str, str], cgroup_root: str = "/sys/fs/cgroup", proc_root: str = "/proc") -> UnitMemory:
    cg = props.get("ControlGroup", "")
    state = props.get("ActiveState", "unknown")
    pids = cgroup_pids(cg, cgroup_root) if cg else []
    current = props.get("MemoryCurrent", "")
    if current not in UNSET:
        return UnitMemory(int(current) // 1024, "memory_current", len(pids), state, cg)
    total = 0
    for pid in pids:
        value = pss_kb(pid, proc_root)
        total += value or 0
    return UnitMemory(total, "pss", len(pids), state, cg)
