# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: engine_boot
short_description: The boot layers' part of one edgeslim.jetson.engine call, assembled from the layer roles' inputs
description:
  - Takes the boot layers one call runs and each layer role's C(<layer>_boot) (set by its C(inputs) entry point) and
    returns the engine's C(boot) option with the values the whole call shares - the one managed entry's file and
    label, the journal, the reboot timeout and boot-time command, the boot identity command.
  - The layers share one managed boot entry and one journal, so their paths must agree; a disagreement is refused
    here, before the device is read.
  - Carveouts overlays are compiled on the controller (C(compile_on) other than C(controller) is refused).
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: The layers of the call, for example C([services, swiotlb, carveouts]); only C(swiotlb) and
      C(carveouts) are used.
    type: list
    elements: str
    required: true
  parts:
    description: Layer name -> that role's C(<layer>_boot) (C(extlinux_path), C(managed_label), C(journal_path),
      C(reboot_timeout), C(boot_time_command), C(boot_id_command), C(measure_in_container), C(sign_command),
      C(layer), C(checks)).
    type: dict
    required: true
  settings:
    description: The layers' C(<layer>_inputs) merged (what C(edgeslim.jetson.layer_refusals) checks).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Both boot layers in one engine call
  ansible.builtin.set_fact:
    boot_args: >-
      {{ ['swiotlb', 'carveouts'] | edgeslim.jetson.engine_boot({'swiotlb': swiotlb_boot, 'carveouts': carveouts_boot},
                                                                 swiotlb_inputs | combine(carveouts_inputs)) }}
"""

RETURN = r"""
_value:
  description:
    - C(layers) (the boot layers, in their order SWIOTLB then carveouts), C(boot) (the engine's option, empty when no
      boot layer), C(journal_path), C(reboot_timeout) (the longest of the layers'), C(boot_time_command),
      C(boot_id_command) (lists or strings as the roles set them).
  type: dict
"""

from typing import Any

from ansible.errors import AnsibleFilterError

ORDER = ("swiotlb", "carveouts")
SHARED = ("extlinux_path", "managed_label", "journal_path")


def engine_boot(layers: Any, parts: Any, settings: Any) -> dict[str, Any]:
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise AnsibleFilterError(f"engine_boot expects a list of layer names, got {layers!r}")
    if not isinstance(parts, dict) or not isinstance(settings, dict):
        raise AnsibleFilterError("engine_boot expects parts (layer -> <layer>_boot) and settings as mappings")
    boot_layers = [x for x in ORDER if x in layers]
    out: dict[str, Any] = {"layers": boot_layers, "boot": {}, "journal_path": None, "reboot_timeout": 0,
                           "boot_time_command": "", "boot_id_command": []}  # fmt: skip
    if not boot_layers:
        return out
    missing = [x for x in boot_layers if not isinstance(parts.get(x), dict)]
    if missing:
        raise AnsibleFilterError(f"engine_boot: no {missing[0]}_boot (include the role's tasks_from: inputs first)")
    first = parts[boot_layers[0]]
    for key in SHARED:
        values = {x: parts[x].get(key) for x in boot_layers}
        if len({str(v) for v in values.values()}) > 1:
            raise AnsibleFilterError(
                f"the boot layers share one managed entry and one journal, but their {key} differ: {values} "
                "(set swiotlb_* and carveouts_* to the same value). Nothing was changed"
            )
    carveouts = parts.get("carveouts") if "carveouts" in boot_layers else None
    if carveouts and carveouts.get("compile_on", "controller") != "controller":
        raise AnsibleFilterError(
            f"carveouts_compile_on: {carveouts.get('compile_on')!r} refused: the overlay is compiled on the "
            "controller (dtc, cached by its source) and checked against the plan on the device. Nothing was changed"
        )
    boot: dict[str, Any] = {
        "settings": dict(settings),
        "extlinux_path": first.get("extlinux_path"),
        "managed_label": first.get("managed_label"),
        "measure_in_container": any(bool(parts[x].get("measure_in_container")) for x in boot_layers),
        "checks": {},
    }
    if carveouts and carveouts.get("devicetree_path"):
        boot["devicetree_path"] = carveouts["devicetree_path"]
    for layer in boot_layers:
        part = parts[layer]
        boot[layer] = {k: v for k, v in (part.get("layer") or {}).items() if v is not None}
        checks = {k: v for k, v in (part.get("checks") or {}).items() if v not in (None, "", [])}
        if checks:
            boot["checks"][layer] = checks
    sign = next((parts[x]["sign_command"] for x in boot_layers if parts[x].get("sign_command")), [])
    if sign:
        boot["sign_command"] = sign
    boot_id = next((parts[x]["boot_id_command"] for x in boot_layers if parts[x].get("boot_id_command")), [])
    if boot_id:
        boot["checker"] = {"boot_id_command": boot_id}
    boot_time = next((parts[x]["boot_time_command"] for x in boot_layers if parts[x].get("boot_time_command")), "")
    out.update(
        boot=boot,
        journal_path=first.get("journal_path"),
        reboot_timeout=max(int(parts[x].get("reboot_timeout") or 0) for x in boot_layers),
        boot_time_command=boot_time,
        boot_id_command=boot_id,
    )
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"engine_boot": engine_boot}
