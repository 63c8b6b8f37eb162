# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""L4T identity, module from compatible strings, SWIOTLB settings and kernel log lines (pure Python).

Sources: [OE4T machine confs; OE4T release notes] (nv_tegra_release format, compatible strings, JetPack table),
[KERNEL; SKILL-MEM] (SWIOTLB).
extlinux.conf is read by ``module_utils.extlinux`` (L4TLauncher's grammar).
"""

from __future__ import annotations

import re

from ansible_collections.edgeslim.jetson.plugins.module_utils.extlinux import get_cmdline_arg
from ansible_collections.edgeslim.jetson.plugins.module_utils.swiotlb import SLOT_BYTES

# The files that identify the device -- the live device tree, the L4T release, efivarfs for UEFI Secure Boot -- as
# options of the engine's pre-flight and boot layers (one argument spec for both; its DOCUMENTATION shares them too).
IDENTITY_OPTIONS = {
    "devicetree_path": {"type": "path", "default": "/sys/firmware/devicetree/base"},
    "release_path": {"type": "path", "default": "/etc/nv_tegra_release"},
    "efivars_path": {"type": "path", "default": "/sys/firmware/efi/efivars"},
}

# L4T release -> JetPack [OE4T release notes]
JETPACK = {
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "35.6.2": "5.1.5",
    "35.6.4": "5.1.6",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "36.4.7": "6.2.1",  # apt point update on top of 6.2.1 [AUDIT-AGX]
    "36.5.0": "6.2.2",
    "39.2.0": "7.2",
    "39.2.1": "7.2.1",
}
_JETPACK_SERIES = {"38.2": "7.0", "38.4": "7.1"}  # Thor-only releases

# Module part number -> (SoC, product) [OE4T machine confs]
MODULES = {
    "p3767-0000": ("t234", "Jetson Orin NX 16GB"),
    "p3767-0001": ("t234", "Jetson Orin NX 8GB"),
    "p3767-0003": ("t234", "Jetson Orin Nano 8GB"),
    "p3767-0004": ("t234", "Jetson Orin Nano 4GB"),
    "p3767-0005": ("t234", "Jetson Orin Nano 8GB (devkit module)"),
    "p3701-0000": ("t234", "Jetson AGX Orin"),
    "p3701-0004": ("t234", "Jetson AGX Orin 32GB"),
    "p3701-0005": ("t234", "Jetson AGX Orin 64GB"),
    "p3701-0008": ("t234", "Jetson AGX Orin Industrial 64GB"),
    "p3834-0000": ("t264", "Jetson AGX Thor T4000"),
    "p3834-0008": ("t264", "Jetson AGX Thor T5000"),
}
CARRIERS = {"p3768-0000": "Orin Nano/NX devkit carrier", "p3737-0000": "AGX Orin devkit carrier",
            "p4071-0000": "AGX Thor devkit carrier"}  # fmt: skip
SOCS = {"nvidia,tegra234": "t234", "nvidia,tegra264": "t264"}

_RELEASE = re.compile(r"^# R(\d+) \(release\), REVISION: (\d+)\.(\d+)")


class L4TError(ValueError):
    pass


def read_nv_tegra_release(path: str) -> tuple[dict | None, str | None]:
    """(release, None), or (None, why the release is unknown): a missing, unreadable, empty or foreign file is named."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None, (
            f"{path} is missing: the L4T release is unknown (not an L4T root file system, or the file was removed); "
            "release-dependent choices treat it as unknown"
        )
    except OSError as exc:
        return None, f"{path} cannot be read ({exc.strerror or exc}): the L4T release is unknown"
    if not text.strip():
        return None, f"{path} is empty: the L4T release is unknown"
    try:
        return parse_nv_tegra_release(text, path), None
    except L4TError as exc:
        return None, str(exc)


def parse_nv_tegra_release(text: str, path: str = "/etc/nv_tegra_release") -> dict:
    """First line: ``# R36 (release), REVISION: 4.7, GCID: ..., BOARD: ..., EABI: ..., DATE: ...``."""
    first = text.splitlines()[0] if text.strip() else ""
    m = _RELEASE.match(first)
    if not m:
        raise L4TError(f"{path}: first line is not an L4T release line: {first[:80]!r}")
    major, minor, patch = (int(x) for x in m.groups())
    fields = dict(re.findall(r"(\w+): ([^,]+)", first))
    extra = dict(re.findall(r"^(?:# )?(KERNEL_VARIANT|TARGET_USERSPACE_LIB_DIR\w*)[:=] ?(.+)$", text, re.M))
    version = f"{major}.{minor}.{patch}"
    return {
        "major": major,
        "minor": minor,
        "patch": patch,
        "version": version,
        "gcid": fields.get("GCID", "").strip() or None,
        "board": fields.get("BOARD", "").strip() or None,
        "date": fields.get("DATE", "").strip() or None,
        "kernel_variant": extra.get("KERNEL_VARIANT"),
        "jetpack": jetpack_for(version),
    }


def jetpack_for(version: str) -> str | None:
    if version in JETPACK:
        return JETPACK[version]
    return _JETPACK_SERIES.get(".".join(version.split(".")[:2]))


def identify(compatible: list[str]) -> dict:
    """SoC, module SKU and carrier from the root compatible list (most specific first)."""
    soc = next((SOCS[c] for c in compatible if c in SOCS), None)
    module = carrier = None
    for c in compatible:
        for part in re.findall(r"p\d{4}-\d{4}", c):
            if part in MODULES and module is None:
                module = part
            elif part in CARRIERS and carrier is None:
                carrier = part
    return {
        "soc": soc,
        "module": module,
        "product": MODULES[module][1] if module else None,
        "carrier": carrier,
        "super": any(c.endswith("-super") for c in compatible),
    }


_TLB = re.compile(r"software IO TLB: mapped \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] \((\d+)MB\)")


def jetson_verdict(ident: dict, compatible: list[str], root: str) -> tuple[bool, str]:
    """Whether the device is a Jetson (``identify`` found its SoC), else why not, for the device tree at ``root``."""
    if ident["soc"]:
        return True, ""
    if not compatible:
        return False, f"no device tree at {root} (not an OF platform, or not exposed)"
    return False, f"device tree compatible {compatible} names no NVIDIA Tegra SoC (tegra234/264)"


def swiotlb_from_log(log: str) -> dict:
    """Pool size from ``software IO TLB: mapped [mem a-b] (NMB)`` and whether the pool ever ran full."""
    matches = list(_TLB.finditer(log))
    m = matches[-1] if matches else None  # the last boot's line wins in a log with several
    return {
        "pool_mib": int(m.group(3)) if m else None,
        "buffer_full": "swiotlb buffer is full" in log,
    }


def swiotlb_setting(cmdline: str) -> dict | None:
    raw = get_cmdline_arg(cmdline, "swiotlb")
    if raw is False or raw is None:
        return None
    first = raw.split(",")[0]
    slots = int(first) if first.isdigit() else None
    return {"raw": raw, "slots": slots, "mib": None if slots is None else slots * SLOT_BYTES / 1048576}


# EFI_GLOBAL_VARIABLE GUID [UEFI-SPEC]; efivarfs names a variable <Name>-<GUID>, data = 4 attribute bytes + value
# [KERNEL-EFIVARFS].
EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SECURE_BOOT_VAR = "SecureBoot-" + EFI_GLOBAL_VARIABLE


def secure_boot_state(data: bytes | None) -> tuple[bool | None, str]:
    """UEFI Secure Boot from the efivarfs SecureBoot file: 4 bytes of attributes, then one byte, 1 = enforcing.

    Returns (state, note): None when there is no variable (legacy boot, a container, no efivarfs) or it cannot be
    read as one; the note says why (empty when the state is known)."""
    if data is None:
        return None, ""
    if len(data) < 5:
        return None, f"{SECURE_BOOT_VAR}: {len(data)} bytes, expected 4 attribute bytes and a value byte"
    value = data[4]
    if value not in (0, 1):
        return None, f"{SECURE_BOOT_VAR}: value {value} is neither 0 nor 1"
    return value == 1, ""


def read_text(path: str) -> str | None:
    """A small system file (/proc/cmdline, /etc/nv_tegra_release, ...) as text, None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None
