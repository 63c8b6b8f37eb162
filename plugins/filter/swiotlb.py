# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: swiotlb_slots
short_description: SWIOTLB pool size in MiB to the kernel's swiotlb= slot count
description:
  - One slot is 2 KiB (IO_TLB_SHIFT 11); the kernel rounds the count up to a multiple of 128 (IO_TLB_SEGSIZE).
  - Refuses zero, negative, fractional and boolean sizes (a pool of 0 breaks devices that bypass the IOMMU).
  - Refuses more than 1024 MiB (524288 slots), because the pool is one boot-time allocation from low memory (64 MiB
    by default); the extlinux module enforces the same bound on C(swiotlb=) (docs/reliability.md).
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: Pool size in MiB.
    type: int
    required: true
"""

EXAMPLES = r"""
- name: 4 MiB is NVIDIA's example, swiotlb=2048
  ansible.builtin.debug:
    msg: "swiotlb={{ 4 | edgeslim.jetson.swiotlb_slots }}"
"""

RETURN = r"""
_value:
  description: Slot count for C(swiotlb=).
  type: int
"""

from ansible.errors import AnsibleFilterError

# 2 KiB slots, swiotlb= rounded up to IO_TLB_SEGSIZE (128): the device-side helpers own the kernel's arithmetic.
from ansible_collections.edgeslim.jetson.plugins.module_utils.swiotlb import SLOT_BYTES, mib_to_slots

MAX_MIB = 1024  # = SWIOTLB_MAX_SLOTS of module_utils/extlinux.py (524288 slots); docs/reliability.md


def swiotlb_slots(mib) -> int:
    if isinstance(mib, bool) or not isinstance(mib, (int, str)) or not str(mib).strip().isdigit():
        raise AnsibleFilterError(f"swiotlb_slots: size must be a whole number of MiB, got {mib!r}")
    value = int(mib)
    if value <= 0:
        raise AnsibleFilterError("swiotlb_slots: size must be > 0 (never swiotlb=0)")
    if value > MAX_MIB:
        raise AnsibleFilterError(f"swiotlb_slots: {value} MiB refused, at most {MAX_MIB} MiB (the pool is allocated "
                                 "at boot from low memory; the kernel default is 64 MiB)")  # fmt: skip
    return mib_to_slots(value)


def swiotlb_mib(slots) -> float:
    if isinstance(slots, bool) or not str(slots).strip().isdigit():
        raise AnsibleFilterError(f"swiotlb_mib: slots must be a whole number, got {slots!r}")
    return int(slots) * SLOT_BYTES / 1048576


class FilterModule:
    def filters(self):
        return {"swiotlb_slots": swiotlb_slots, "swiotlb_mib": swiotlb_mib}
