#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: uefi_capsule
short_description: Inspect, request or cancel a UEFI capsule update of a Jetson's boot firmware
description:
  - Firmware side of the carveouts layer (docs/carveouts.md). The capsule itself is built by NVIDIA's tools on the
    controller and staged in the ESP by the role; this module checks and arms it.
  - V(checked) reads the boot-chain and rootfs slots (C(nvbootctrl dump-slots-info), with and without C(-t rootfs)), the
    ESRT, the C(OsIndications) variable and the staged capsule, and lists why a capsule would be unsafe now.
  - V(inspected) checks a capsule file's EFI/FMP headers (and, with O(chip) or O(fw_class), its image type). Read-only;
    runs on the controller too.
  - V(requested) refuses when the slots make a capsule unsafe (a boot-chain or rootfs slot not normal, a slot switch
    already pending, rootfs A/B without O(rootfs_ab_synced)) or the staged capsule does not target the running
    firmware; otherwise sets bit 0x04 of C(OsIndications) (other bits kept) so UEFI processes the capsule at the next
    boot, writing the inactive boot chain and switching to it.
  - V(cancelled) clears that bit and removes the staged capsule.
version_added: 0.1.0
author: edgeslim maintainers (@edgeslim)
extends_documentation_fragment:
  - edgeslim.jetson.uefi_capsule
options:
  state:
    description: What to do.
    type: str
    choices: [checked, inspected, requested, cancelled]
    default: checked
  capsule_path:
    description: The capsule file (staged in the ESP's C(EFI/UpdateCapsule/), or on the controller for V(inspect)).
    type: path
  chip:
    description: SoC family (C(t234), C(t264)); its general-config image type GUID is used when the ESRT is unreadable.
    type: str
  fw_class:
    description: Expected FMP image type GUID (overrides the ESRT and O(chip)).
    type: str
attributes:
  check_mode:
    description: Computes the change without writing the variable or removing the capsule.
    support: full
  diff_mode:
    description: Shows OsIndications before and after.
    support: full
  platform:
    description: Jetson (L4T) devices with UEFI (JetPack 6 and later).
    support: full
    platforms: posix
notes:
  - efivarfs takes one C(write) per variable update (4 attribute bytes + the value); it cannot be updated by rename.
"""

EXAMPLES = r"""
- name: Why would a capsule be unsafe now
  edgeslim.jetson.uefi_capsule:
    state: checked
  register: slots

- name: Ask UEFI to process the staged capsule at the next boot
  edgeslim.jetson.uefi_capsule:
    state: requested
    capsule_path: /boot/efi/EFI/UpdateCapsule/TEGRA_BL.Cap
    chip: t234
"""

RETURN = r"""
bootloader:
  description: Boot-chain slots (current, active, num_slots, slots, version, capsule_update_status).
  returned: with state checked or requested
  type: dict
rootfs:
  description: Rootfs slots, or null when rootfs A/B is not enabled.
  returned: with state checked or requested
  type: dict
rootfs_ab:
  description: Whether rootfs A/B is enabled.
  returned: with state checked or requested
  type: bool
unsafe:
  description: Why a capsule must not be armed now (empty when safe).
  returned: with state checked or requested
  type: list
  elements: str
esrt:
  description: ESRT entries (fw_class, fw_version, last_attempt_status, ...).
  returned: with state checked or requested
  type: list
  elements: dict
os_indications:
  description: OsIndications value (null when the variable does not exist).
  returned: with state checked, requested or cancelled
  type: int
capsule_requested:
  description: Whether the capsule bit is set.
  returned: with state checked, requested or cancelled
  type: bool
capsule_staged:
  description: Whether O(capsule_path) exists.
  returned: when capsule_path is given
  type: bool
capsule_update_failure:
  description: Why nvbootctrl's "Capsule update status" says the last capsule boot did not update the firmware
    (2 booting the new firmware failed, 3 install failed, 0 no capsule processed); null for 1 (success) or when
    nvbootctrl does not print the status. Judge it right after a capsule boot only.
  returned: with state checked or requested
  type: str
capsule:
  description: The capsule's headers (capsule_guid, flags, size, image_types, payload_count).
  returned: with state inspected or requested
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import capsule as c


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise c.CapsuleError(f"cannot read {path}: {exc.strerror}") from None


def slots(module: AnsibleModule) -> dict:
    argv = list(module.params["nvbootctrl"])
    found = module.get_bin_path(argv[0]) is not None or os.access(argv[0], os.X_OK)
    if not found:
        return {"bootloader": None, "rootfs": None, "rootfs_ab": False,
                "nvbootctrl_error": f"{argv[0]} not found"}  # fmt: skip
    rc, out, err = module.run_command([*argv, "dump-slots-info"])
    boot = c.parse_slots(out) if rc == 0 else None
    rrc, rout, _rerr = module.run_command([*argv, "-t", "rootfs", "dump-slots-info"])
    rinfo = c.parse_slots(rout) if rrc == 0 else {}
    ab = c.rootfs_ab_enabled(rrc, rinfo)
    res = {"bootloader": boot, "rootfs": rinfo if ab else None, "rootfs_ab": ab}
    if rc != 0:
        res["nvbootctrl_error"] = (err or out).strip()[:300]
    return res


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {
                "type": "str",
                "choices": ["checked", "inspected", "requested", "cancelled"],
                "default": "checked",
            },
            "capsule_path": {"type": "path"},
            "chip": {"type": "str"},
            "fw_class": {"type": "str"},
            "rootfs_ab_synced": {"type": "bool", "default": False},
            "nvbootctrl": {"type": "list", "elements": "str", "default": ["nvbootctrl"]},
            "efivars_path": {"type": "path", "default": "/sys/firmware/efi/efivars"},
            "esrt_path": {"type": "path", "default": "/sys/firmware/efi/esrt"},
        },
        required_if=[("state", "inspected", ["capsule_path"]), ("state", "requested", ["capsule_path"])],
        supports_check_mode=True,
    )
    p = module.params
    result: dict = {"changed": False}
    var = os.path.join(p["efivars_path"], c.OS_INDICATIONS)
    try:
        if p["state"] == "inspected":
            blob = read_bytes(p["capsule_path"])
            if blob is None:
                raise c.CapsuleError(f"{p['capsule_path']}: no such capsule")
            result["capsule"] = c.parse_capsule(blob)
            if p["fw_class"] or p["chip"]:
                result["image_type"] = c.check_image_type(result["capsule"], p["fw_class"], p["chip"])
            module.exit_json(**result)

        raw = read_bytes(var)
        result["os_indications"] = c.os_indications_value(raw) if raw else None
        result["capsule_requested"] = bool(c.os_indications_value(raw) & c.FILE_CAPSULE_DELIVERY)
        if p["capsule_path"]:
            result["capsule_staged"] = os.path.exists(p["capsule_path"])

        if p["state"] == "cancelled":
            new = c.os_indications_clear(raw)
            if new is not None and new != raw:
                result["changed"] = True
                if not module.check_mode:
                    write_var(var, new)
            if result.get("capsule_staged"):
                result["changed"] = True
                if not module.check_mode:
                    os.unlink(p["capsule_path"])
            result["capsule_requested"] = False
            module.exit_json(**result)

        result.update(slots(module))
        boot = result["bootloader"] or {}
        result["capsule_update_failure"] = c.capsule_update_failure(boot.get("capsule_update_status"))
        result["esrt"] = c.read_esrt(p["esrt_path"])
        result["unsafe"] = c.unsafe_reasons(result["bootloader"], result["rootfs"], p["rootfs_ab_synced"])
        if result.get("nvbootctrl_error"):
            result["unsafe"].insert(0, f"nvbootctrl: {result['nvbootctrl_error']}")
        failed = [e for e in result["esrt"] if e.get("last_attempt_status") not in (None, 0)]
        if failed:
            result["unsafe"].append(
                f"the last capsule update failed (ESRT last_attempt_status {failed[0]['last_attempt_status']}); "
                "find out why before trying another"
            )
        if p["state"] == "checked":
            module.exit_json(**result)

        # requested
        if result["unsafe"]:
            raise c.CapsuleError("capsule update refused: " + "; ".join(result["unsafe"]))
        blob = read_bytes(p["capsule_path"])
        if blob is None:
            raise c.CapsuleError(f"{p['capsule_path']}: no capsule staged")
        result["capsule"] = c.parse_capsule(blob)
        fw_class = p["fw_class"] or next((e.get("fw_class") for e in result["esrt"] if e.get("fw_class")), None)
        result["image_type"] = c.check_image_type(result["capsule"], fw_class, p["chip"])
        new = c.os_indications_request(raw)
        if new != raw:
            result["changed"] = True
            if module._diff:
                result["diff"] = {
                    "before": f"OsIndications = {result['os_indications']}\n",
                    "after": f"OsIndications = {c.os_indications_value(new)}\n",
                }
            if not module.check_mode:
                write_var(var, new)
        result["capsule_requested"] = True
    except c.CapsuleError as exc:
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        module.fail_json(msg=f"{exc.filename or var}: {exc.strerror}", **result)
    module.exit_json(**result)


def write_var(path: str, data: bytes) -> None:
    """One write() of attributes + value, as efivarfs requires (no temp file + rename there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
