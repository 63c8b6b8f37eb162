# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: layer_refusals
short_description: Every input refusal of the boot layers (SWIOTLB, carveouts), decided before any change
description:
  - Takes the boot layers a run applies and returns every reason to refuse their inputs at once, so the
    C(edgeslim.jetson.preflight) role can fail a host before the services layer stops anything, and each layer role
    refuses the same inputs before its own first change when it runs on its own (docs/reliability.md).
  - SWIOTLB - the size (C(swiotlb_size_mib), else the profile's C(swiotlb.size_mib)) must be a whole number of MiB
    from C(swiotlb_min_mib) (a whole number > 0) to 1024, the bound the extlinux module enforces on C(swiotlb=); with
    O(swiotlb_use) it must not be below the high-water mark the device's pool reached, unless
    C(swiotlb_force_below_usage) is true.
  - Carveouts - the recipes (C(carveouts_recipes), else the profile's C(carveouts.recipes)) must be a non-empty list
    of C(headless) and/or C(no_camera); with O(info) the chip (t234, t264) and the module must have them validated,
    and C(carveouts_fdt_method) (auto, overlays, merged) must be one this L4T release boots.
  - Reboot policy - C(<layer>_reboot_ok) must be a strict boolean (the check of the C(reboot_policy_errors) filter);
    unset is refused, except with O(check_mode), where it is a warning and the layer is only planned.
  - Layers other than C(swiotlb) and C(carveouts) are ignored (the services layer checks its own inputs).
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: The boot layers this run applies, for example C([swiotlb, carveouts]).
    type: list
    elements: str
    required: true
  settings:
    description:
      - The layers' variables by name, as their roles resolve them (C(swiotlb_size_mib), C(swiotlb_min_mib),
        C(swiotlb_reboot_ok), C(swiotlb_force_below_usage), C(swiotlb_debugfs_path), C(carveouts_recipes),
        C(carveouts_reboot_ok), C(carveouts_fdt_method)) and C(edgeslim_reboot_ok).
    type: dict
    required: true
  profile:
    description: The resolved C(edgeslim_profile) (its C(swiotlb.size_mib) and C(carveouts.recipes) are the defaults).
    type: dict
  info:
    description: The result of M(edgeslim.jetson.jetson_info) (C(soc), C(module), C(l4t)); without it the chip,
      module and L4T release are not checked.
    type: dict
  swiotlb_use:
    description: The result of M(edgeslim.jetson.swiotlb_info) (C(peak_slots)); without it the high-water mark is not
      checked.
    type: dict
  check_mode:
    description: The run only plans (C(--check)); an unset reboot policy is then a warning.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Refuse every bad boot-layer input at once, before any change
  ansible.builtin.assert:
    that: __refusals.refused | length == 0
    fail_msg: "{{ __refusals.refused | join('; ') }}"
  vars:
    __refusals: >-
      {{ ['swiotlb'] | edgeslim.jetson.layer_refusals({'swiotlb_size_mib': 4, 'swiotlb_min_mib': 4,
                                                       'swiotlb_reboot_ok': false}) }}
"""

RETURN = r"""
_value:
  description:
    - C(refused) and C(warnings), lists of messages naming the variable and the accepted values (empty when none).
    - The accepted values the layers go on with (null when refused or not requested) - C(swiotlb_mib),
      C(swiotlb_slots) (for C(swiotlb=)), C(carveouts_recipes), C(carveouts_fdt_method) (overlays or merged, resolved
      for the L4T release; null without O(info)).
  type: dict
"""

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.module_utils import layer_inputs


def layer_refusals(layers, settings, profile=None, info=None, swiotlb_use=None, check_mode=False) -> dict:
    if not isinstance(layers, list) or not all(isinstance(layer, str) for layer in layers):
        raise AnsibleFilterError(f"layer_refusals expects a list of layer names, got {layers!r}")
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"layer_refusals expects a dict of variable name -> value, got {settings!r}")
    return layer_inputs.layer_refusals(
        layers,
        settings,
        profile=profile if isinstance(profile, dict) else None,
        info=info if isinstance(info, dict) and info else None,
        swiotlb_use=swiotlb_use if isinstance(swiotlb_use, dict) and swiotlb_use else None,
        check_mode=bool(check_mode),
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"layer_refusals": layer_refusals}
