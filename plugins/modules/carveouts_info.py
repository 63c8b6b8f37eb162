#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: carveouts_info
short_description: Read a Jetson's carveout state from the device and report drift from edgeslim's capsule
description:
  - Read-only. Reads what the running device shows about its firmware carveouts -- the live device tree's
    C(reserved-memory) children and the recipes' engine nodes (found by compatible, as M(edgeslim.jetson.dt_overlay)
    does), C(MemTotal), the kernel's C(Memory:) boot line, and nvbootctrl's firmware version, boot-chain slot and
    capsule update status.
  - Compares that with the snapshot recorded (C(state_after) in O(record_path)) when edgeslim's capsule was verified
    and lists the drift, e.g. a carveout present again after an L4T upgrade restored NVIDIA's stock capsule.
  - Never changes anything. Signals that cannot be read are listed in RV(unchecked) and RV(notes), never passed.
version_added: 0.1.0
author: edgeslim maintainers (@edgeslim)
options:
  devicetree_path:
    description: The live device tree in the kernel's layout.
    type: path
    default: /sys/firmware/devicetree/base
  recipes:
    description: Recipes whose engine nodes are read. Empty = the recipes in the record.
    type: list
    elements: str
    default: []
  record_path:
    description: edgeslim's capsule record on the device (written by the carveouts role). Empty = read the state
      only (no baseline, no drift).
    type: path
    default: /var/lib/edgeslim/capsule.json
  nvbootctrl:
    description: argv prefix of nvbootctrl. Empty = do not read the firmware version and slot.
    type: list
    elements: str
    default: [nvbootctrl]
  kernel_log_command:
    description: argv printing the kernel log of this boot. Empty = skip the C(Memory:) boot line.
    type: list
    elements: str
    default: [dmesg]
  meminfo_path:
    description: Where MemTotal is read.
    type: path
    default: /proc/meminfo
  tolerance_mb:
    description: MemTotal and the boot memory total may be this much below the recorded values before it is drift.
    type: float
    default: 4.0
extends_documentation_fragment:
  - edgeslim.jetson.attributes.read_only
attributes:
  platform:
    description: Jetson (L4T) devices.
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Has the firmware changed behind edgeslim
  edgeslim.jetson.carveouts_info:
  register: carveouts_state

- name: Say so
  ansible.builtin.debug:
    msg: "{{ carveouts_state.drift }}"
  when: carveouts_state.drift | length > 0
"""

RETURN = r"""
state:
  description: What the device shows now (reserved_memory name->bytes, engines path->status, memtotal_kb,
    boot_memory_total_kb, firmware_version, boot_slot).
  returned: always
  type: dict
baseline:
  description: The snapshot recorded after edgeslim's capsule was verified, or null when there is none.
  returned: always
  type: dict
drift:
  description: What differs in a way that means stock carveouts came back (empty = none seen).
  returned: always
  type: list
  elements: str
checked:
  description: Whether a baseline existed to compare against.
  returned: always
  type: bool
unchecked:
  description: Signals missing on either side, so not compared.
  returned: always
  type: list
  elements: str
capsule_update_status:
  description: nvbootctrl's "Capsule update status" (0 none, 1 success, 2 booting the new firmware failed,
    3 install failed), or null.
  returned: always
  type: int
record:
  description: The capsule record (status, sha256, slots, recipes) without its snapshot, or null.
  returned: always
  type: dict
notes:
  description: Why a signal could not be read.
  returned: always
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import capsule as c
from ansible_collections.edgeslim.jetson.plugins.module_utils import carveouts_state as cs
from ansible_collections.edgeslim.jetson.plugins.module_utils import devicetree as dt
from ansible_collections.edgeslim.jetson.plugins.module_utils import dt_overlay as ov
from ansible_collections.edgeslim.jetson.plugins.module_utils import meminfo


def read_record(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        return None
    return doc if isinstance(doc, dict) else None


def device_state(module: AnsibleModule, recipes: list, notes: list) -> tuple[dict, int | None]:
    p = module.params
    state: dict = dict.fromkeys(
        ("reserved_memory", "engines", "memtotal_kb", "boot_memory_total_kb", "firmware_version", "boot_slot")
    )
    root = p["devicetree_path"]
    try:
        state["reserved_memory"] = {
            cv.name: cv.size for cv in dt.reserved_memory(root) if cv.status in ("okay", "ok")
        }  # fmt: skip
    except (OSError, dt.DeviceTreeError) as exc:
        notes.append(f"reserved-memory unreadable: {exc}")
    if recipes:
        try:
            state["engines"] = {t.path: t.status for t in ov.plan(root, recipes).targets}
        except (OSError, ov.OverlayError) as exc:
            notes.append(f"engine nodes unreadable: {exc}")
    else:
        notes.append("no recipes given or recorded: engine nodes not read")
    try:
        with open(p["meminfo_path"], encoding="ascii") as handle:
            state["memtotal_kb"] = meminfo.parse_meminfo(handle.read(), p["meminfo_path"])["MemTotal"]
    except (OSError, meminfo.MeminfoError) as exc:
        notes.append(f"MemTotal unreadable: {exc}")
    if p["kernel_log_command"]:
        rc, out, err = module.run_command(p["kernel_log_command"])
        state["boot_memory_total_kb"] = cs.boot_memory_total_kb(out) if rc == 0 else None
        if state["boot_memory_total_kb"] is None:
            notes.append(
                f"no 'Memory: ...K/...K available' line from {' '.join(p['kernel_log_command'])}"
                + (f" ({(err or out).strip()[:120]})" if rc != 0 else " (log rotated?)")
            )
    status = None
    if p["nvbootctrl"]:
        argv = list(p["nvbootctrl"])
        if module.get_bin_path(argv[0]) is None and not os.access(argv[0], os.X_OK):
            notes.append(f"{argv[0]} not found: firmware version and slot not read")
        else:
            rc, out, err = module.run_command([*argv, "dump-slots-info"])
            if rc == 0:
                slots = c.parse_slots(out)
                state["firmware_version"], state["boot_slot"] = slots["version"], slots["current"]
                status = slots["capsule_update_status"]
            else:
                notes.append(f"nvbootctrl dump-slots-info failed: {(err or out).strip()[:200]}")
    return state, status


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "devicetree_path": {"type": "path", "default": "/sys/firmware/devicetree/base"},
            "recipes": {"type": "list", "elements": "str", "default": []},
            "record_path": {"type": "path", "default": "/var/lib/edgeslim/capsule.json"},
            "nvbootctrl": {"type": "list", "elements": "str", "default": ["nvbootctrl"]},
            "kernel_log_command": {"type": "list", "elements": "str", "default": ["dmesg"]},
            "meminfo_path": {"type": "path", "default": "/proc/meminfo"},
            "tolerance_mb": {"type": "float", "default": 4.0},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["tolerance_mb"] < 0:
        module.fail_json(msg=f"tolerance_mb must be >= 0, got {p['tolerance_mb']}")
    notes: list[str] = []
    try:
        record = read_record(p["record_path"]) if p["record_path"] else None
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"{p['record_path']}: unreadable capsule record: {exc}")
    baseline = (record or {}).get("state_after")
    recipes = list(p["recipes"]) or list((record or {}).get("recipes") or [])
    state, status = device_state(module, recipes, notes)
    if not isinstance(baseline, dict):
        baseline = None
    if baseline is None and p["record_path"]:
        notes.append(
            "no state recorded after an edgeslim capsule: drift not checked"
            if record
            else f"no capsule record at {p['record_path']}: drift not checked"
        )
    found = cs.drift(baseline, state, int(p["tolerance_mb"] * 1024)) if baseline else []
    module.exit_json(
        changed=False,
        state=state,
        baseline=baseline,
        drift=found,
        checked=baseline is not None,
        unchecked=cs.unchecked(baseline, state) if baseline else [],
        capsule_update_status=status,
        record={k: v for k, v in record.items() if k != "state_after"} if record else None,
        notes=notes,
    )


if __name__ == "__main__":
    main()
