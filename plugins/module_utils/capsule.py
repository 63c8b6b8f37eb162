# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""UEFI capsule delivery of firmware (MB1/MB2 BCT) carveouts to a deployed Jetson (docs/carveouts.md).

Facts used (jetson-facts §3.5, §8):
- A capsule placed in the ESP at ``\\EFI\\UpdateCapsule\\`` plus bit 0x04 (EFI_OS_INDICATIONS_FILE_CAPSULE_DELIVERY_
  SUPPORTED) in ``OsIndications`` (GUID 8be4df61-93ca-11d2-aa0d-00e098032b8c), then a reboot: UEFI writes the
  **inactive** boot chain and switches to it; if the new chain fails the other one boots [EDK2 CapsuleUpdateJetson.md,
  BootChainDxe.c; OE4T oe4t-set-uefi-OSIndications]. An efivarfs file is 4 attribute bytes + the value.
- On rootfs A/B images the boot chain and rootfs slot are paired: the capsule also switches the rootfs slot, so the
  inactive rootfs must be a valid, current copy [OE4T Redundant-Rootfs-A-B-Partition-Support.md].
- ``nvbootctrl [-t rootfs] dump-slots-info`` output shape [NVIDIA forum threads 247290, 306475]::

      Current version: 35.4.1            (bootloader only)
      Capsule update status: 0           (bootloader only)
      Current bootloader slot: A         ("rootfs" with -t rootfs)
      Active bootloader slot: A
      num_slots: 2
      slot: 0,             status: normal                      (rootfs adds retry_count: N)
      slot: 1,             status: normal

- A capsule is an EFI_CAPSULE_HEADER (EFI_FIRMWARE_MANAGEMENT_CAPSULE_ID_GUID) + an FMP capsule header + image
  headers whose UpdateImageTypeId must match the running firmware's ESRT fw_class (Orin bf0d4599-…, Thor
  3c834404-… for the general configs; R38+ may use per-config GUIDs) [UEFI spec 2.x §23; OE4T UEFI-Capsule-Update.md].
- ESRT in sysfs: /sys/firmware/efi/esrt/entries/entry*/{fw_class,fw_version,last_attempt_status,...};
  last_attempt_status 0 = success.

Pure Python.
"""

from __future__ import annotations

import os
import re
import struct
import uuid

FMP_CAPSULE_GUID = uuid.UUID("6dcbd5ed-e82d-4c44-bda1-7194199ad92a")  # EFI_FIRMWARE_MANAGEMENT_CAPSULE_ID_GUID
EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
OS_INDICATIONS = f"OsIndications-{EFI_GLOBAL_VARIABLE}"
FILE_CAPSULE_DELIVERY = 0x04  # EFI_OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
EFI_VARIABLE_ATTRS = 0x07  # NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS
# FMP image type of the general bootloader config [OE4T UEFI-Capsule-Update.md; jetson-facts §3.5].
IMAGE_TYPE = {
    "t234": uuid.UUID("bf0d4599-20d4-414e-b2c5-3595b1cda402"),
    "t264": uuid.UUID("3c834404-d2d7-4912-8c1c-6e850b5f2824"),
}


class CapsuleError(ValueError):
    """A capsule cannot be delivered safely; nothing is changed."""


# ---- nvbootctrl ---------------------------------------------------------------------------------------------------
_SLOT = re.compile(r"^slot:\s*(\d+)\s*,(.*)$")


def parse_slots(text: str) -> dict:
    """``nvbootctrl [-t rootfs] dump-slots-info`` -> {current, active, num_slots, slots: [{slot, status, ...}]}."""
    out: dict = {"current": None, "active": None, "num_slots": None, "slots": [], "version": None,
                 "capsule_update_status": None}  # fmt: skip
    for raw in text.splitlines():
        line = raw.strip()
        m = _SLOT.match(line)
        if m:
            slot = {"slot": int(m.group(1))}
            for field in m.group(2).split(","):
                key, _sep, value = field.partition(":")
                if key.strip():
                    value = value.strip()
                    slot[key.strip()] = int(value) if value.isdigit() else value
            out["slots"].append(slot)
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key.startswith("current") and key.endswith("slot"):
            out["current"] = value
        elif key.startswith("active") and key.endswith("slot"):
            out["active"] = value
        elif key == "num_slots" and value.isdigit():
            out["num_slots"] = int(value)
        elif key == "current version":
            out["version"] = value
        elif key == "capsule update status" and value.isdigit():
            out["capsule_update_status"] = int(value)
    return out


# nvbootctrl's "Capsule update status" after a capsule boot [NVDOCS-UPDATE-REDUNDANCY "Manually Trigger the Capsule
# Update"; jetpack-nixos README repeats the same table].
CAPSULE_UPDATE_STATUS = {
    0: "no capsule update",
    1: "capsule update successful",
    2: "capsule installed but booting the new firmware failed",
    3: "capsule install failed",
}


def capsule_update_failure(status: int | None) -> str | None:
    """Why the capsule boot did not update the firmware (None = success, or nothing reported to judge)."""
    if status is None or status == 1:
        return None
    meaning = CAPSULE_UPDATE_STATUS.get(status, "a value NVIDIA does not document")
    return f"nvbootctrl capsule update status {status}: {meaning}"


def unsafe_reasons(bootloader: dict | None, rootfs: dict | None, rootfs_synced: bool) -> list[str]:
    """Why a capsule must not be armed now (empty = safe). ``rootfs`` None = rootfs A/B not enabled."""
    reasons = []
    if not bootloader or bootloader.get("current") is None:
        return ["nvbootctrl did not report the boot-chain slots: the update could not be verified afterwards"]
    if (bootloader.get("num_slots") or 0) < 2:
        reasons.append("boot-chain redundancy is off (one slot): a failed update would have no fallback chain")
    if bootloader.get("current") != bootloader.get("active"):
        reasons.append(
            f"boot-chain slot switch already pending (current {bootloader['current']}, active {bootloader['active']})"
        )
    for slot in bootloader.get("slots", []):
        if slot.get("status") != "normal":
            reasons.append(f"boot-chain slot {slot['slot']} is {slot.get('status')}: no fallback chain")
    if rootfs is not None:
        if rootfs.get("current") != rootfs.get("active"):
            reasons.append(
                f"rootfs slot switch already pending (current {rootfs.get('current')}, active {rootfs.get('active')})"
            )
        for slot in rootfs.get("slots", []):
            if slot.get("status") != "normal":
                reasons.append(f"rootfs slot {slot['slot']} is {slot.get('status')}")
        if not rootfs_synced:
            reasons.append(
                "rootfs A/B is enabled and the capsule switches the rootfs slot with the boot chain; confirm that the "
                "inactive rootfs slot is a current copy (carveouts_capsule_rootfs_ab_synced) -- nvbootctrl cannot tell"
            )
    return reasons


def rootfs_ab_enabled(rc: int, info: dict) -> bool:
    return rc == 0 and (info.get("num_slots") or 0) >= 2


def other_slot(slot: str | None) -> str | None:
    return {"A": "B", "B": "A", "0": "1", "1": "0"}.get(slot or "")


# ---- capsule file -------------------------------------------------------------------------------------------------
def parse_capsule(blob: bytes) -> dict:
    """Check the EFI/FMP capsule headers; returns {capsule_guid, flags, size, image_types, payload_count}."""
    if len(blob) < 28:
        raise CapsuleError("not a capsule: shorter than EFI_CAPSULE_HEADER")
    guid = uuid.UUID(bytes_le=blob[:16])
    header_size, flags, image_size = struct.unpack_from("<III", blob, 16)
    if guid != FMP_CAPSULE_GUID:
        raise CapsuleError(f"not an FMP capsule (capsule GUID {guid})")
    if image_size != len(blob) or not 28 <= header_size < len(blob):
        raise CapsuleError(f"capsule sizes inconsistent (header {header_size}, image {image_size}, file {len(blob)})")
    if header_size + 8 > len(blob):
        raise CapsuleError("capsule truncated before the FMP header")
    version, drivers, payloads = struct.unpack_from("<IHH", blob, header_size)
    if version != 1 or payloads < 1:
        raise CapsuleError(f"FMP capsule header version {version}, {payloads} payloads: not a firmware update capsule")
    offsets_at = header_size + 8
    if offsets_at + 8 * (drivers + payloads) > len(blob):
        raise CapsuleError("capsule truncated in the FMP item offset list")
    offsets = struct.unpack_from(f"<{drivers + payloads}Q", blob, offsets_at)
    types = []
    for off in offsets[drivers:]:
        start = header_size + off
        if start + 28 > len(blob):
            raise CapsuleError("FMP image header outside the capsule")
        (img_version,) = struct.unpack_from("<I", blob, start)
        type_id = uuid.UUID(bytes_le=blob[start + 4 : start + 20])
        (img_size,) = struct.unpack_from("<I", blob, start + 24)
        if img_version < 1 or start + img_size > len(blob):
            raise CapsuleError(f"FMP image header version {img_version} / size {img_size} invalid")
        types.append(str(type_id))
    return {"capsule_guid": str(guid), "flags": flags, "size": len(blob), "image_types": types,
            "payload_count": payloads}  # fmt: skip


def check_image_type(info: dict, fw_class: str | None, chip: str | None) -> str:
    """The capsule must target the running firmware: ESRT fw_class when readable, else the chip's general GUID."""
    want = fw_class.strip().lower() if fw_class else (str(IMAGE_TYPE[chip]) if chip in IMAGE_TYPE else None)
    if want is None:
        raise CapsuleError("cannot tell which firmware this device runs (no ESRT fw_class, unknown chip)")
    if want not in info["image_types"]:
        source = "ESRT fw_class" if fw_class else f"the {chip} general config GUID"
        raise CapsuleError(f"capsule image types {info['image_types']} do not include {want} ({source}): UEFI would "
                           "reject it")  # fmt: skip
    return want


# ---- EFI variables and ESRT ---------------------------------------------------------------------------------------
def os_indications_value(raw: bytes | None) -> int:
    if not raw or len(raw) < 12:
        return 0
    return struct.unpack_from("<Q", raw, 4)[0]


def os_indications_request(raw: bytes | None) -> bytes:
    """efivarfs content with the capsule bit set, other bits and attributes kept."""
    attrs = struct.unpack_from("<I", raw, 0)[0] if raw and len(raw) >= 12 else EFI_VARIABLE_ATTRS
    return struct.pack("<IQ", attrs, os_indications_value(raw) | FILE_CAPSULE_DELIVERY)


def os_indications_clear(raw: bytes | None) -> bytes | None:
    if not raw or len(raw) < 12:
        return None
    return struct.pack("<IQ", struct.unpack_from("<I", raw, 0)[0], os_indications_value(raw) & ~FILE_CAPSULE_DELIVERY)


def read_esrt(path: str) -> list[dict]:
    entries = os.path.join(path, "entries")
    out = []
    if not os.path.isdir(entries):
        return out
    for name in sorted(os.listdir(entries)):
        entry: dict = {"entry": name}
        for field in ("fw_class", "fw_type", "fw_version", "last_attempt_status", "last_attempt_version",
                      "lowest_supported_fw_version"):  # fmt: skip
            try:
                with open(os.path.join(entries, name, field), encoding="ascii") as handle:
                    value = handle.read().strip()
            except OSError:
                continue
            entry[field] = int(value) if value.isdigit() else value.lower()
        out.append(entry)
    return out
