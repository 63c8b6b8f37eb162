#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: swiotlb_info
short_description: Sample how much of the SWIOTLB bounce-buffer pool a device uses, and size the pool from it
description:
  - Reads the kernel's debugfs counters under O(debugfs_path) (C(io_tlb_nslabs), C(io_tlb_used), and
    C(io_tlb_used_hiwater) on 6.x kernels), once or every O(interval) seconds for O(window) seconds while the
    workload runs. Every figure is in slots of 2 KiB (IO_TLB_SIZE).
  - The peak is C(io_tlb_used_hiwater) where the kernel has it (the most slots in use at once since boot), else
    the largest C(io_tlb_used) sample, so on 5.x kernels (JetPack 5 and 6) the window must cover the busiest
    DMA the device does.
  - Recommends a pool size in whole MiB, the peak times O(margin_factor), never below O(floor_mib), and never
    smaller than the current pool when the pool ran full. Also reports the slots this kernel allocates for it
    (rounding to 128 slots, and on 6.x kernels to a power of two of at least 128 slots per area).
  - With O(requested_slots), reports the pool this kernel allocates for C(swiotlb=<requested_slots>) and whether
    the running pool (debugfs, or O(pool_log_mib) from the kernel log) is exactly that.
  - Read-only. Never writes C(io_tlb_used_hiwater) (writing 0 would reset it for everyone).
version_added: 0.1.0
author: edgeslim maintainers (@edgeslim)
options:
  debugfs_path:
    description:
      - The kernel's SWIOTLB debugfs directory. Tests and simulated devices point it at a prepared directory.
      - Only root can read debugfs.
    type: path
    default: /sys/kernel/debug/swiotlb
  window:
    description: Seconds to sample for; V(0) reads once.
    type: float
    default: 0
  interval:
    description: Seconds between readings (NVIDIA suggests watching every 5 s under full workload).
    type: float
    default: 5
  margin_factor:
    description: Headroom over the peak for the recommendation (V(2) = twice the peak). At least 1.
    type: float
    default: 2
  floor_mib:
    description: Smallest pool ever recommended, in MiB (NVIDIA's published shrink is 4 MiB; never 0).
    type: int
    default: 4
  requested_slots:
    description: A C(swiotlb=) slot count to check against this kernel's rounding (see RV(expected_slots)).
    type: int
  pool_log_mib:
    description:
      - The pool size from the kernel log line C(software IO TLB mapped ... (N MB)), for RV(accepted) when debugfs
        is not readable.
    type: float
extends_documentation_fragment:
  - edgeslim.jetson.attributes.read_only
"""

EXAMPLES = r"""
- name: Watch the pool for 10 minutes while the workload runs, every 5 s
  edgeslim.jetson.swiotlb_info:
    window: 600
    interval: 5
  register: use

- name: Size the pool from the evidence
  ansible.builtin.debug:
    msg: "peak {{ use.peak_slots }} slots -> swiotlb_size_mib: {{ use.recommendation.size_mib }}"

- name: Does the running pool match what this kernel allocates for swiotlb=2048?
  edgeslim.jetson.swiotlb_info:
    requested_slots: 2048
  register: check
"""

RETURN = r"""
present:
  description: Whether O(debugfs_path) exists.
  returned: always
  type: bool
pool_slots:
  description: C(io_tlb_nslabs), the pool's size in slots (null when not readable or no pool was allocated).
  returned: always
  type: int
  sample: 32768
pool_mib:
  description: RV(pool_slots) in MiB.
  returned: always
  type: float
used_slots:
  description: C(io_tlb_used) at the last reading.
  returned: always
  type: int
hiwater_slots:
  description: C(io_tlb_used_hiwater) at the last reading; null on kernels without it (5.x).
  returned: always
  type: int
used_max_slots:
  description: Largest C(io_tlb_used) over the readings.
  returned: always
  type: int
samples:
  description: Number of readings taken.
  returned: always
  type: int
peak_slots:
  description: The most slots seen in use (RV(hiwater_slots) where present, else RV(used_max_slots)); null when
    the counters are not readable.
  returned: always
  type: int
  sample: 310
peak_source:
  description: C(io_tlb_used_hiwater) or C(io_tlb_used) (sampled), null when unknown.
  returned: always
  type: str
peak_mib:
  description: RV(peak_slots) in MiB.
  returned: always
  type: float
kernel:
  description: The running kernel's release, (major, minor), possible CPUs and the swiotlb= areas field.
  returned: always
  type: dict
  sample: {release: 5.15.148-tegra, version: [5, 15], possible_cpus: 6, nareas: null}
recommendation:
  description:
    - C(size_mib) to use as C(swiotlb_size_mib), C(slots) it means on the command line, C(kernel_slots) and
      C(kernel_mib) this kernel allocates for it, C(kernel_rounding), C(basis), C(saturated) (the pool ran full),
      C(shrinks) (smaller than the current pool), C(margin_factor), C(floor_mib). Null when the peak is unknown.
  returned: always
  type: dict
expected_slots:
  description: Slots this kernel allocates for C(swiotlb=<requested_slots>).
  returned: when O(requested_slots) is set
  type: int
expected_rounding:
  description: How the kernel gets from O(requested_slots) to RV(expected_slots).
  returned: when O(requested_slots) is set
  type: str
accepted:
  description: Whether the running pool is exactly RV(expected_slots) (debugfs, else O(pool_log_mib)); null when
    neither is known.
  returned: when O(requested_slots) is set
  type: bool
warnings_list:
  description: Files that could not be read and why.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import swiotlb as tlb
from ansible_collections.edgeslim.jetson.plugins.module_utils.l4t import read_text


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "debugfs_path": {"type": "path", "default": tlb.DEBUGFS_PATH},
            "window": {"type": "float", "default": 0},
            "interval": {"type": "float", "default": 5},
            "margin_factor": {"type": "float", "default": 2},
            "floor_mib": {"type": "int", "default": 4},
            "requested_slots": {"type": "int"},
            "pool_log_mib": {"type": "float"},
        },
        supports_check_mode=True,
    )
    p = module.params
    result: dict = {"changed": False}
    if p["margin_factor"] < 1 or p["floor_mib"] <= 0:
        module.fail_json(msg="margin_factor must be >= 1 and floor_mib > 0 (never a pool of 0)", **result)
    if p["requested_slots"] is not None and p["requested_slots"] <= 0:
        module.fail_json(msg=f"requested_slots must be > 0, got {p['requested_slots']}", **result)
    try:
        result.update(
            tlb.pool_use(
                p["debugfs_path"],
                (read_text("/proc/cmdline") or "").strip(),
                os.uname().release,
                read_text(tlb.CPU_POSSIBLE_PATH) or "",
                window=p["window"],
                interval=p["interval"],
                margin_factor=p["margin_factor"],
                floor_mib=p["floor_mib"],
                requested_slots=p["requested_slots"],
                pool_log_mib=p["pool_log_mib"],
            )
        )
    except tlb.SwiotlbError as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
