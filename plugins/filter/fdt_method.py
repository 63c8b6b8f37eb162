# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: carveouts_fdt_method
short_description: Resolve the carveouts layer's FDT method (overlays or merged) for the device's L4T release
description:
  - L4TLauncher applies the OVERLAYS line of extlinux.conf only from L4T R36.2 on; R35.x L4TLauncher does not know the
    key and ignores it silently, so an overlay named there would never be booted [EDK2-L4TLAUNCHER-OVERLAYS].
  - V(auto) resolves to V(overlays) on R36.2 or later and to V(merged) (the overlay applied once into a copy of the
    DTB named by FDT, which every L4TLauncher loads) below.
  - V(overlays) below R36.2 is refused; V(auto) on a device whose release is unknown is refused (set the method).
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: The requested method, V(auto), V(overlays) or V(merged).
    type: str
    required: true
  l4t:
    description: The C(l4t) return value of M(edgeslim.jetson.jetson_info) (major, minor, version); empty = unknown.
    type: dict
"""

EXAMPLES = r"""
- name: Resolve the method
  ansible.builtin.set_fact:
    method: "{{ carveouts_fdt_method | edgeslim.jetson.carveouts_fdt_method(info.l4t | default({})) }}"
"""

RETURN = r"""
_value:
  description: C(method) (overlays or merged, null when refused) and C(error) (why it is refused, else null).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.module_utils.layer_inputs import resolve_fdt_method


def carveouts_fdt_method(requested, l4t=None) -> dict:
    if not isinstance(requested, str):
        raise AnsibleFilterError(f"carveouts_fdt_method: expected a string, got {type(requested).__name__}")
    return resolve_fdt_method(requested, l4t if isinstance(l4t, dict) else None)


class FilterModule:
    def filters(self):
        return {"carveouts_fdt_method": carveouts_fdt_method}
