#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: jetson_info
short_description: Identify a Jetson and read its boot-time memory configuration
description:
  - L4T release (C(/etc/nv_tegra_release) and the C(nvidia-l4t-core) package), JetPack by table, SoC, module SKU and
    carrier from the device tree's compatible strings, the model string.
  - Boot configuration (C(extlinux.conf) DEFAULT entry, its FDT, OVERLAYS and APPEND) and the running C(/proc/cmdline).
  - SWIOTLB as configured (command line) and as allocated (debugfs C(io_tlb_nslabs), else the kernel log line).
  - Firmware carveouts as the kernel sees them (C(/reserved-memory) children with size, no-map, reusable, status).
  - On a host that is not a Jetson, returns C(is_jetson=false) with the reason instead of failing.
version_added: 0.1.0
author: edgeslim maintainers (@edgeslim)
options:
  devicetree_path:
    description:
      - Root of the device tree in the kernel's layout. C(/proc/device-tree) links here on a Jetson.
    type: path
    default: /sys/firmware/devicetree/base
  root:
    description: Prefix for every other file read (C(/etc/nv_tegra_release), C(/boot/...), C(/proc/cmdline)); tests.
    type: path
    default: /
  extlinux_path:
    description: extlinux.conf, relative to O(root).
    type: str
    default: boot/extlinux/extlinux.conf
  efivars_path:
    description:
      - The kernel's efivarfs directory, read for the UEFI C(SecureBoot) variable (not prefixed by O(root)).
    type: path
    default: /sys/firmware/efi/efivars
  read_kernel_log:
    description: Read the kernel log (C(dmesg)) for the SWIOTLB pool line when debugfs is not readable.
    type: bool
    default: true
  swiotlb_debugfs_path:
    description:
      - The kernel's SWIOTLB debugfs directory (C(io_tlb_nslabs) is read from it; root only). Simulated devices
        point it at a prepared directory. M(edgeslim.jetson.swiotlb_info) reads the pool's use from the same place.
    type: path
    default: /sys/kernel/debug/swiotlb
extends_documentation_fragment:
  - edgeslim.jetson.attributes.read_only
"""

EXAMPLES = r"""
- name: Identify the device
  edgeslim.jetson.jetson_info:
  register: jetson

- name: Refuse non-Jetsons
  ansible.builtin.assert:
    that: jetson.is_jetson
    fail_msg: "{{ jetson.reason }}"
"""

RETURN = r"""
is_jetson:
  description: Whether the host is an NVIDIA Jetson (a Tegra234/264 SoC in the device tree's compatible list).
  returned: always
  type: bool
reason:
  description: Why the host is not considered a Jetson (empty when it is).
  returned: always
  type: str
model:
  description: The device tree's model string.
  returned: always
  type: str
  sample: NVIDIA Jetson Orin Nano Developer Kit
compatible:
  description: The root compatible list, most specific first.
  returned: always
  type: list
  elements: str
soc:
  description: SoC family, C(t234) (Orin) or C(t264) (Thor).
  returned: always
  type: str
module:
  description: Module part number, product name, carrier board and whether the DTB is a Super-mode one.
  returned: always
  type: dict
  sample: {module: p3767-0005, product: Jetson Orin Nano 8GB (devkit module), carrier: p3768-0000, super: false}
l4t:
  description: L4T release from nv_tegra_release (major, minor, patch, version, gcid, board, date, kernel_variant,
    jetpack), and the nvidia-l4t-core package version as core_package.
  returned: when /etc/nv_tegra_release exists
  type: dict
  sample: {major: 36, minor: 4, patch: 7, version: 36.4.7, jetpack: 6.2.1, core_package: 36.4.7-20250918154033}
boot:
  description: extlinux.conf summary (default_label, timeout, labels, boot_entry) and the running cmdline.
  returned: always
  type: dict
swiotlb:
  description:
    - C(configured) from /proc/cmdline and C(next_boot) from the extlinux boot entry (raw, slots, mib; null = kernel
      default 64 MiB), C(pool_slots) from debugfs, C(pool_mib) from debugfs or the kernel log, C(buffer_full), and
      C(source) of the pool figure.
  returned: always
  type: dict
carveouts:
  description: Children of /reserved-memory (name, size_bytes, size_mib, base, no_map, reusable, status, compatible).
  returned: always
  type: list
  elements: dict
secure_boot:
  description:
    - UEFI Secure Boot as the firmware reports it (the C(SecureBoot) EFI variable). With it on, L4TLauncher loads
      extlinux.conf, kernel, initrd, DTB and overlays only with a valid detached C(<file>.sig).
    - C(null) when there is no such variable (no efivarfs, legacy boot, a container) or it is unreadable.
  returned: always
  type: bool
  sample: false
warnings_list:
  description: Files that could not be read and why (the module still returns what it could read).
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import devicetree as dt
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux, l4t
from ansible_collections.edgeslim.jetson.plugins.module_utils import swiotlb as tlb


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "devicetree_path": {"type": "path", "default": "/sys/firmware/devicetree/base"},
            "root": {"type": "path", "default": "/"},
            "extlinux_path": {"type": "str", "default": "boot/extlinux/extlinux.conf"},
            "efivars_path": {"type": "path", "default": "/sys/firmware/efi/efivars"},
            "read_kernel_log": {"type": "bool", "default": True},
            "swiotlb_debugfs_path": {"type": "path", "default": tlb.DEBUGFS_PATH},
        },
        supports_check_mode=True,
    )
    p = module.params
    root = p["root"]
    dtroot = p["devicetree_path"]
    notes: list[str] = []

    def path(rel: str) -> str:
        return os.path.join(root, rel.lstrip("/"))

    result: dict = {"changed": False, "warnings_list": notes}
    try:
        compatible = dt.compatible_of(dtroot) if os.path.isdir(dtroot) else []
        model = dt.model_of(dtroot) if compatible else None
        carveouts = [c.as_dict() for c in dt.reserved_memory(dtroot)] if compatible else []
    except (dt.DeviceTreeError, OSError) as exc:
        module.fail_json(msg=f"device tree at {dtroot}: {exc}", **result)
    ident = l4t.identify(compatible)
    release, note = l4t.read_nv_tegra_release(path("/etc/nv_tegra_release"))
    if note:
        notes.append(note)
    if release is not None:
        rc, out, _err = module.run_command(["dpkg-query", "-W", "-f", "${Version}", "nvidia-l4t-core"])
        release["core_package"] = out.strip() if rc == 0 and out.strip() else None

    is_jetson, reason = l4t.jetson_verdict(ident, compatible, dtroot)

    cmdline = (read_text(path("/proc/cmdline")) or "").strip()
    ext_text = read_text(path(p["extlinux_path"]))
    boot = {"cmdline": cmdline, "extlinux": None}
    if ext_text is None:
        notes.append(f"{path(p['extlinux_path'])} not readable")
    else:
        try:
            boot["extlinux"] = extlinux.parse_extlinux(ext_text, path(p["extlinux_path"])).summary()
        except extlinux.ExtlinuxError as exc:
            notes.append(f"extlinux.conf not readable as L4TLauncher reads it: {exc}")
    entry_append = ((boot["extlinux"] or {}).get("boot_entry") or {}).get("append") or ""

    swiotlb = {
        "configured": l4t.swiotlb_setting(cmdline),
        "next_boot": l4t.swiotlb_setting(entry_append),
        "pool_slots": None,
        "pool_mib": None,
        "buffer_full": None,
        "source": None,
    }
    nslabs = tlb.read_counters(p["swiotlb_debugfs_path"])["nslabs"]
    if nslabs is not None:
        swiotlb.update(pool_slots=nslabs, pool_mib=nslabs * tlb.SLOT_BYTES / tlb.MIB, source="debugfs")
    if p["read_kernel_log"]:
        rc, out, err = module.run_command(["dmesg"])
        if rc == 0:
            log = l4t.swiotlb_from_log(out)
            swiotlb["buffer_full"] = log["buffer_full"]
            if swiotlb["pool_mib"] is None and log["pool_mib"] is not None:
                swiotlb.update(pool_mib=log["pool_mib"], source="kernel log")
        else:
            notes.append(f"dmesg unavailable: {err.strip() or rc}")
    if swiotlb["source"] is None:
        notes.append("SWIOTLB pool size unknown (no debugfs, no kernel log line)")

    try:
        secure_boot, note = l4t.secure_boot_state(read_bytes(os.path.join(p["efivars_path"], l4t.SECURE_BOOT_VAR)))
    except OSError as exc:
        secure_boot, note = None, f"{l4t.SECURE_BOOT_VAR}: {exc}"
    if note:
        notes.append(note)

    result.update(
        is_jetson=is_jetson,
        reason=reason,
        model=model or "",
        compatible=compatible,
        soc=ident["soc"] or "",
        module={k: ident[k] for k in ("module", "product", "carrier", "super")},
        boot=boot,
        swiotlb=swiotlb,
        carveouts=carveouts,
        secure_boot=secure_boot,
    )
    if release is not None:
        result["l4t"] = release
    module.exit_json(**result)


if __name__ == "__main__":
    main()
