# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot layers (SWIOTLB, carveouts) on the device for edgeslim.jetson.engine: one plan, then one apply.

``plan_boot`` reads, and changes nothing: extlinux.conf (the managed entry, the stock one), the journal, the free
space of the boot directory, the SWIOTLB pool and what the kernel allocates for the requested size
(swiotlb.pool_use), the device (chip, module, L4T release) and the overlay plan from the live device tree
(dt_overlay.plan). It computes in memory the ONE edit of the managed entry for every selected layer (``swiotlb=`` in
APPEND; FDT and OVERLAYS, or the merged FDT alone), with extlinux_edit.edit_present, as edgeslim.jetson.extlinux
does it for one layer: the journal records are the same, so the roles' rollback of one layer keeps working.

``apply_boot`` then changes the device in this order, every refusal having happened before the first step:

1. journal: each layer's extlinux record (extlinux_edit.journal_update) and, for carveouts, the boot files it
   replaces (``boot_files``: path -> the previous file set aside, or null when there was none);
2. boot files: the previous file set aside as ``<file>.edgeslim-prev``, the new one installed atomically;
3. commit-or-revert armed: the checker program and its unit installed and enabled, the layer's earlier verdict
   dropped, ``pending/<layer>.json`` written and fsynced (its checks carry the management path the engine sees now:
   a change that cuts the device off its controller is reverted, not committed);
4. extlinux.conf written ONCE (backup, atomic rename, directory fsync): the managed entry and DEFAULT together --
   only now does the next boot change.

Under UEFI Secure Boot with a signing hook (``boot.sign_command``, boot_sign.py) each boot file L4TLauncher reads is
signed as it is written: the overlay or the merged DTB after step 2 (before arming), extlinux.conf after step 4; the
pending records carry the hook, so the checker signs extlinux.conf again when it reverts at boot. Secure Boot on
without a hook is refused before any change.

An error after step 1 puts everything back before it is raised (``BootFailure.extra``: ``restored`` and what was
restored, or ``restore_error``): the signatures set aside, extlinux.conf when it was written, the boot files from
their journaled copies, the pending records (the checker leaves with the last one), the journal records as they
were; under Secure Boot the restored extlinux.conf and boot files are then signed again (a failure there is a
warning, ``sign_warnings``, the previous signature kept).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from typing import Any, Callable

from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_sign as sg
from ansible_collections.edgeslim.jetson.plugins.module_utils import devicetree as dt
from ansible_collections.edgeslim.jetson.plugins.module_utils import dt_overlay as ov
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux_edit as xe
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as j
from ansible_collections.edgeslim.jetson.plugins.module_utils import l4t
from ansible_collections.edgeslim.jetson.plugins.module_utils import swiotlb as tlb
from ansible_collections.edgeslim.jetson.plugins.module_utils import trial_boot as tb
from ansible_collections.edgeslim.jetson.plugins.module_utils.l4t import read_text
from ansible_collections.edgeslim.jetson.plugins.module_utils.layer_inputs import resolve_fdt_method
from ansible_collections.edgeslim.jetson.plugins.module_utils.report import layer_record

LAYERS = ("swiotlb", "carveouts")  # the order of the edit and of the records
PREVIOUS_SUFFIX = ".edgeslim-prev"
DEFAULT_SWIOTLB_SLOTS = 32768  # the kernel's pool without swiotlb= (IO_TLB_DEFAULT_SIZE, 64 MiB) [KERNEL]
SLOT_COST_BYTES = 2048 + 24  # a slot's buffer plus its struct io_tlb_slot, both gone from MemTotal

CHECKER_OPTIONS = {
    "program": {"type": "str", "required": True},
    "unit": {"type": "str", "required": True},
    "program_path": {"type": "path", "default": "/usr/local/lib/edgeslim/edgeslim-boot-commit"},
    "unit_path": {"type": "path", "default": "/etc/systemd/system/edgeslim-boot-commit.service"},
    "state_dir": {"type": "path", "default": "/var/lib/edgeslim"},
    "boot_id_command": {"type": "list", "elements": "str", "default": ["cat", "/proc/sys/kernel/random/boot_id"]},
}
# Health checks of a layer (boot.checks.<layer>) the checker runs at boot besides the layer's own. ``management``
# (default true) requires the management path the engine observed at arm time (hostguards.management_path) back
# within ``management_wait`` seconds; the checker's MANAGEMENT_WAIT and MANAGEMENT_WAIT_MAX are the same numbers.
CHECK_TYPES = {"units_active": list, "command": str, "timeout": (int, float), "management": bool,
               "management_wait": (int, float)}  # fmt: skip
MANAGEMENT_WAIT = 60
MANAGEMENT_WAIT_MAX = 180
SWIOTLB_OPTIONS = {
    "slots": {"type": "int", "required": True},
    "debugfs_path": {"type": "path", "default": tlb.DEBUGFS_PATH},
    "max_boots": {"type": "int", "default": 3},
}
CARVEOUTS_OPTIONS = {
    "recipes": {"type": "list", "elements": "str", "required": True},
    "fdt_method": {"type": "str", "default": "auto", "choices": ["auto", "overlays", "merged"]},
    "overlay_path": {"type": "path", "default": "/boot/edgeslim/carveouts.dtbo"},
    "merged_fdt_path": {"type": "path", "default": "/boot/edgeslim/kernel-carveouts.dtb"},
    "fdt": {"type": "str"},
    "dtc": {"type": "list", "elements": "str", "default": ["dtc"]},
    "fdtoverlay": {"type": "list", "elements": "str", "default": ["fdtoverlay"]},
    "dtbo_b64": {"type": "str"},
    "overlaid_b64": {"type": "str"},
    "merged_b64": {"type": "str"},
    "max_boots": {"type": "int", "default": 3},
}
BOOT_OPTIONS = {
    "settings": {"type": "dict"},  # controller side (the action plugin), refused on the device
    "cache_dir": {"type": "path", "default": "~/.cache/edgeslim/overlays"},  # controller side
    "extlinux_path": {"type": "path", "default": "/boot/extlinux/extlinux.conf"},
    "root": {"type": "path", "default": "/"},
    "boot_root": {"type": "path", "default": "/boot"},
    "managed_label": {"type": "str", "default": "edgeslim"},
    "managed_menu_label": {"type": "str", "default": xe.MANAGED_MENU_LABEL},
    "backup": {"type": "bool", "default": True},
    "backup_keep": {"type": "int", "default": 3},
    **l4t.IDENTITY_OPTIONS,
    "cmdline_path": {"type": "path", "default": "/proc/cmdline"},
    "measure_in_container": {"type": "bool", "default": False},
    "swiotlb": {"type": "dict", "options": SWIOTLB_OPTIONS},
    "carveouts": {"type": "dict", "options": CARVEOUTS_OPTIONS},
    "checker": {"type": "dict", "options": CHECKER_OPTIONS},
    "checks": {"type": "dict", "default": {}},
    "sign_command": {"type": "list", "elements": "str", "default": []},
    # auto: a trial boot by kexec where the device can (trial_boot.py), DEFAULT switched by the checker on the trial
    # boot; none: DEFAULT switched by apply. The action plugin sets auto only when its caller reboots right after.
    "trial": {"type": "str", "default": "none", "choices": ["auto", "none"]},
    "trial_panic_seconds": {"type": "int", "default": tb.PANIC_SECONDS},
}


class BootFailure(Exception):
    def __init__(self, msg: str, stage: str, **extra: Any) -> None:
        super().__init__(msg)
        self.msg, self.stage, self.extra = msg, stage, extra


def selected(b: dict[str, Any]) -> list[str]:
    return [layer for layer in LAYERS if b.get(layer) is not None]


def check_boot_input(b: dict[str, Any]) -> None:
    """Bad input refused before anything is read or changed."""
    if b["settings"] is not None:
        raise BootFailure("boot.settings are resolved on the controller: run edgeslim.jetson.engine as a task", "input")
    if not selected(b):
        raise BootFailure("boot: name at least one boot layer (swiotlb, carveouts)", "input")
    if b["backup_keep"] < 1:
        raise BootFailure(f"boot.backup_keep must be at least 1, got {b['backup_keep']}", "input")
    check_health_checks(b["checks"])
    refused = sg.check_command(b["sign_command"])
    if refused:
        raise BootFailure(refused, "input")
    for layer in selected(b):
        if b[layer]["max_boots"] < 1:
            raise BootFailure(f"boot.{layer}.max_boots must be at least 1, got {b[layer]['max_boots']}", "input")
    if b["swiotlb"] is not None:
        try:
            x.check_kernel_arg("swiotlb", str(b["swiotlb"]["slots"]))
        except x.ExtlinuxError as exc:
            raise BootFailure(str(exc), "input") from exc
    c = b["carveouts"]
    if c is not None:
        if not c["recipes"]:
            raise BootFailure("boot.carveouts.recipes is empty: name the recipes to disable", "input")
        if not os.path.isabs(c["overlay_path"]) or not c["overlay_path"].endswith(".dtbo"):
            raise BootFailure(f"boot.carveouts.overlay_path must be absolute and end in .dtbo: {c['overlay_path']}",
                              "input")  # fmt: skip
        if not os.path.isabs(c["merged_fdt_path"]) or not c["merged_fdt_path"].endswith(".dtb"):
            raise BootFailure(f"boot.carveouts.merged_fdt_path must be absolute and end in .dtb: "
                              f"{c['merged_fdt_path']}", "input")  # fmt: skip
        for name in ("dtbo_b64", "overlaid_b64", "merged_b64"):
            if c[name] is not None:
                decode(c, name)


def check_health_checks(checks: dict[str, Any]) -> None:
    """boot.checks: layer -> {units_active: [unit, ...], command: shell command, timeout: seconds > 0}."""
    for layer, spec in checks.items():
        if layer not in LAYERS or not isinstance(spec, dict):
            raise BootFailure(f"boot.checks.{layer}: expected one of {list(LAYERS)} with a mapping of checks", "input")
        for key, value in spec.items():
            kind = CHECK_TYPES.get(key)
            if kind is None or not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise BootFailure(f"boot.checks.{layer}.{key} refused: {value!r} (units_active is a list of units, "
                                  "command a shell command, timeout seconds, management true or false, "
                                  "management_wait seconds)", "input")  # fmt: skip
        if not all(isinstance(u, str) and u for u in spec.get("units_active", [])):
            raise BootFailure(f"boot.checks.{layer}.units_active must name units", "input")
        if "timeout" in spec and spec["timeout"] <= 0:
            raise BootFailure(f"boot.checks.{layer}.timeout must be a positive number of seconds", "input")
        if "management_wait" in spec and not 0 < spec["management_wait"] <= MANAGEMENT_WAIT_MAX:
            raise BootFailure(f"boot.checks.{layer}.management_wait must be more than 0 and at most "
                              f"{MANAGEMENT_WAIT_MAX} s (the checker unit's TimeoutStartSec covers it)",
                              "input")  # fmt: skip


def decode(c: dict[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(c[name], validate=True)
    except ValueError as exc:
        raise BootFailure(f"boot.carveouts.{name} is not base64: {exc}", "input") from None


def host_path(b: dict[str, Any], path: str) -> str:
    """A path named in extlinux.conf (absolute on the device) under ``root``."""
    return os.path.join(b["root"], path.lstrip("/"))


def device_identity(b: dict[str, Any]) -> dict[str, Any]:
    """Chip, module and L4T release, as edgeslim.jetson.jetson_info reads them (what layer_refusals takes as info)."""
    root = b["devicetree_path"]
    try:
        compatible = dt.compatible_of(root) if os.path.isdir(root) else []
    except (dt.DeviceTreeError, OSError) as exc:
        raise BootFailure(f"device tree at {root}: {exc}", "plan") from exc
    ident = l4t.identify(compatible)
    info: dict[str, Any] = {"soc": ident["soc"] or "", "module": {k: ident[k] for k in ("module", "product")}}
    text = read_text(b["release_path"])
    if text is not None:
        with contextlib.suppress(l4t.L4TError):
            info["l4t"] = l4t.parse_nv_tegra_release(text)
    info["secure_boot"] = secure_boot(b)
    return info


def secure_boot(b: dict[str, Any]) -> bool | None:
    """UEFI Secure Boot from efivarfs (None: no variable, or unreadable)."""
    try:
        efivars = b.get("efivars_path") or l4t.IDENTITY_OPTIONS["efivars_path"]["default"]
        with open(os.path.join(efivars, l4t.SECURE_BOOT_VAR), "rb") as handle:
            data: bytes | None = handle.read()
    except OSError:
        data = None
    return l4t.secure_boot_state(data)[0]


def boot_space(path: str) -> dict[str, Any]:
    directory = os.path.dirname(path) or "."
    try:
        st = os.statvfs(directory)
    except OSError as exc:
        return {"path": directory, "free_mb": None, "total_mb": None, "error": exc.strerror}
    return {
        "path": directory,
        "free_mb": round(st.f_bavail * st.f_frsize / 1048576, 1),
        "total_mb": round(st.f_blocks * st.f_frsize / 1048576, 1),
    }


def edit_params(b: dict[str, Any], journal_path: str, layer: str, **edit: Any) -> dict[str, Any]:
    """edgeslim.jetson.extlinux's options for this layer's part of the one edit (extlinux_edit takes them)."""
    p = {"path": b["extlinux_path"], "root": b["root"], "state": "present", "managed_label": b["managed_label"],
         "managed_menu_label": b["managed_menu_label"], "clone_from": None, "label": None, "kernel_args": {},
         "kernel_args_absent": [], "fdt": None, "overlays": None, "overlays_keep_existing": False,
         "make_default": False, "backup": b["backup"], "backup_keep": b["backup_keep"],
         "journal_path": journal_path, "journal_layer": layer}  # fmt: skip
    p.update(edit)
    return p


def plan_boot(b: dict[str, Any], journal_path: str) -> dict[str, Any]:
    """Everything the boot layers would do, read-only (see the module docstring). Raises BootFailure(stage=plan) for a
    device or file the layers cannot be applied to."""
    layers = selected(b)
    path = b["extlinux_path"]
    try:
        before = xe.read_conf(path)
        conf = x.parse_extlinux(before, path)
        doc = j.load_journal(journal_path)
    except OSError as exc:
        raise BootFailure(f"cannot read {path}: {exc.strerror}", "plan") from exc
    except (x.ExtlinuxError, j.JournalError) as exc:
        raise BootFailure(str(exc), "plan") from exc
    info = device_identity(b)
    out: dict[str, Any] = {"layers": layers, "device": info, "boot_space": boot_space(path)}
    out["extlinux"] = {"path": path, "summary": conf.summary(), "previous_default": conf.default_label}
    probe_p = edit_params(b, journal_path, layers[0])
    journaled = {layer: j.get_layer(doc, layer) for layer in layers}
    sharers = xe.sharing_layers(doc, probe_p)
    try:
        stock = next((r["previous_default"] for r in journaled.values() if r and r.get("previous_default")), None)
        stock = stock or xe.stock_label(conf, probe_p, sharers)
    except (x.ExtlinuxError, j.JournalError) as exc:
        raise BootFailure(str(exc), "plan") from exc
    out["extlinux"]["stock_default"] = stock
    files: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    # The entry made or made DEFAULT now: every layer's part takes effect with it (each is armed).
    shared = conf.entry(b["managed_label"]) is None or conf.default_entry().label != b["managed_label"]
    try:
        if "swiotlb" in layers:
            out["swiotlb"] = plan_swiotlb(b)
            p = edit_params(b, journal_path, "swiotlb", kernel_args={"swiotlb": str(b["swiotlb"]["slots"])})
            results["swiotlb"] = one_edit(conf, p, journaled["swiotlb"], sharers, stock, [])
        if "carveouts" in layers:
            out["carveouts"], cfiles, edit = plan_carveouts(b, conf, journaled["carveouts"], stock, info)
            files.extend(cfiles)
            p = edit_params(b, journal_path, "carveouts", **edit)
            # The boot files this apply installs before it writes the entry.
            assume = [b["carveouts"]["overlay_path"], b["carveouts"]["merged_fdt_path"]]
            results["carveouts"] = one_edit(conf, p, journaled["carveouts"], sharers, stock, assume)
        conf.set_global("DEFAULT", b["managed_label"])
    except (x.ExtlinuxError, ov.OverlayError, j.JournalError) as exc:
        raise BootFailure(str(exc), "plan") from exc
    after = conf.render()
    changed = after != before
    out["trial"] = plan_trial(b, conf, stock, info.get("secure_boot"))
    if out["trial"]["mode"] == "kexec" and stock:
        # DEFAULT stays on the stock entry: the checker makes the managed entry DEFAULT on the trial boot, once its
        # checks pass; a trial that never reaches userspace comes back on the stock entry by itself.
        conf.set_global("DEFAULT", stock)
        after = conf.render()
    out["extlinux"].update(changed=changed, before=before, after=after, entry=b["managed_label"],
                           after_summary=conf.summary())  # fmt: skip
    out["edits"] = results
    out["files"] = files
    out["changes"] = out["extlinux"]["changed"] or any(f["changed"] for f in files)
    own = {layer: results[layer]["own_changed"] for layer in layers}
    if "carveouts" in layers:
        own["carveouts"] = own["carveouts"] or any(f["changed"] for f in files)
    # A change of the file that is no layer's own (the MENU LABEL) counts for every layer.
    shared = shared or (out["extlinux"]["changed"] and not any(own.values()))
    out["changed_layers"] = [layer for layer in layers if out["changes"] and (shared or own[layer])]
    out["signing"] = signing_plan(b, out, files)
    return out


def plan_trial(
    b: dict[str, Any], conf: x.ExtlinuxConfig, stock: str | None, secure_boot: bool | None
) -> dict[str, Any]:
    """How the next boot tries the managed entry: ``kexec`` (trial boot, DEFAULT kept on the stock entry) or
    ``none`` (DEFAULT switched now), with the reason for none."""
    sup = tb.support()
    out: dict[str, Any] = {"mode": "none", "reason": "", "kexec_available": sup["available"]}
    if b["trial"] == "none":
        out["reason"] = "no reboot follows in this run: the next boot, whenever it comes, checks the entry"
    elif not sup["available"]:
        out["reason"] = sup["reason"]
    elif secure_boot:
        # kexec skips L4TLauncher's signature checks of the entry's files: not a trial of what the firmware boots.
        out["reason"] = "UEFI Secure Boot is on: kexec would boot the entry's files without the firmware's checks"
    elif not stock or stock == b["managed_label"]:
        out["reason"] = "no stock entry to come back to"
    else:
        try:
            load = tb.plan(conf, b["managed_label"], stock, read_text(b["cmdline_path"]) or "")
        except tb.TrialError as exc:
            out["reason"] = str(exc)
        else:
            out.update(mode="kexec", kexec=sup["kexec"], load=load, panic_seconds=b["trial_panic_seconds"])
    return out


def signing_plan(b: dict[str, Any], out: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, Any]:
    """Which of the files this apply writes the hook signs: the file the managed entry boots -- the overlay (OVERLAYS
    method) or the merged DTB (merged method; its overlay is an input no bootloader reads, as is the overlay's
    source) -- then extlinux.conf. Only under Secure Boot: L4TLauncher checks ``<file>.sig`` only then
    [EDK2-L4TLAUNCHER], and a configured hook is not run on a device that does not need it."""
    c = b["carveouts"]
    boot_files = set()
    if c:
        merged = out["carveouts"]["method"] == "merged"
        boot_files.add(host_path(b, c["merged_fdt_path"] if merged else c["overlay_path"]))
    writes = [f for f in files if f["changed"] and (f["data"] is not None or f.get("pending"))]
    written = [f["path"] for f in writes if f["path"] in boot_files]
    if out["extlinux"]["changed"]:
        written.append(out["extlinux"]["path"])
    secure_boot = out["device"].get("secure_boot") is True
    active = secure_boot and bool(b["sign_command"])
    return {"secure_boot": secure_boot, "hook": bool(b["sign_command"]), "active": active,
            "files": written if active else []}  # fmt: skip


def public(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan as the module returns it: no file contents, no full texts (the diff carries those)."""
    out = {k: v for k, v in plan.items() if k not in ("edits", "files", "extlinux")}
    out["extlinux"] = {k: v for k, v in plan["extlinux"].items() if k not in ("before", "after")}
    out["files"] = [{k: v for k, v in f.items() if k != "data"} for f in plan["files"]]
    return out


def plan_record(status: str, plan: dict[str, Any], layer: str) -> dict[str, Any]:
    """A boot layer's record before its reboot (docs/report.md): measured by MemTotal after the boot; ``staged``
    means written and armed, waiting for the reboot (the action plugin says pending_reboot when none is allowed)."""
    ext = plan["extlinux"]
    details: dict[str, Any] = {"entry": ext["entry"], "previous_default": ext["stock_default"],
                               "check_mode": status == "planned"}  # fmt: skip
    if "trial" in plan:
        details.update(trial=plan["trial"]["mode"], trial_reason=plan["trial"]["reason"])
    attributed = None
    if layer == "swiotlb":
        t = plan["swiotlb"]
        use = t["use"]
        details.update(
            slots=t["slots"],
            previous_slots=t["previous_slots"],
            size_mib=t["slots"] * 2048 // 1048576,
            kernel_slots=t["kernel_slots"],
            usage={
                "peak_slots": use["peak_slots"],
                "peak_source": use["peak_source"],
                "pool_slots": use["pool_slots"],
                "forced_below": use["peak_slots"] is not None and t["slots"] < use["peak_slots"],
                "notes": use["warnings_list"],
            },
        )
        attributed = t["attributed_mb"]
    else:
        c = plan["carveouts"]
        details.update(method=c["method"], nodes=c["paths"], targets=c["targets"], base_fdt=c["base_fdt"],
                       kept_overlays=c["kept_overlays"])  # fmt: skip
    return layer_record(status, "MemTotal", details, attributed_mb=attributed)


def extlinux_diff(plan: dict[str, Any]) -> list[dict[str, str]]:
    """The one extlinux.conf edit, and under Secure Boot the files the signing hook signs."""
    ext = plan["extlinux"]
    out = []
    if ext["changed"]:
        out.append({"before": ext["before"], "after": ext["after"], "before_header": ext["path"],
                    "after_header": ext["path"]})  # fmt: skip
    files = plan["signing"]["files"]
    if files:
        out.append({"prepared": "UEFI Secure Boot: boot.sign_command signs " + ", ".join(files) + "\n"})
    return out


def one_edit(
    conf: x.ExtlinuxConfig, p: dict, journaled: dict | None, sharers: list[str], stock: str, assume: list[str]
) -> dict[str, Any]:
    """One layer's part of the edit on ``conf``; its result carries what its journal record needs."""
    result: dict[str, Any] = {"previous_default": conf.default_label, "stock_default": stock, "params": p}
    label = xe.edit_present(conf, p, journaled, sharers, result, assume)
    result["own_changed"] = xe.owned_values(conf, conf.require(label), p) != result["owned_before"]
    return result


def plan_swiotlb(b: dict[str, Any]) -> dict[str, Any]:
    s = b["swiotlb"]
    cmdline = (read_text(b["cmdline_path"]) or "").strip()
    try:
        use = tlb.pool_use(s["debugfs_path"], cmdline, os.uname().release, read_text(tlb.CPU_POSSIBLE_PATH) or "",
                           requested_slots=s["slots"])  # fmt: skip
    except tlb.SwiotlbError as exc:
        raise BootFailure(str(exc), "plan") from exc
    running = l4t.swiotlb_setting(cmdline)
    from_slots = (running or {}).get("slots") or DEFAULT_SWIOTLB_SLOTS
    return {
        "slots": s["slots"],
        "use": use,
        "configured": running,
        "previous_slots": from_slots,
        "kernel_slots": use["expected_slots"],
        "attributed_mb": round((from_slots - use["expected_slots"]) * SLOT_COST_BYTES / 1048576, 1),
    }


def plan_carveouts(
    b: dict[str, Any], conf: x.ExtlinuxConfig, journaled: dict | None, stock: str, info: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """The overlay plan, the FDT the managed entry boots, the boot files and the layer's part of the edit."""
    c = b["carveouts"]
    method = resolve_fdt_method(c["fdt_method"], info.get("l4t"))
    if method["error"]:
        raise BootFailure(f"{method['error']} [EDK2-L4TLAUNCHER-OVERLAYS]", "plan")
    merged = method["method"] == "merged"
    for name in ("overlay_path", "merged_fdt_path"):
        ov.confine(host_path(b, c[name]), host_path(b, b["boot_root"]), name)
    plan = ov.plan(b["devicetree_path"], c["recipes"])
    dts = ov.render_dts(plan)
    managed = conf.entry(b["managed_label"])
    stock_entry = conf.entry(stock)
    stock_fdt = (conf.get(stock_entry, "FDT") if stock_entry else None) or c["fdt"] or ""
    managed_fdt = conf.get(managed, "FDT") if managed else None
    # A managed FDT that is our merged DTB is a previous merged run's output, never a base.
    if not managed_fdt or managed_fdt == c["merged_fdt_path"]:
        managed_fdt = ""
    base_fdt = stock_fdt if (merged or not managed_fdt) else managed_fdt
    if not base_fdt:
        raise BootFailure(f"neither the managed nor the stock extlinux entry ({stock}) has an FDT line, so the "
                          "kernel DTB comes from the kernel-dtb partition and L4TLauncher would ignore OVERLAYS "
                          "[EDK2 L4TLauncher]; set carveouts_fdt to the board's /boot/dtb/kernel_*.dtb",
                          "plan")  # fmt: skip
    entry = managed or stock_entry or conf.default_entry()
    kept = [o for o in xe.existing_overlays(conf, entry, journaled) if o != c["overlay_path"]]
    if merged and kept and resolve_fdt_method("overlays", info.get("l4t"))["error"] is not None:
        raise BootFailure(f"the boot entry lists OVERLAYS {','.join(kept)}, but L4TLauncher of this L4T release "
                          "ignores OVERLAYS (from R36.2 on only) [EDK2-L4TLAUNCHER-OVERLAYS]: merging them into the "
                          "DTB would boot hardware changes this device never booted. Remove the OVERLAYS line from the "
                          "entry (or merge them into its FDT yourself) and run again", "plan")  # fmt: skip
    if merged and base_fdt == c["merged_fdt_path"]:
        raise BootFailure(f"the stock entry's FDT is carveouts_merged_fdt_path itself ({base_fdt}): set "
                          "carveouts_fdt to the board's /boot/dtb/kernel_*.dtb, or carveouts_merged_fdt_path to "
                          "another file", "plan")  # fmt: skip
    out = {"method": method["method"], "chip": plan.chip, "module": plan.module, "dts": dts,
           "dts_sha256": hashlib.sha256(dts.encode()).hexdigest(), "targets": [t.as_dict() for t in plan.targets],
           "paths": plan.paths, "pending": plan.pending, "base_fdt": base_fdt, "kept_overlays": kept}  # fmt: skip
    files = carveouts_files(b, c, plan, dts, merged, base_fdt, kept, out)
    edit = {"fdt": c["merged_fdt_path"] if merged else base_fdt,
            "overlays": [] if merged else [c["overlay_path"]], "overlays_keep_existing": not merged}  # fmt: skip
    return out, files, edit


def carveouts_files(
    b: dict[str, Any], c: dict[str, Any], plan: ov.Plan, dts: str, merged: bool, base_fdt: str, kept: list[str],
    out: dict[str, Any],
) -> list[dict[str, Any]]:  # fmt: skip
    """The boot files: the overlay and its source, the merged DTB (merged) or the removal of an earlier one.
    ``data`` None = remove; ``pending`` = its bytes come from the controller (probe: not compiled yet)."""
    overlay = host_path(b, c["overlay_path"])
    source = overlay[: -len(".dtbo")] + ".dts"
    merged_path = host_path(b, c["merged_fdt_path"])
    blob = decode(c, "dtbo_b64") if c["dtbo_b64"] else None
    if blob is not None:
        ov.verify_overlay(blob, plan)
    files = [
        file_change(source, dts.encode("utf-8")),
        file_change(overlay, blob) if blob is not None else pending_file(overlay, source, dts),
    ]
    base = ov.read(host_path(b, base_fdt))
    if merged:
        if base is None:
            raise BootFailure(f"fdt {base_fdt}: no such file (the board's kernel DTB to merge into)", "plan")
        missing = [o for o in kept if not os.path.isfile(host_path(b, o))]
        if missing:
            raise BootFailure(f"overlays {missing}: no such file (the entry's overlays to keep in the merge)", "plan")
        # For the controller's fdtoverlay: the base and the entry's overlays, in their OVERLAYS order.
        out["merge_inputs_b64"] = {
            "base": base64.b64encode(base).decode(),
            "overlays": [base64.b64encode(ov.read(host_path(b, o)) or b"").decode() for o in kept],
        }
        if c["merged_b64"]:
            overlaid = base
            if kept:
                if not c["overlaid_b64"]:
                    raise BootFailure("merged_b64 with the entry's overlays needs overlaid_b64 (the FDT with those "
                                      "overlays applied), to check the merged DTB against", "input")  # fmt: skip
                overlaid = decode(c, "overlaid_b64")
                ov.verify_overlaid(base, overlaid)
            merged_blob = decode(c, "merged_b64")
            ov.verify_merged(overlaid, merged_blob, plan)
            files.append(file_change(merged_path, merged_blob))
        else:
            current = ov.read(merged_path)
            files.append({"path": merged_path, "data": None, "pending": True, "changed": True,
                          "exists": current is not None})  # fmt: skip
    elif os.path.exists(merged_path):
        files.append(file_change(merged_path, None))
    return files


def file_change(path: str, data: bytes | None) -> dict[str, Any]:
    current = ov.read(path)
    return {"path": path, "data": data, "changed": current != data, "exists": current is not None}


def pending_file(overlay: str, source: str, dts: str) -> dict[str, Any]:
    """The overlay before the controller compiled it: unchanged when both it and the same source are installed (the
    controller's dtc makes the same bytes from the same source; apply checks the bytes)."""
    same = ov.read(source) == dts.encode("utf-8") and os.path.exists(overlay)
    return {"path": overlay, "data": None, "pending": True, "changed": not same, "exists": os.path.exists(overlay)}


# ---- apply --------------------------------------------------------------------------------------------------------
def management_check(given: dict[str, Any], path: dict[str, Any]) -> dict[str, Any] | bool:
    """The record's ``checks.management``: the observed path with its wait; ``{skipped: why}`` when the device had
    no network path at arm time; false when ``boot.checks.<layer>.management`` is false."""
    if given.get("management") is False:
        return False
    if "skipped" in path:
        return {"skipped": path["skipped"]}
    return {**path, "wait": given.get("management_wait", MANAGEMENT_WAIT)}


def pending_record(b: dict[str, Any], layer: str, plan: dict[str, Any], management: dict[str, Any]) -> dict[str, Any]:
    """What the checker reads at boot. ``management``: hostguards.management_path at arm time. The managed label is
    recorded so that a revert whose previous label is gone never picks the managed entry."""
    settings = b[layer]
    given = dict(b["checks"].get(layer) or {})
    checks: dict[str, Any] = {"units_active": [], "command": "",
                              **{k: v for k, v in given.items() if k not in ("management", "management_wait")},
                              "management": management_check(given, management)}  # fmt: skip
    if layer == "swiotlb":
        checks.update(cmdline_contains=[f"swiotlb={settings['slots']}"], kernel_log_absent=["swiotlb buffer is full"])
    else:
        checks.update(dt_disabled=plan["carveouts"]["paths"], dt_root=b["devicetree_path"])
    record = {
        "layer": layer,
        "extlinux_path": b["extlinux_path"],
        "previous_default": plan["extlinux"]["stock_default"],
        "managed_label": b["managed_label"],
        "boots": 0,
        "max_boots": settings["max_boots"],
        "checks": checks,
        "boot_id_command": b["checker"]["boot_id_command"],
        # The checker signs extlinux.conf again when it reverts it at boot (Secure Boot only, as apply).
        "sign_command": list(b["sign_command"]) if plan["signing"]["active"] else [],
        "created": j.utc_now(),
    }
    trial = plan.get("trial") or {}
    if trial.get("mode") == "kexec":
        # The checker commits (DEFAULT -> label) on the boot whose command line carries the marker, and reports
        # trial_failed on a boot without it (the device came back on the stock entry).
        record["trial"] = {"marker": tb.marker(trial["id"]), "label": b["managed_label"],
                           "stock": plan["extlinux"]["stock_default"]}  # fmt: skip
    return record


class Undo:
    """What this apply changed, in order, to put back on an error (never raises; says what it could not do)."""

    def __init__(self, b: dict[str, Any], journal_path: str, replace: Callable[[str, str], None]) -> None:
        self.b, self.journal_path, self.replace = b, journal_path, replace
        self.journal: dict[str, dict | None] = {}  # layer -> record before this run
        self.files: list[tuple[str, str | None]] = []  # installed path, its previous copy (None: it was absent)
        self.pending: list[str] = []
        self.checker_installed = False
        self.extlinux: tuple[str, str, int] | None = None  # path, text before this run, mode: once it was written
        self.restored: list[str] = []  # the files put back as they were (not those removed)
        self.kexec: list[str] | None = None  # argv that unloads the trial kernel, once it was loaded
        self.command: Callable[[list[str]], tuple[int, str, str]] | None = None

    def run(self, run: Callable[[list[str], bool], tuple[int, str, str]]) -> dict[str, Any]:
        errors: list[str] = []
        if self.kexec is not None and self.command is not None:
            rc, _out, err = self.command(self.kexec)
            if rc != 0:
                errors.append(f"{' '.join(self.kexec)}: rc {rc} {err.strip()}")
        if self.extlinux is not None:
            path, before, mode = self.extlinux
            try:
                ov.install(path, before.encode("utf-8"), self.replace, mode)
                self.restored.append(path)
            except OSError as exc:
                errors.append(f"{path}: {exc}")
        for path, previous in reversed(self.files):
            try:
                if previous is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                else:
                    self.replace(previous, path)
                    self.restored.append(path)
            except OSError as exc:
                errors.append(f"{path}: {exc}")
        for path in self.pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self.pending or self.checker_installed:
            errors.extend(disarm_if_idle(self.b["checker"], run))
        for layer, record in self.journal.items():
            try:
                j.update_layer(self.journal_path, layer, lambda _old, rec=record: rec, replace=self.replace,
                               fallback=True)  # fmt: skip
            except (j.JournalError, OSError) as exc:
                errors.append(f"journal layer {layer}: {exc}")
        if errors:
            return {"restored": False, "restore_error": "; ".join(errors)}
        return {"restored": True, "restore_error": "", "restored_files": [path for path, _prev in self.files],
                "disarmed": [os.path.basename(path) for path in self.pending]}  # fmt: skip


def pending_dir(checker: dict[str, Any]) -> str:
    return os.path.join(checker["state_dir"], "pending")


def disarm_if_idle(checker: dict[str, Any], run: Callable[[list[str], bool], tuple[int, str, str]]) -> list[str]:
    """With no pending record left, the checker and its unit leave the device (apply's undo, the rollback)."""
    directory = pending_dir(checker)
    if os.path.isdir(directory) and any(f.endswith(".json") for f in os.listdir(directory)):
        return []
    errors = []
    if os.path.exists(checker["unit_path"]):
        rc, _out, err = run(["disable", os.path.basename(checker["unit_path"])], False)
        if rc != 0:
            errors.append(f"disabling the checker unit: {err.strip()}")
    for path in (checker["unit_path"], checker["program_path"]):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    run(["daemon-reload"], False)
    return errors


def write_json(path: str, doc: dict[str, Any], replace: Callable[[str, str], None], mode: int = 0o600) -> None:
    ov.install(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), replace, mode)


def arm(b: dict[str, Any], layer: str, plan: dict[str, Any], undo: Undo, replace: Callable[[str, str], None],
        run: Callable[[list[str], bool], tuple[int, str, str]], management: dict[str, Any]) -> str:  # fmt: skip
    """Install and enable the checker (when it differs), drop the layer's earlier verdict, write the pending record
    (fsynced). Returns the record's path."""
    ch = b["checker"]
    installed = False
    for path, text, mode in ((ch["program_path"], ch["program"], 0o755), (ch["unit_path"], ch["unit"], 0o644)):
        if ov.read(path) != text.encode("utf-8"):
            undo.checker_installed = undo.checker_installed or not os.path.exists(path)
            ov.install(path, text.encode("utf-8"), replace, mode)
            installed = True
    unit = os.path.basename(ch["unit_path"])
    if installed:
        run(["daemon-reload"], True)
    _rc, out, _err = run(["is-enabled", unit], False)
    if out.strip() != "enabled":
        run(["enable", unit], True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(ch["state_dir"], "boot-commit", f"{layer}.json"))
    record = os.path.join(pending_dir(ch), f"{layer}.json")
    os.makedirs(pending_dir(ch), mode=0o700, exist_ok=True)
    undo.pending.append(record)
    write_json(record, pending_record(b, layer, plan, management), replace)
    return record


def set_aside(path: str, replace: Callable[[str, str], None]) -> str | None:
    """Keep the current file as ``<path>.edgeslim-prev`` (a durable copy); None when there is none."""
    data = ov.read(path)
    if data is None:
        return None
    previous = path + PREVIOUS_SUFFIX
    ov.install(previous, data, replace, os.stat(path).st_mode & 0o7777)
    return previous


def apply_boot(
    b: dict[str, Any],
    journal_path: str,
    plan: dict[str, Any],
    replace: Callable[[str, str], None],
    warn: Callable[[str], None],
    run: Callable[[list[str], bool], tuple[int, str, str]],
    management: dict[str, Any],
    journaled: Callable[[], None] | None = None,
    command: Callable[[list[str]], tuple[int, str, str]] | None = None,
) -> dict[str, Any]:
    """Steps 1-4 of the module docstring for a ``plan`` with changes; returns what was done per layer.
    ``management``: the management path the checker requires (hostguards.management_path). ``journaled``: called
    once the journal is written, before the first change (the engine arms its deadline there); what it raises is
    restored like any other error (it should raise BootFailure). ``command``: runs an argv (rc, stdout, stderr), for
    ``kexec -l`` of a trial boot (``plan["trial"]``) after the boot files and the checker, before extlinux.conf."""
    pending = [f["path"] for f in plan["files"] if f.get("pending") and f["changed"]]
    if pending:
        raise BootFailure(f"the controller's compiled files are missing for {pending}: run edgeslim.jetson.engine as a "
                          "task (its action plugin compiles the overlay)", "input")  # fmt: skip
    signing = plan["signing"]
    if signing["secure_boot"] and not signing["hook"]:
        raise BootFailure(sg.SECURE_BOOT_REFUSAL, "plan")
    check_space(b, plan)
    undo = Undo(b, journal_path, replace)
    undo.command = command
    ext = plan["extlinux"]
    trial = plan.get("trial") or {"mode": "none"}
    if trial["mode"] == "kexec":
        if command is None:
            raise BootFailure("a trial boot needs a command runner for kexec", "input")
        trial["id"] = tb.new_id()
    done: dict[str, Any] = {"armed": [], "files": [], "extlinux_written": False, "signed": []}
    # Secure Boot off: the hook is not run even when configured -- L4TLauncher checks <file>.sig only under Secure
    # Boot, so there is nothing to keep valid, and a hook that fails must not block a device that boots unsigned.
    signer = sg.Signer(b["sign_command"]) if signing["active"] else None
    try:
        for layer in plan["changed_layers"]:
            res = plan["edits"][layer]
            carveouts_files = [f for f in plan["files"] if f["changed"]] if layer == "carveouts" else []
            update = journal_update_with_files(res, ext["before"], carveouts_files)
            old, _new = j.update_layer(journal_path, layer, update, replace=replace)
            undo.journal[layer] = old
        if journaled is not None:
            journaled()
        for f in plan["files"]:
            if not f["changed"]:
                continue
            previous = set_aside(f["path"], replace)
            undo.files.append((f["path"], previous))
            if f["data"] is None:
                os.unlink(f["path"])
            else:
                ov.install(f["path"], f["data"], replace)
            done["files"].append(f["path"])
            if signer and f["path"] in signing["files"]:
                signer.sign(f["path"])  # before arming: the files are signed before any boot could read them
        for layer in plan["changed_layers"]:
            arm(b, layer, plan, undo, replace, run, management)
            done["armed"].append(layer)
        if trial["mode"] == "kexec":
            done["trial"] = load_trial(b, trial, undo)
        if ext["changed"]:
            p = plan["edits"][plan["layers"][0]]["params"]
            mode = os.stat(ext["path"]).st_mode & 0o7777
            done["backup_file"] = xe.write_conf(p, ext["before"], ext["after"], lambda: None, replace, warn)
            undo.extlinux = (ext["path"], ext["before"], mode)
            done["extlinux_written"] = True
            if signer:
                signer.sign(ext["path"])
    except (BootFailure, x.ExtlinuxError, j.JournalError, ov.OverlayError, OSError, RunFailed, sg.SignError) as exc:
        sign_errors = signer.put_back() if signer else []
        restored = undo.run(run)
        if sign_errors:
            restored.update(restored=False, restore_error="; ".join(
                [e for e in (restored["restore_error"], *sign_errors) if e]))  # fmt: skip
        if signer and undo.restored:
            # What is back must verify again under Secure Boot; not strict, so the restore completes and reports.
            again = [path for path in undo.restored if path in signing["files"]]
            restored["sign_warnings"] = sg.resign(b["sign_command"], again, warn)
        msg = exc.msg if isinstance(exc, BootFailure) else str(exc)
        raise BootFailure(msg, "apply", changed=True, **restored) from exc
    if signer:
        signer.drop()
        done["signed"] = signer.signed
    return done


def check_space(b: dict[str, Any], plan: dict[str, Any]) -> None:
    """Refuse, before the first change, a file system that cannot take the new files, the previous copies set aside
    and extlinux.conf with its backup (a full /boot would otherwise stop the apply half way, to be restored)."""
    need: dict[int, list[Any]] = {}
    writes = [
        (f["path"], len(f["data"] or b"") + len(ov.read(f["path"]) or b"")) for f in plan["files"] if f["changed"]
    ]
    if plan["extlinux"]["changed"]:
        ext = plan["extlinux"]
        writes.append((ext["path"], len(ext["after"].encode()) + (len(ext["before"].encode()) if b["backup"] else 0)))
    writes.extend((path + sg.SIG_SUFFIX, 8192) for path in plan["signing"]["files"])  # a detached PKCS#7 is ~2 KiB
    for path, size in writes:
        directory = os.path.dirname(path)
        while not os.path.isdir(directory):
            directory = os.path.dirname(directory)
        st = os.statvfs(directory)
        entry = need.setdefault(st.f_fsid or hash(directory), [directory, 0, st.f_bavail * st.f_frsize])
        entry[1] += size + 4096  # a block of slack per file
    for directory, size, free in need.values():
        if size > free:
            raise BootFailure(f"not enough space for the boot layers' files in {directory}: {size} bytes needed, "
                              f"{free} free; nothing was changed -- free space in /boot and re-run",
                              "apply")  # fmt: skip


def journal_update_with_files(
    result: dict[str, Any], before: str, files: list[dict[str, Any]]
) -> Callable[[dict | None], dict | None]:
    """The layer's extlinux record (as edgeslim.jetson.extlinux journals it) plus ``boot_files``: each file this run
    replaces, with where its previous copy is kept (first record wins, like the rest of the record)."""
    base = xe.journal_update(result["params"], before, result)

    def update(old: dict | None) -> dict | None:
        new = base(old)
        if not files or new is None:
            return new
        recorded = dict(new.get("boot_files") or {})
        for f in files:
            recorded.setdefault(f["path"], f["path"] + PREVIOUS_SUFFIX if f["exists"] else None)
        return {**new, "boot_files": recorded}

    return update


class RunFailed(Exception):
    """A systemctl call of the arm step failed (raised by the caller's ``run`` when asked to check)."""


# ---- verify (after the reboot) ------------------------------------------------------------------------------------
def load_trial(b: dict[str, Any], trial: dict[str, Any], undo: Undo) -> dict[str, Any]:
    """``kexec -l`` the managed entry for the trial boot (the caller reboots with ``systemctl kexec``)."""
    try:
        tb.check_files(trial["load"], b["root"])
    except tb.TrialError as exc:
        raise BootFailure(str(exc), "apply") from exc
    argv = tb.argv(trial["kexec"], trial["load"], b["root"], trial["id"], trial["panic_seconds"])
    rc, _out, err = undo.command(argv)  # type: ignore[misc]
    if rc != 0:
        raise BootFailure(f"kexec -l of the managed entry failed (rc {rc}): {err.strip()[-300:]}", "apply")
    undo.kexec = [trial["kexec"], "-u"]
    return {"mode": "kexec", "id": trial["id"], "marker": tb.marker(trial["id"]), "argv": argv}


def state_dir(b: dict[str, Any]) -> str:
    return (b.get("checker") or {}).get("state_dir") or CHECKER_OPTIONS["state_dir"]["default"]


def read_verdict(b: dict[str, Any], layer: str) -> dict[str, Any]:
    """The checker's verdict for this boot (boot-commit/<layer>.json); ``no_verdict`` when there is none."""
    path = os.path.join(state_dir(b), "boot-commit", f"{layer}.json")
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        return {"status": "no_verdict", "failures": [f"no verdict in {path}"]}
    except (OSError, ValueError) as exc:
        return {"status": "no_verdict", "failures": [f"{path}: {exc}"]}
    return doc if isinstance(doc, dict) else {"status": "no_verdict", "failures": [f"{path}: not a JSON object"]}


def verify_swiotlb(b: dict[str, Any], kernel_log: str | None) -> tuple[dict[str, Any], list[str]]:
    """The running kernel against the request: swiotlb= on its command line, the pool it allocated (debugfs, else
    the kernel log), no "swiotlb buffer is full"."""
    s = b["swiotlb"]
    cmdline = (read_text(b["cmdline_path"]) or "").strip()
    log = l4t.swiotlb_from_log(kernel_log or "")
    try:
        use = tlb.pool_use(s["debugfs_path"], cmdline, os.uname().release, read_text(tlb.CPU_POSSIBLE_PATH) or "",
                           requested_slots=s["slots"], pool_log_mib=log["pool_mib"])  # fmt: skip
    except tlb.SwiotlbError as exc:
        return {"error": str(exc)}, [str(exc)]
    running = l4t.swiotlb_setting(cmdline)
    problems = []
    if (running or {}).get("slots") != s["slots"]:
        problems.append(f"/proc/cmdline carries swiotlb={(running or {}).get('raw') or 'nothing'}, expected "
                        f"{s['slots']}")  # fmt: skip
    if not use.get("accepted"):
        pool = use["pool_slots"] if use["pool_slots"] is not None else f"{log['pool_mib']} MiB"
        problems.append(f"pool is {pool}, expected {use['expected_slots']} slots for swiotlb={s['slots']} "
                        f"({use['expected_rounding']}), or the pool size is not readable")  # fmt: skip
    if log["buffer_full"]:
        problems.append('kernel log reports "swiotlb buffer is full": the pool is too small for this device\'s DMA')
    return {"configured": running, "use": use, "log_pool_mib": log["pool_mib"]}, problems


def verify_carveouts(b: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The live device tree shows every planned node disabled."""
    try:
        plan = ov.plan(b["devicetree_path"], b["carveouts"]["recipes"])
    except ov.OverlayError as exc:
        return {"error": str(exc)}, [str(exc)]
    report = ov.disabled_report(b["devicetree_path"], plan.paths)
    problems = []
    if report["enabled"] or report["missing"]:
        problems.append(f"the live device tree does not show these nodes disabled: "
                        f"{report['enabled'] + report['missing']}")  # fmt: skip
    return {"nodes": plan.paths, "live": report}, problems


def verify_status(verdict: dict[str, Any], problems: list[str]) -> str:
    if verdict.get("status") != "committed":
        return "reverted"
    if any("container" in str(note) for note in verdict.get("notes") or []):
        return "unverified_container"  # the kernel (and its tree) are the host's: nothing of the change is seen
    return "failed" if problems else "applied"
