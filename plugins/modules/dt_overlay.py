#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: dt_overlay
short_description: Install a device-tree overlay that disables the kernel nodes of validated carveout recipes
description:
  - Device side of the carveouts layer (docs/carveouts.md). Reads the B(live) device tree, finds the nodes of the
    chosen recipes by C(compatible) (display and DCE for C(headless); VI, ISP, NVCSI for C(no_camera)), and generates
    an overlay with one C(target-path) fragment per node setting C(status = "disabled").
  - Only NVIDIA's validated recipes exist; an unknown chip, an unknown module, an unknown recipe or a recipe that
    matches no node of the live tree is refused before any change.
  - The overlay is compiled with C(dtc), either here on the device (O(dtc)) or on the controller and passed in
    O(dtbo_b64); a compiled overlay is parsed and checked against the plan (exactly the planned nodes, only
    C(status = "disabled")) before it is installed.
  - Installs O(dest) (and the source next to it, C(.dts)) atomically; an identical installed overlay is left alone.
  - With O(merged_dest), also writes a copy of the board's kernel DTB O(fdt) with the overlay applied (C(fdtoverlay),
    here or on the controller and passed in O(merged_b64)), for boot chains that should not apply OVERLAYS at boot
    (FDT then points at the merged DTB). It is checked against O(fdt) before it is installed (same board, same nodes
    and properties except C(status = "disabled") on exactly the planned nodes).
  - The merged DTB keeps the overlays the boot entry already applies (O(overlays), e.g. a camera overlay from
    jetson-io); they are applied to O(fdt) first, in order, and ours last, as L4TLauncher applies an OVERLAYS list.
  - O(dest), O(merged_dest), O(fdt) and O(overlays) must resolve (after C(..) and symlinks) inside O(boot_root);
    anything else is refused before any change, so no file or directory is written or removed outside it.
  - Referencing the overlay from extlinux.conf (OVERLAYS, which needs FDT) is the job of M(edgeslim.jetson.extlinux).
version_added: 0.1.0
author: edgeslim maintainers (@edgeslim)
options:
  path:
    description: Root of the live device tree in the kernel's layout.
    type: path
    default: /sys/firmware/devicetree/base
  recipes:
    description: Recipes whose nodes to disable (C(headless), C(no_camera)). Required with O(state=present).
    type: list
    elements: str
    default: []
  dest:
    description: Installed overlay (absolute). The generated source is kept next to it with the suffix C(.dts).
    type: path
    default: /boot/edgeslim/carveouts.dtbo
  state:
    description:
      - V(present) plans, checks and installs the overlay.
      - V(planned) only plans and returns RV(dts) (read-only; for compiling on the controller).
      - V(absent) removes O(dest) and its source.
    type: str
    choices: [present, planned, absent]
    default: present
  dtbo_b64:
    description:
      - The overlay compiled elsewhere (base64 of the C(.dtbo)), e.g. by C(dtc) on the controller from the RV(dts)
        this module returned with O(state=planned). When unset, O(dtc) compiles it here.
    type: str
  dtc:
    description: argv prefix of the device-tree compiler on the device (used when O(dtbo_b64) is unset).
    type: list
    elements: str
    default: [dtc]
  fdt:
    description: The board's kernel DTB on the device that O(merged_dest) is made from (required with it, except
      with O(state=absent)).
    type: path
  merged_dest:
    description:
      - Where to install O(fdt) with the overlay applied (absolute, C(.dtb)). Unset = no merged DTB.
      - With O(state=absent) it is removed too.
    type: path
  overlays:
    description:
      - Overlays on the device (absolute C(.dtbo) paths) the boot entry applies today, applied to O(fdt) in this order
        before ours when making O(merged_dest), so the merged DTB boots what the entry booted plus our change.
    type: list
    elements: path
    default: []
  overlaid_b64:
    description:
      - O(fdt) with O(overlays) applied, made elsewhere (base64), e.g. by C(fdtoverlay) on the controller. Required
        with O(merged_b64) when O(overlays) is not empty; O(merged_b64) is checked against it.
    type: str
  merged_b64:
    description: The merged DTB made elsewhere (base64), e.g. by C(fdtoverlay) on the controller (O(fdt), then
      O(overlays), then ours). When unset, O(fdtoverlay) makes it here.
    type: str
  fdtoverlay:
    description: argv prefix of C(fdtoverlay) on the device (used with O(merged_dest) when O(merged_b64) is unset).
    type: list
    elements: str
    default: [fdtoverlay]
  boot_root:
    description:
      - Directory the boot files live in (what L4TLauncher reads); O(dest), O(merged_dest), O(fdt) and O(overlays)
        must resolve inside it. Change it only for an offline root filesystem or tests.
    type: path
    default: /boot
attributes:
  check_mode:
    description: Plans, compiles into a temporary directory and compares, without installing.
    support: full
  diff_mode:
    description: Shows the overlay source before and after.
    support: full
  platform:
    description: Jetson (L4T) devices.
    support: full
    platforms: posix
requirements:
  - dtc (device-tree-compiler) on the device, unless O(dtbo_b64) is given; fdtoverlay (same package) for
    O(merged_dest) unless O(merged_b64) is given
"""

EXAMPLES = r"""
- name: Disable display and camera nodes (compiled here, dtc on the device)
  edgeslim.jetson.dt_overlay:
    recipes: [headless, no_camera]

- name: Plan only (returns the overlay source; compile it on the controller)
  edgeslim.jetson.dt_overlay:
    recipes: [headless]
    state: planned
  register: plan

- name: Disable them in a merged copy of the board DTB (for an FDT line without OVERLAYS)
  edgeslim.jetson.dt_overlay:
    recipes: [headless, no_camera]
    fdt: /boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb
    merged_dest: /boot/edgeslim/carveouts.dtb

- name: Merged DTB for an entry that already applies a camera overlay (kept, applied before ours)
  edgeslim.jetson.dt_overlay:
    recipes: [headless]
    fdt: /boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb
    overlays: [/boot/tegra234-p3767-camera-p3768-imx219-dual.dtbo]
    merged_dest: /boot/edgeslim/carveouts.dtb

- name: Remove the overlay file
  edgeslim.jetson.dt_overlay:
    state: absent
"""

RETURN = r"""
chip:
  description: SoC family from the root compatible.
  returned: when state is present or planned
  type: str
  sample: t234
module:
  description: Module part number from the root compatible.
  returned: when state is present or planned
  type: str
  sample: p3767-0005
targets:
  description: Nodes the overlay disables, with the compatible they matched, their recipe and their live status.
  returned: when state is present or planned
  type: list
  elements: dict
  sample: [{path: /bus@0/display@13800000, compatible: nvidia,tegra234-display, recipe: headless, status: okay}]
paths:
  description: The node paths only (what the post-reboot check reads).
  returned: when state is present or planned
  type: list
  elements: str
pending:
  description: Planned nodes the live tree does not show disabled yet (empty after a boot with the overlay).
  returned: when state is present or planned
  type: list
  elements: str
dts:
  description: The generated overlay source.
  returned: when state is present or planned
  type: str
dest:
  description: The installed overlay.
  returned: always
  type: str
merged_dest:
  description: The installed merged DTB.
  returned: when merged_dest is set
  type: str
merged_changed:
  description: Whether the merged DTB was (or in check mode would be) rewritten.
  returned: when merged_dest is set and state is present
  type: bool
"""

import base64
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import dt_overlay as ov
from ansible_collections.edgeslim.jetson.plugins.module_utils.dt_overlay import confine, read


def decode_option(params: dict, name: str) -> bytes:
    """A DTB made on the controller, passed base64-encoded in option ``name``."""
    try:
        return base64.b64decode(params[name], validate=True)
    except ValueError as exc:
        raise ov.OverlayError(f"{name} is not base64: {exc}") from None


def run_tool(module: AnsibleModule, tool: str, args: list[str], inputs: dict, hint: str) -> bytes:
    """Run the device's ``tool`` (dtc or fdtoverlay: argv prefix from its option) in a private temporary directory:
    ``inputs`` maps argument names to the bytes written for them ("IN", "BASE"), "OUT" names the output. Returns the
    output; fails the module otherwise."""
    with tempfile.TemporaryDirectory(prefix=f"edgeslim-{tool}.") as work:
        names = {"OUT": os.path.join(work, "out")}
        for name, data in inputs.items():
            names[name] = os.path.join(work, name.lower())
            with open(names[name], "wb") as handle:
                handle.write(data)
        out = names["OUT"]
        argv = [*module.params[tool], *[names.get(a, a) for a in args]]
        if module.get_bin_path(argv[0]) is None and not os.access(argv[0], os.X_OK):
            rc, err = 127, f"{argv[0]}: not found"
        else:
            rc, _out, err = module.run_command(argv)
        if rc != 0:
            module.fail_json(msg=f"{tool} failed (rc {rc}): {err.strip()[:400]} -- {hint}", cmd=argv)
        with open(out, "rb") as handle:
            return handle.read()


def compile_here(module: AnsibleModule, dts: str) -> bytes:
    return run_tool(module, "dtc", ["-q", "-I", "dts", "-O", "dtb", "-o", "OUT", "IN"], {"IN": dts.encode("utf-8")},
                    "install device-tree-compiler on the device, or compile on the controller and pass dtbo_b64 "
                    "(the carveouts role does that by default)")  # fmt: skip


def merge_here(module: AnsibleModule, base: bytes, overlays: list[str], ours: bytes | None = None) -> bytes:
    """fdtoverlay: ``base`` with the device's ``overlays`` applied in order, then ``ours`` when given."""
    inputs = {"BASE": base}
    if ours is not None:
        inputs["IN"] = ours
    return run_tool(module, "fdtoverlay", ["-i", "BASE", "-o", "OUT", *overlays, *(["IN"] if ours is not None else [])],
                    inputs, "install device-tree-compiler on the device, or merge on the controller and pass "
                    "merged_b64 (the carveouts role does that by default)")  # fmt: skip


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/sys/firmware/devicetree/base"},
            "recipes": {"type": "list", "elements": "str", "default": []},
            "dest": {"type": "path", "default": "/boot/edgeslim/carveouts.dtbo"},
            "state": {"type": "str", "choices": ["present", "planned", "absent"], "default": "present"},
            "dtbo_b64": {"type": "str"},
            "dtc": {"type": "list", "elements": "str", "default": ["dtc"]},
            "fdt": {"type": "path"},
            "merged_dest": {"type": "path"},
            "merged_b64": {"type": "str"},
            "overlays": {"type": "list", "elements": "path", "default": []},
            "overlaid_b64": {"type": "str"},
            "fdtoverlay": {"type": "list", "elements": "str", "default": ["fdtoverlay"]},
            "boot_root": {"type": "path", "default": "/boot"},
        },
        required_by={"merged_b64": "merged_dest", "overlaid_b64": "merged_b64"},
        supports_check_mode=True,
    )
    p = module.params
    dest = p["dest"]
    if not os.path.isabs(dest) or not dest.endswith(".dtbo"):
        module.fail_json(msg=f"dest must be an absolute path ending in .dtbo, got {dest!r}")
    source = dest[: -len(".dtbo")] + ".dts"
    merged_dest = p["merged_dest"]
    if merged_dest is not None:
        if not os.path.isabs(merged_dest) or not merged_dest.endswith(".dtb"):
            module.fail_json(msg=f"merged_dest must be an absolute path ending in .dtb, got {merged_dest!r}")
        if p["state"] != "absent" and not p["fdt"]:
            module.fail_json(msg="merged_dest needs fdt: the board's kernel DTB to merge the overlay into")
        if p["fdt"] and os.path.realpath(merged_dest) == os.path.realpath(p["fdt"]):
            module.fail_json(msg=f"merged_dest {merged_dest} is the base fdt itself; the stock DTB is never rewritten")
        bad = [o for o in p["overlays"] if not os.path.isabs(o) or not o.endswith(".dtbo")]
        if bad:
            module.fail_json(msg=f"overlays must be absolute paths ending in .dtbo, got {bad}")
        if p["state"] != "absent" and p["overlays"] and p["merged_b64"] and not p["overlaid_b64"]:
            module.fail_json(msg="merged_b64 with overlays needs overlaid_b64 (fdt with the overlays applied), to "
                             "check the merged DTB against")  # fmt: skip
    elif p["overlays"] and p["state"] == "present":
        module.fail_json(msg="overlays are applied only into a merged DTB: set merged_dest (and fdt)")
    try:
        confine(dest, p["boot_root"], "dest")
        if merged_dest is not None:
            confine(merged_dest, p["boot_root"], "merged_dest")
        if p["fdt"] and p["state"] != "absent":
            confine(p["fdt"], p["boot_root"], "fdt")
        for overlay in p["overlays"] if p["state"] != "absent" else []:
            confine(overlay, p["boot_root"], "overlay")
    except ov.OverlayError as exc:
        module.fail_json(msg=str(exc))
    result: dict = {"changed": False, "dest": dest}
    if merged_dest is not None:
        result["merged_dest"] = merged_dest
    old_dts = (read(source) or b"").decode("utf-8", "replace")

    if p["state"] == "absent":
        present = ov.present_files(dest, merged_dest)
        if present:
            result["changed"] = True
            if module._diff:
                result["diff"] = {"before": old_dts, "after": "", "before_header": source, "after_header": source}
            if not module.check_mode:
                ov.remove_files(present)
        module.exit_json(**result)

    if not p["recipes"]:
        module.fail_json(msg="recipes is empty; use state=absent to remove the overlay")
    try:
        plan = ov.plan(p["path"], p["recipes"])
        dts = ov.render_dts(plan)
        result.update(
            chip=plan.chip,
            module=plan.module,
            targets=[t.as_dict() for t in plan.targets],
            paths=plan.paths,
            pending=plan.pending,
            dts=dts,
        )
        if p["state"] == "planned":
            module.exit_json(**result)
        blob = decode_option(p, "dtbo_b64") if p["dtbo_b64"] else compile_here(module, dts)
        ov.verify_overlay(blob, plan)
        merged = None
        if merged_dest is not None:
            base = read(p["fdt"])
            if base is None:
                raise ov.OverlayError(f"fdt {p['fdt']}: no such file (the board's kernel DTB to merge into)")
            missing = [o for o in p["overlays"] if not os.path.isfile(o)]
            if missing:
                raise ov.OverlayError(f"overlays {missing}: no such file (the entry's overlays to keep in the merge)")
            overlaid = base
            if p["overlays"]:
                overlaid = (
                    decode_option(p, "overlaid_b64") if p["merged_b64"] else merge_here(module, base, p["overlays"])
                )
                ov.verify_overlaid(base, overlaid)
            merged = decode_option(p, "merged_b64") if p["merged_b64"] else merge_here(module, overlaid, [], blob)
            ov.verify_merged(overlaid, merged, plan)
    except ov.OverlayError as exc:
        module.fail_json(msg=str(exc), **result)

    if merged is not None:
        result["merged_changed"] = read(merged_dest) != merged
        if result["merged_changed"]:
            result["changed"] = True
            if not module.check_mode:
                ov.install(merged_dest, merged, module.atomic_move)

    if read(dest) != blob or old_dts != dts:
        result["changed"] = True
        if module._diff:
            result["diff"] = {"before": old_dts, "after": dts, "before_header": source, "after_header": source}
        if not module.check_mode:
            ov.install(dest, blob, module.atomic_move)
            ov.install(source, dts.encode("utf-8"), module.atomic_move)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
