#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: memory_snapshot
short_description: Snapshot a Jetson's memory (meminfo and per-unit memory), paired by boot identity
description:
  - Reads C(/proc/meminfo) one or more times and reports the median and spread of each field, in kB and MiB.
  - Optionally reports the memory each listed systemd unit holds - systemd's C(MemoryCurrent) when set, else the
    sum of C(Pss) over the processes of the unit's control group (cgroup v2 or v1).
  - Records a timestamp and the boot identity so that a before and an after snapshot can be paired and a reboot
    in between detected.
  - Read-only unless O(drop_caches=true).
version_added: 0.1.0
author: edgeslim maintainers (@edgeslim)
options:
  units:
    description:
      - Units to measure. V([]) measures none; V(["*"]) measures every loaded service.
    type: list
    elements: str
    default: []
  samples:
    description: Number of meminfo readings; the median is reported.
    type: int
    default: 1
  interval:
    description: Seconds between readings.
    type: float
    default: 1.0
  settle:
    description: Seconds to wait before the first reading (lets stopped services release memory).
    type: float
    default: 0
  drop_caches:
    description:
      - Run C(sync) and write C(3) to C(/proc/sys/vm/drop_caches) before reading, as NVIDIA's memory audit does.
      - B(Changes the system) (the page cache starts cold). Skipped in check mode.
    type: bool
    default: false
  boot_id_command:
    description:
      - argv of a command whose output identifies the current boot. Default reads the kernel's boot_id.
      - Containers share the host's boot_id; the simulated fleet passes PID 1's start time instead.
    type: list
    elements: str
  meminfo_path:
    description: Path of the meminfo file (tests point it at fixtures).
    type: path
    default: /proc/meminfo
attributes:
  check_mode:
    description: Reads as usual; only O(drop_caches) is skipped.
    support: full
  diff_mode:
    description: Nothing is changed, so there is no diff.
    support: none
  platform:
    description: Linux with systemd.
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Baseline with the memory of the units a profile will stop
  edgeslim.jetson.memory_snapshot:
    units: [gdm.service, nvargus-daemon.service]
    samples: 3
  register: before

- name: After, once the services had time to exit
  edgeslim.jetson.memory_snapshot:
    settle: 5
    samples: 3
  register: after

- name: Reclaimed MemAvailable in MiB
  ansible.builtin.debug:
    msg: "{{ (after.snapshot.meminfo_kb.MemAvailable - before.snapshot.meminfo_kb.MemAvailable) / 1024 }}"
"""

RETURN = r"""
snapshot:
  description: The snapshot (a stable structure consumed by the roles and the fleet report).
  returned: always
  type: dict
  contains:
    timestamp:
      description: UTC time of the first reading, ISO 8601.
      type: str
      sample: "2026-11-24T00:41:00Z"
    epoch:
      description: The same time as seconds since the epoch.
      type: float
    boot_id:
      description: Identity of the current boot (boot_id, or the output of O(boot_id_command)).
      type: str
    samples:
      description: Number of readings.
      type: int
    settle_seconds:
      description: Seconds waited before the first reading.
      type: float
    caches_dropped:
      description: Whether the page cache was dropped first.
      type: bool
    meminfo_kb:
      description:
        - Median per field, kB. MemTotal, MemFree, MemAvailable, Buffers, Cached, Shmem, SwapTotal, SwapFree, and
          CmaTotal, CmaFree, NvMapMemUsed, NvMapMemFree when the kernel reports them.
      type: dict
      sample: {MemTotal: 7802880, MemAvailable: 6012340}
    meminfo_mb:
      description: The same in MiB (kB / 1024, one decimal).
      type: dict
    spread_kb:
      description: Per field, max minus min over the readings (noise indicator).
      type: dict
    units:
      description: Per requested unit that is loaded.
      type: dict
      sample:
        gdm.service:
          memory_kb: 102400
          source: pss
          pids: 1
          active_state: active
          control_group: /system.slice/gdm.service
    units_missing:
      description: Requested units that are not loaded on this host.
      type: list
      elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils.memsnap import (
    SnapshotError,
    boot_identity,
    build_snapshot,
    drop_caches,
    sample_meminfo,
    sampling_options,
    units_memory,
    utc_now,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "units": {"type": "list", "elements": "str", "default": []},
            "settle": {"type": "float", "default": 0.0},
            **sampling_options(samples=1),
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["samples"] < 1:
        module.fail_json(msg=f"samples must be >= 1, got {p['samples']}")
    if p["interval"] < 0 or p["settle"] < 0:
        module.fail_json(msg="interval and settle must be >= 0")
    if "*" in p["units"] and p["units"] != ["*"]:
        module.fail_json(msg='units: "*" (all loaded services) cannot be combined with unit names')

    if p["settle"]:
        time.sleep(p["settle"])
    dropped = False
    try:
        if p["drop_caches"] and not module.check_mode:
            drop_caches(module)
            dropped = True
        now = utc_now()
        readings = sample_meminfo(p["meminfo_path"], p["samples"], p["interval"])
        units, missing = units_memory(module, p["units"])
        snapshot = build_snapshot(
            readings, now, boot_identity(module, p["boot_id_command"]), units, missing, p["settle"], dropped
        )
    except SnapshotError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=dropped, snapshot=snapshot)


if __name__ == "__main__":
    main()
