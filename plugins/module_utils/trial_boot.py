# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The trial boot of the managed entry by kexec (docs/reliability.md, "Failures before userspace").

L4TLauncher has no boot-once and no per-label fallback [EDK2-L4TLAUNCHER]: it boots DEFAULT, and nothing else. So
apply writes the managed entry but leaves DEFAULT on the stock entry, loads the managed entry's kernel, initrd, FDT
and APPEND with ``kexec -l`` (APPEND with ``panic=<s>`` and the marker ``edgeslim.trial=<id>``), and the caller
reboots with ``systemctl kexec``. A kernel that panics before userspace resets the board after ``panic=`` seconds,
and the firmware boots DEFAULT: the stock entry. The checker (roles/boot_commit/files/edgeslim-boot-commit.py) then
finds no marker on /proc/cmdline and reports ``trial_failed``; on the trial boot it finds the marker and, when the
checks pass, makes the managed entry DEFAULT.

``support`` says whether this device can (a ``kexec`` binary, a kernel with kexec, not a container, kexec not
disabled); where it cannot, apply switches DEFAULT as before and the report says ``trial: none`` with the reason.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Any

from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x

MARKER_KEY = "edgeslim.trial"
PANIC_SECONDS = 10
KEXEC_SEARCH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
KEXEC_LOADED = "/sys/kernel/kexec_loaded"  # present when the kernel has CONFIG_KEXEC_CORE
KEXEC_DISABLED = "/proc/sys/kernel/kexec_load_disabled"
# Kernel lockdown (UEFI Secure Boot turns it on in many distributions) refuses kexec_load of an unsigned kernel.
LOCKDOWN = "/sys/kernel/security/lockdown"
CONTAINER_FILES = ("/run/.containerenv", "/.dockerenv")
OPTIONS = {
    "mode": {"type": "str", "default": "none", "choices": ["auto", "kexec", "none"]},
    "panic_seconds": {"type": "int", "default": PANIC_SECONDS},
}


class TrialError(Exception):
    pass


def in_container(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("container"):
        return True
    if any(os.path.exists(path) for path in CONTAINER_FILES):
        return True
    try:
        with open("/run/systemd/container", encoding="utf-8") as handle:
            return bool(handle.read().strip())
    except OSError:
        return False


def support(kexec_loaded: str = KEXEC_LOADED, kexec_disabled: str = KEXEC_DISABLED,
            container: bool | None = None, lockdown: str = LOCKDOWN) -> dict[str, Any]:  # fmt: skip
    """{"available": bool, "kexec": path or None, "reason": why not}: read-only, for the probe."""
    binary = shutil.which("kexec", path=KEXEC_SEARCH)
    if container if container is not None else in_container():
        return {"available": False, "kexec": binary, "reason": "a container runs the host's kernel: no kexec"}
    if binary is None:
        return {"available": False, "kexec": None, "reason": "no kexec binary (package kexec-tools)"}
    if not os.path.exists(kexec_loaded):
        return {"available": False, "kexec": binary,
                "reason": f"the running kernel has no kexec ({kexec_loaded} missing: CONFIG_KEXEC off)"}  # fmt: skip
    try:
        with open(kexec_disabled, encoding="utf-8") as handle:
            if handle.read().strip() not in ("", "0"):
                return {"available": False, "kexec": binary,
                        "reason": f"kexec is disabled ({kexec_disabled} is set)"}  # fmt: skip
    except OSError:
        pass
    try:
        with open(lockdown, encoding="utf-8") as handle:
            mode = next((w.strip("[]") for w in handle.read().split() if w.startswith("[")), "none")
    except OSError:
        mode = "none"
    if mode != "none":
        return {"available": False, "kexec": binary,
                "reason": f"kernel lockdown ({mode}) refuses kexec_load of an unsigned kernel"}  # fmt: skip
    return {"available": True, "kexec": binary, "reason": ""}


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def marker(trial_id: str) -> str:
    return f"{MARKER_KEY}={trial_id}"


def firmware_args(running: str, stock_append: str) -> list[str]:
    """The arguments the bootloader added to this boot (``${cbootargs}``: L4TLauncher's own): the running command
    line's tokens that the stock entry's APPEND does not carry, without an earlier trial's marker or panic=."""
    stock = set(x.split_cmdline(stock_append))
    out = []
    for token in x.split_cmdline(running):
        key = token.partition("=")[0]
        if token in stock or key in (MARKER_KEY, "panic") or token == "${cbootargs}":
            continue
        out.append(token)
    return out


def plan(conf: x.ExtlinuxConfig, label: str, stock: str | None, running_cmdline: str) -> dict[str, Any]:
    """What ``kexec -l`` needs from the managed entry (paths as extlinux.conf names them), or why it cannot: an
    entry with OVERLAYS (kexec loads one FDT; the firmware applies overlays, kexec does not) or without LINUX."""
    entry = conf.entry(label)
    if entry is None:
        raise TrialError(f"the managed entry {label!r} is not in extlinux.conf")
    if conf.get(entry, "OVERLAYS"):
        raise TrialError("the managed entry has OVERLAYS, which the firmware applies at boot and kexec cannot: no "
                         "trial boot (use the merged FDT method for a trial)")  # fmt: skip
    linux = conf.get(entry, "LINUX")
    if not linux:
        raise TrialError(f"the managed entry {label!r} has no LINUX")
    stock_entry = conf.entry(stock) if stock else None
    stock_append = (conf.get(stock_entry, "APPEND") or "") if stock_entry else ""
    append = [t for t in x.split_cmdline(conf.get(entry, "APPEND") or "") if t != "${cbootargs}"]
    return {
        "linux": linux,
        "initrd": conf.get(entry, "INITRD"),
        "fdt": conf.get(entry, "FDT"),
        "append": [*firmware_args(running_cmdline, stock_append), *append],
    }


def argv(kexec: str, loaded: dict[str, Any], root: str, trial_id: str, panic: int) -> list[str]:
    """``kexec -l`` for the planned entry, paths under ``root``; APPEND with panic= and the trial marker."""

    def under(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    cmdline = " ".join(t for t in loaded["append"] if t.partition("=")[0] not in ("panic", MARKER_KEY))
    cmdline = f"{cmdline} panic={panic} {marker(trial_id)}".strip()
    out = [kexec, "-l", under(loaded["linux"])]
    if loaded.get("initrd"):
        out.append(f"--initrd={under(loaded['initrd'])}")
    if loaded.get("fdt"):
        out.append(f"--dtb={under(loaded['fdt'])}")
    out.append(f"--append={cmdline}")
    return out


def check_files(loaded: dict[str, Any], root: str) -> None:
    for key in ("linux", "initrd", "fdt"):
        path = loaded.get(key)
        if path and not os.path.isfile(os.path.join(root, path.lstrip("/"))):
            raise TrialError(f"the managed entry's {key.upper()} {path} does not exist")
