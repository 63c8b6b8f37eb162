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

# 2 KiB slots, swiotlb= rounded up to IO_TLB_SEGSIZE (128): the device-side helpers own the kernel's arithmetic; the
# size check (whole MiB, 1..1024, the extlinux module's bound) is the one the boot layers' pre-flight runs.
from ansible_collections.edgeslim.jetson.plugins.module_utils.layer_inputs import swiotlb_size_error
from ansible_collections.edgeslim.jetson.plugins.module_utils.swiotlb import SLOT_BYTES, mib_to_slots


def swiotlb_slots(mib) -> int:
    error = swiotlb_size_error(mib, name="swiotlb_slots")
    if error:
        raise AnsibleFilterError(error)
    return mib_to_slots(int(mib))


def swiotlb_mib(slots) -> float:
    if isinstance(slots, bool) or not str(slots).strip().isdigit():
        raise AnsibleFilterError(f"swiotlb_mib: slots must be a whole number, got {slots!r}")
    return int(slots) * SLOT_BYTES / 1048576


class FilterModule:
    def filters(self):
        return {"swiotlb_slots": swiotlb_slots, "swiotlb_mib": swiotlb_mib}
