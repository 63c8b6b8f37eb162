# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: reboot_policy
short_description: The effective reboot policy of a boot layer (<layer>_reboot_ok, else edgeslim_reboot_ok)
description:
  - Takes a map of the reboot-policy variables (C(edgeslim_reboot_ok), C(swiotlb_reboot_ok), C(carveouts_reboot_ok))
    and a boot layer, and returns that layer's effective policy - C(<layer>_reboot_ok) when it is set (not C(null),
    not the empty string), else C(edgeslim_reboot_ok).
  - Returns true (reboot in this run), false (leave the change pending for a maintenance window) or C(null) when
    neither is set (undecided; the boot layers then stop and ask for a decision, except in check mode).
  - The definition the engine, the pre-flight refusals, the rollback's single reboot and the metrics file share.
    It does not check the values - the C(edgeslim.jetson.reboot_policy_errors) filter refuses what is not a strict
    boolean before any change, and such a value reads false here.
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: Variable name -> value, for example C(edgeslim_reboot_ok) and C(swiotlb_reboot_ok).
    type: dict
    required: true
  layer:
    description: The boot layer whose policy is wanted.
    type: str
    choices: [swiotlb, carveouts]
    required: true
"""

EXAMPLES = r"""
- name: Reboot after restoring the SWIOTLB layer when its policy allows it now
  ansible.builtin.set_fact:
    swiotlb_reboot_now: >-
      {{ {'edgeslim_reboot_ok': edgeslim_reboot_ok | default(none),
          'swiotlb_reboot_ok': swiotlb_reboot_ok | default(none)} | edgeslim.jetson.reboot_policy('swiotlb') is true }}

- name: false overrides a common true for one layer
  ansible.builtin.debug:
    msg: "{{ {'edgeslim_reboot_ok': true, 'carveouts_reboot_ok': false} | edgeslim.jetson.reboot_policy('carveouts') }}"
"""

RETURN = r"""
_value:
  description: The layer's effective reboot policy - true, false, or C(null) when undecided.
  type: bool
"""

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.module_utils import layer_inputs


def reboot_policy(values: Any, layer: Any) -> bool | None:
    if not isinstance(values, dict):
        raise AnsibleFilterError(f"reboot_policy expects a dict of variable name -> value, got {values!r}")
    if layer not in layer_inputs.LAYERS:
        layers = ", ".join(layer_inputs.LAYERS)
        raise AnsibleFilterError(f"reboot_policy: layer {layer!r} is not a boot layer ({layers})")
    return layer_inputs.reboot_policy(values, layer)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"reboot_policy": reboot_policy}
