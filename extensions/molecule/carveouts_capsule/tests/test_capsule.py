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
    # {bup_spec}, {chip_family}, {chip} filled from the device's module id (p3767-0005: Orin Nano)
    assert calls[:2] == [
        {"tool": "l4t_generate_soc_bup.sh", "argv": ["-e", "t23x_3767_bl_spec", "t23x"], "cwd": str(BSP)},
        {"tool": "l4t_generate_soc_capsule.sh", "cwd": str(BSP),
         "argv": ["-i", "bootloader/payloads_t23x/bl_only_payload", "-o", "TEGRA_BL-t23x_3767_bl_spec.Cap", "t234"]},
    ]  # fmt: skip
    # converge, idempotence and the drift run (built again, same bytes, not delivered again), then the rejected one;
    # the refused AGX spec (prepare) never reached the tools
    assert [c["argv"] for c in calls if c["tool"] == "l4t_generate_soc_bup.sh"] == [
        ["-e", "t23x_3767_bl_spec", "t23x"]
    ] * 3 + [["-e", "t23x_3767_bl_spec", "-p", "--second-build", "t23x"]]


def test_first_capsule_applied_once_to_the_other_chain(host):
    assert host.file(f"{S}/bl_current").content_string.strip() == "B"  # A -> B, and the rejected one kept B
    assert host.file(f"{S}/uefi.log").content_string == "applied to the other chain\nrejected, old chain kept\n"
    record = json.loads(host.file("/var/lib/edgeslim/capsule.json").content_string)
    assert (record["status"], record["slot_before"], record["slot_after"]) == ("applied", "A", "B")
    assert record["recipes"] == ["headless"] and len(record["sha256"]) == 64
    assert record["capsule_update_status"] == 1
    # The device's own state after the capsule boot, kept as the drift baseline: the stand-in MB1 no longer
    # reserved the early-boot framebuffer, and the kernel's boot line gained its 32 MiB.
    after = record["state_after"]
    assert "display-framebuffer@c8000000" not in after["reserved_memory"]
    assert after["reserved_memory"]["fsi-carveout@a6000000"] == 32 * 1048576
    assert after["boot_memory_total_kb"] == 8147968 + 32768
    assert (after["firmware_version"], after["boot_slot"]) == ("36.4.7", "B")
    assert after["engines"]["/bus@0/display@13800000"] == "okay"  # the sim's tree is not re-made by L4TLauncher


def test_drift_reported_when_stock_carveouts_came_back(host):
    drift = json.loads(host.file("/root/capsule-drift.json").content_string)
    assert drift == [
        "carveout display-framebuffer@c8000000 present again (32.0 MiB): firmware changed behind edgeslim",
        "kernel boot memory total 7957 MiB, 32.0 MiB below the 7989 MiB recorded after edgeslim's capsule",
    ]


def test_bootloader_package_held_by_converge_and_unheld_by_rollback(host):
    # side_effect asserted "hold ok installed" before the drift run
    assert host.run("dpkg-query -W -f='${Status}' nvidia-l4t-bootloader").stdout == "install ok installed"
    assert not host.file("/var/lib/edgeslim/bootloader-hold").exists


def test_rejected_capsule_failed_the_host_and_left_nothing_armed(host):
    outcome = host.file("/root/capsule-outcome").content_string
    assert outcome.startswith("failed: capsule delivery failed") and "the capsule was not applied" in outcome
    assert "nvbootctrl capsule update status 3: capsule install failed" in outcome
    assert not host.file("/opt/nvidia/esp/EFI/UpdateCapsule/TEGRA_BL.Cap").exists
    attrs, value = struct.unpack("<IQ", host.file(VAR).content[:12])
    assert attrs == 7 and value & 4 == 0


def test_device_tree_part_applied_first(host):
    conf = host.file("/boot/extlinux/extlinux.conf").content_string
    assert "DEFAULT edgeslim\n" in conf and "OVERLAYS /boot/edgeslim/carveouts.dtbo\n" in conf
    assert host.file("/boot/edgeslim/carveouts.dtbo").exists
