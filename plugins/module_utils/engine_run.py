# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run around the engine's layers, on the device: pre-flight, the report's snapshots and the wait for the
boot-commit checker's verdict (edgeslim.jetson.engine's probe and verify runs; the lock is module_utils/devlock.py and
the metrics file module_utils/metrics.py).

Pre-flight is the check of the ``edgeslim.jetson.preflight`` role with the same messages: a Jetson (the device tree
names a Tegra SoC) on a supported L4T major release, enough free space on the filesystem holding ``/boot``, and the
UEFI Secure Boot state (with Secure Boot on and no signing hook the boot layers are skipped with PREFLIGHT_SECURE_BOOT).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from ansible_collections.edgeslim.jetson.plugins.module_utils import devicetree as dt
from ansible_collections.edgeslim.jetson.plugins.module_utils import l4t
from ansible_collections.edgeslim.jetson.plugins.module_utils.memsnap import (
    boot_identity,
    build_snapshot,
    sample_meminfo,
    utc_now,
)

PREFLIGHT_OPTIONS = {
    "host": {"type": "str", "default": "this host"},
    "require_jetson": {"type": "bool", "default": True},
    "supported_l4t_majors": {"type": "list", "elements": "int", "default": [35, 36, 38, 39]},
    "boot_path": {"type": "path", "default": "/boot"},
    "boot_min_free_mb": {"type": "int", "default": 16},
    "sign_command": {"type": "list", "elements": "str"},
    **l4t.IDENTITY_OPTIONS,
}
# The reboot the action plugin makes itself after apply staged a boot layer (the module's ``reboot`` option, the
# action's defaults): ansible.builtin.reboot's timeout and boot-time command, and how long it waits for the device's
# verdict and, after a revert, for the device to answer again.
REBOOT_OPTIONS = {
    "timeout": {"type": "int", "default": 900},
    "boot_time_command": {"type": "str", "default": ""},
    "wait_timeout": {"type": "int", "default": 600},
}
WAIT_OPTIONS = {
    "layer": {"type": "str", "required": True, "choices": ["swiotlb", "carveouts"]},
    "timeout": {"type": "float", "default": 600},
    "interval": {"type": "float", "default": 2},
}
PREFLIGHT_SECURE_BOOT = (
    "UEFI Secure Boot is on, and L4TLauncher loads extlinux.conf, DTBs and overlays only with a detached <file>.sig "
    "made with a db key: an unsigned change would boot the fallback entry instead. Set "
    "edgeslim_secure_boot_sign_command (argv with {file}; it must write <file>.sig) to sign what the boot layers "
    "write, or leave swiotlb and carveouts out (slim_layers, or the profile)."
)


class PreflightRefused(Exception):
    def __init__(self, msg: str, info: dict[str, Any]) -> None:
        super().__init__(msg)
        self.msg, self.info = msg, info


def identify(pf: dict[str, Any]) -> dict[str, Any]:
    """What pre-flight decides on, read as edgeslim.jetson.jetson_info reads it."""
    root = pf["devicetree_path"]
    try:
        compatible = dt.compatible_of(root) if os.path.isdir(root) else []
        model = dt.model_of(root) if compatible else None
    except (dt.DeviceTreeError, OSError) as exc:
        raise PreflightRefused(f"device tree at {root}: {exc}", {}) from exc
    ident = l4t.identify(compatible)
    is_jetson, reason = l4t.jetson_verdict(ident, compatible, root)
    release, note = l4t.read_nv_tegra_release(pf["release_path"])
    try:
        with open(os.path.join(pf["efivars_path"], l4t.SECURE_BOOT_VAR), "rb") as handle:
            data: bytes | None = handle.read()
    except OSError:
        data = None
    info: dict[str, Any] = {"is_jetson": is_jetson, "reason": reason, "model": model or "", "soc": ident["soc"] or "",
                            "secure_boot": l4t.secure_boot_state(data)[0], "notes": [note] if note else []}  # fmt: skip
    if release is not None:
        info["l4t"] = release
    return info


def boot_free_mb(path: str) -> int:
    """Free kB under ``path`` as ``df --output=avail -k`` shows them, in whole MB (the role's arithmetic)."""
    st = os.statvfs(path)
    return (st.f_bavail * st.f_frsize // 1024) // 1024


def preflight(pf: dict[str, Any]) -> dict[str, Any]:
    """The checks of roles/preflight, read-only; PreflightRefused with the role's message."""
    info = identify(pf)
    host = pf["host"]
    if not info["is_jetson"] and pf["require_jetson"]:
        raise PreflightRefused(f"{host} is not a Jetson: {info['reason'] or 'unknown reason'}", info)
    major = (info.get("l4t") or {}).get("major") or 0
    if info["is_jetson"] and major not in pf["supported_l4t_majors"]:
        version = (info.get("l4t") or {}).get("version") or "unknown"
        majors = ", ".join(str(m) for m in pf["supported_l4t_majors"])
        raise PreflightRefused(f"L4T {version} on {host} is not supported (supported majors: {majors})", info)
    try:
        info["boot_free_mb"] = boot_free_mb(pf["boot_path"])
    except OSError as exc:
        raise PreflightRefused(f"cannot measure free space under {pf['boot_path']}: {exc.strerror}", info) from exc
    if info["boot_free_mb"] < pf["boot_min_free_mb"]:
        raise PreflightRefused(
            f"only {info['boot_free_mb']} MB free under {pf['boot_path']} on {host}; need {pf['boot_min_free_mb']} MB "
            "for backups, DTBs and overlays",
            info,
        )
    return info


def report_snapshot(module: Any, m: dict[str, Any]) -> dict[str, Any]:
    """A report snapshot (MemTotal, MemAvailable, boot identity): the median of ``m['samples']`` readings."""
    readings = sample_meminfo(m["meminfo_path"], m["samples"], m["interval"])
    return build_snapshot(readings, utc_now(), boot_identity(module, m["boot_id_command"]), {}, [], 0, False)


def brief(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What the fleet report publishes of a snapshot (roles/measure: edgeslim.memory.before/after)."""
    kb = snapshot["meminfo_kb"]
    return {"MemTotal_kb": kb["MemTotal"], "MemAvailable_kb": kb["MemAvailable"], "boot_id": snapshot["boot_id"]}


def wait_verdict(
    read: Callable[[], dict[str, Any]],
    boot_id: Callable[[], str],
    timeout: float,
    interval: float,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[dict[str, Any], bool]:
    """Wait (at most ``timeout`` s) for the checker's verdict of this boot, then -- when it reverted -- for its revert
    reboot, in one process. Returns (verdict, revert_pending): a verdict of ``no_verdict`` when none came;
    revert_pending true when the device reverted and has not rebooted yet (the reboot usually ends this process
    first: the caller treats a lost connection the same way)."""
    deadline = clock() + timeout
    verdict = read()
    while verdict.get("status") == "no_verdict" and clock() < deadline:
        sleep(interval)
        verdict = read()
    if verdict.get("status") == "no_verdict":
        verdict = {**verdict, "failures": [f"no verdict within {timeout:g} s", *(verdict.get("failures") or [])]}
        return verdict, False
    if verdict.get("status") != "reverted" or not verdict.get("boot_identity"):
        return verdict, False
    while True:
        try:
            if boot_id() != verdict["boot_identity"]:
                return verdict, False
        except Exception:  # pylint: disable=broad-exception-caught  # the device is going down for the revert reboot
            return verdict, True
        if clock() >= deadline:
            return verdict, True
        sleep(interval)
