"""Capsule delivery against stand-ins: built on the controller by the (stand-in) NVIDIA tools, staged, requested,
applied by the (stand-in) UEFI step to the other boot chain, verified, recorded; a rejected capsule failed the host."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

BSP = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "Linux_for_Tegra"
S = "/var/lib/edgeslim-standin"
VAR = f"{S}/efivars/OsIndications-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def test_build_interface_called_nvidias_tools_in_order():
    calls = [json.loads(line) for line in (BSP / "edgeslim-standin-calls.jsonl").read_text().splitlines()]
    assert calls[:2] == [
        {"tool": "l4t_generate_soc_bup.sh", "argv": ["-e", "t23x_3767_bl_spec", "t23x"], "cwd": str(BSP)},
        {"tool": "l4t_generate_soc_capsule.sh", "cwd": str(BSP),
         "argv": ["-i", "bootloader/payloads_t23x/bl_only_payload", "-o", "TEGRA_BL.Cap", "t234"]},
    ]  # fmt: skip
    # converge, idempotence (built again, same bytes, not delivered again), side effect (another spec)
    assert [c["argv"][1] for c in calls if c["tool"] == "l4t_generate_soc_bup.sh"] == [
        "t23x_3767_bl_spec", "t23x_3767_bl_spec", "t23x_3767_bl_spec_second"]  # fmt: skip


def test_first_capsule_applied_once_to_the_other_chain(host):
    assert host.file(f"{S}/bl_current").content_string.strip() == "B"  # A -> B, and the rejected one kept B
    assert host.file(f"{S}/uefi.log").content_string == "applied to the other chain\nrejected, old chain kept\n"
    record = json.loads(host.file("/var/lib/edgeslim/capsule.json").content_string)
    assert (record["status"], record["slot_before"], record["slot_after"]) == ("applied", "A", "B")
    assert record["recipes"] == ["headless"] and len(record["sha256"]) == 64


def test_rejected_capsule_failed_the_host_and_left_nothing_armed(host):
    outcome = host.file("/root/capsule-outcome").content_string
    assert outcome.startswith("failed: capsule delivery failed") and "the capsule was not applied" in outcome
    assert not host.file("/boot/efi/EFI/UpdateCapsule/TEGRA_BL.Cap").exists
    attrs, value = struct.unpack("<IQ", host.file(VAR).content[:12])
    assert attrs == 7 and value & 4 == 0


def test_device_tree_part_applied_first(host):
    conf = host.file("/boot/extlinux/extlinux.conf").content_string
    assert "DEFAULT edgeslim\n" in conf and "OVERLAYS /boot/edgeslim/carveouts.dtbo\n" in conf
    assert host.file("/boot/edgeslim/carveouts.dtbo").exists
