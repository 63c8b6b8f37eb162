"""Emulated-boot lane: the collection's own roles and playbooks against an arm64 guest that boots through
extlinux.conf (U-Boot) with a real kernel, so the boot layers change MemTotal for real (docs/emulated-boot.md).

Each test gets a fresh guest (cold boot on a new overlay). Figures: build/boot/results.jsonl."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lane import (
    DEFAULT_SLOTS,
    HERE,
    REPO,
    TOLERANCE_KB,
    Device,
    no_map_cost_kb,
    record,
    swiotlb_cost_kb,
)

PLAYBOOKS = HERE / "playbooks"
DTB = "/boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb"


def default_label(extlinux: str) -> str:
    return re.search(r"^DEFAULT\s+(\S+)", extlinux, re.M).group(1)


def assert_stock_baseline(base: dict) -> None:
    """The stock entry boots the kernel's default pool: 32768 slots, 64 MiB (RAM above 4 GiB, so it exists)."""
    assert base["cmdline_swiotlb"] == [], base
    assert base["nslabs"] == DEFAULT_SLOTS, base
    assert base["iotlb"] and "(64MB)" in base["iotlb"], base


def assert_swiotlb_applied(base: dict, after: dict, slots: int) -> float:
    """MemTotal gain and the kernel's own lines match the formula for `slots`. Returns the expected gain (kB)."""
    expected = swiotlb_cost_kb(DEFAULT_SLOTS) - swiotlb_cost_kb(slots)
    gained = after["MemTotal_kb"] - base["MemTotal_kb"]
    assert after["boot_id"] != base["boot_id"], "no reboot happened"
    assert after["cmdline_swiotlb"] == [f"swiotlb={slots}"], after
    assert after["nslabs"] == slots, after
    assert after["iotlb"] and f"({slots * 2048 // 2**20}MB)" in after["iotlb"], after
    assert abs(gained - expected) <= TOLERANCE_KB, f"MemTotal gained {gained} kB, formula says {expected:.0f} kB"
    return expected


def assert_l4t_identity(device: Device) -> None:
    """L4T identity as the collection's readers see it on a Jetson."""
    assert "nvidia,tegra234" in device.sh("tr '\\0' ' ' < /proc/device-tree/compatible")
    assert device.sh("cat /etc/nv_tegra_release").startswith("# R36 (release), REVISION: 4.7")
    assert "nvidia-l4t-core" in device.sh("dpkg-query -W nvidia-l4t-core")


def test_guest_identity(boot_image: Path):
    """The image is what the lane claims: L4T identity, DTB and extlinux.conf as on a Jetson (from the manifest)."""
    manifest = json.loads((boot_image / "manifest.json").read_text())
    assert manifest["dtb"] == DTB
    assert "-m" in manifest["machine"] and manifest["machine"][manifest["machine"].index("-m") + 1] == "4096"
    assert any(e == "fdt_addr_r=0x4a000000" for e in manifest["uboot_env"])


@pytest.mark.full_lane  # slim.yml (below) covers the same role, formula, verdict and report in CI
def test_swiotlb_role_applies_commits_and_reports(device: Device):
    """(a) + (c): role edgeslim.jetson.swiotlb, 32 MiB, reboot policy true -> the role reboots through U-Boot, the
    device's commit-or-revert checker commits, MemTotal and the IO TLB line match; the fleet report shows it."""
    base = device.snapshot()
    assert_stock_baseline(base)
    assert_l4t_identity(device)
    report_dir = device.run_dir / "report"
    res = device.play(PLAYBOOKS / "swiotlb.yml", {"swiotlb_size_mib": 32, "swiotlb_reboot_ok": True},
                      name="swiotlb", report_dir=report_dir)  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:]
    after = device.snapshot()
    slots = 16384  # 32 MiB / 2 KiB
    verdict = device.verdict("swiotlb") or {}
    report_file = report_dir / "edgeslim-report.json"
    row = json.loads(report_file.read_text())["hosts"][0] if report_file.exists() else {}
    reclaimed = (row.get("reclaimed_mb") or {}).get("swiotlb")
    record("swiotlb_apply", slots=slots, memtotal_before_kb=base["MemTotal_kb"],
           memtotal_after_kb=after["MemTotal_kb"], gained_kb=after["MemTotal_kb"] - base["MemTotal_kb"],
           expected_kb=swiotlb_cost_kb(DEFAULT_SLOTS) - swiotlb_cost_kb(slots), iotlb_before=base["iotlb"],
           iotlb_after=after["iotlb"], nslabs_after=after["nslabs"], verdict=verdict.get("status"),
           report_layer=(row.get("layer_status") or {}).get("swiotlb"), report_reclaimed_mb=reclaimed,
           report_status=row.get("status"))  # fmt: skip
    assert_swiotlb_applied(base, after, slots)
    assert verdict.get("status") == "committed", verdict
    assert verdict["boot_identity"] == after["boot_id"]
    assert default_label(device.extlinux()) == "edgeslim"

    assert "EDGESLIM FLEET REPORT" in res.stdout
    assert row["layer_status"]["swiotlb"] == "applied", row
    assert row["status"] == "ok", row
    # The role measures MemTotal across its own reboot (roles/swiotlb/tasks/verify.yml) and publishes it as
    # reclaimed_mb; from that version on the report must carry the figure this test measured itself.
    if (REPO / "roles/swiotlb/tasks/verify.yml").exists():
        assert reclaimed is not None, f"report shows no MemTotal-based reclaim for swiotlb: {row}"
        assert abs(reclaimed - (after["MemTotal_kb"] - base["MemTotal_kb"]) / 1024) <= 0.1, row


def test_swiotlb_bad_change_reverts_by_itself(device: Device):
    """(b) A health check that fails after the reboot: the device's checker points DEFAULT back at the stock entry
    and reboots by itself, MemTotal returns to the baseline, the play fails the host."""
    base = device.snapshot()
    assert_stock_baseline(base)
    res = device.play(PLAYBOOKS / "swiotlb.yml",
                      {"swiotlb_size_mib": 32, "swiotlb_reboot_ok": True, "swiotlb_health_command": "false"},
                      name="swiotlb-bad")  # fmt: skip
    assert res.returncode != 0, "the play must fail a host whose change the device reverted"
    assert re.search(r"failed=1", res.stdout), res.stdout[-3000:]
    assert "did not commit the SWIOTLB change" in res.stdout or "reverted" in res.stdout
    after = device.snapshot()
    verdict = device.verdict("swiotlb") or {}
    record("swiotlb_revert", memtotal_before_kb=base["MemTotal_kb"], memtotal_after_kb=after["MemTotal_kb"],
           verdict=verdict.get("status"), failures=verdict.get("failures"), play_rc=res.returncode,
           boots=[base["boot_id"], verdict.get("boot_identity"), after["boot_id"]])  # fmt: skip
    assert verdict.get("status") == "reverted", verdict
    assert verdict["reverted_to"] == "primary"
    assert any("health command failed" in f for f in verdict["failures"]), verdict
    # It booted the managed entry once (checked, reverted), then the stock entry again: a third boot.
    assert after["boot_id"] not in (base["boot_id"], verdict["boot_identity"])
    assert default_label(device.extlinux()) == "primary"
    assert after["cmdline_swiotlb"] == [] and after["nslabs"] == DEFAULT_SLOTS, after
    assert after["MemTotal_kb"] == base["MemTotal_kb"], (base, after)
    # The lane's checks fail on a device where the change is not in effect: this guest.
    with pytest.raises(AssertionError):
        assert_swiotlb_applied(base, after, 16384)


def reserved_nodes(device: Device) -> dict[str, str]:
    out = device.sh(
        'cd /proc/device-tree/reserved-memory && for n in *; do [ -d "$n" ] || continue; '
        'printf \'%s %s\\n\' "$n" "$(tr -d \'\\0\' < "$n/status" 2>/dev/null || echo okay)"; done'
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


@pytest.mark.full_lane
def test_carveouts_fdt_change(device: Device):
    """Device-side carve-outs: a DTB with the display framebuffer (32 MiB) and camera RCE (16 MiB) no-map carve-outs
    disabled, booted through the extlinux module's `fdt` option and committed by the checker: the live tree shows
    them disabled and MemTotal grows by S - S/512 (48 MiB - 96 KiB). The DTB edit is the playbook's (fdtput): the
    carveouts role writes OVERLAYS, which the guest's U-Boot cannot apply (docs/emulated-boot.md)."""
    base = device.snapshot()
    nodes = reserved_nodes(device)
    assert nodes.get("display-framebuffer@c8000000") == "okay", nodes
    assert nodes.get("camera-rtcpu-carveout@ca000000") == "okay", nodes
    assert device.reserve_failures() == []
    res = device.play(PLAYBOOKS / "carveouts_fdt.yml", {}, name="carveouts-fdt")
    assert res.returncode == 0, res.stdout[-4000:]
    after = device.snapshot()
    expected = no_map_cost_kb(0x2000000) + no_map_cost_kb(0x1000000)
    gained = after["MemTotal_kb"] - base["MemTotal_kb"]
    record("carveouts_fdt", memtotal_before_kb=base["MemTotal_kb"], memtotal_after_kb=after["MemTotal_kb"],
           gained_kb=gained, expected_kb=expected)  # fmt: skip
    assert after["boot_id"] != base["boot_id"]
    nodes = reserved_nodes(device)
    assert nodes["display-framebuffer@c8000000"] == "disabled", nodes
    assert nodes["camera-rtcpu-carveout@ca000000"] == "disabled", nodes
    assert nodes["fsi-carveout@a6000000"] == "okay", nodes
    assert device.reserve_failures() == []
    assert abs(gained - expected) <= TOLERANCE_KB, f"MemTotal gained {gained} kB, formula says {expected:.0f} kB"
    assert after["nslabs"] == DEFAULT_SLOTS  # only the carve-outs changed
    assert device.verdict("carveouts")["status"] == "committed"
    assert re.search(r"FDT\s+/boot/dtb/\S+-edgeslim\.dtb", device.extlinux())


ENGINES = [  # the warehouse_robot profile's carve-out recipes (headless + no_camera), found by compatible
    "/bus@0/dce@d800000",
    "/bus@0/display@13800000",
    "/bus@0/host1x@13e00000/isp@14800000",
    "/bus@0/host1x@13e00000/nvcsi@15a00000",
    "/bus@0/host1x@13e00000/vi@15c00000",
]


def node_status(device: Device, path: str) -> str:
    return device.sh(f"tr -d '\\0' < /proc/device-tree{path}/status 2>/dev/null || echo okay").strip()


def test_slim_playbook_reboots_once_and_reports(device: Device):
    """The user's entry point, `slim.yml`, with the warehouse_robot profile limited to its boot layers (the guest has
    none of a Jetson's services): SWIOTLB (small_swiotlb, 4 MiB = swiotlb=2048) and the device-side carve-outs
    (headless + no_camera) as a merged DTB (carveouts_fdt_method merged: U-Boot applies no OVERLAYS). Both are
    staged in the one managed entry, slim reboots once (roles/boot_commit/tasks/engine.yml), the device commits both,
    the live tree shows the recipe's engines disabled, and the fleet report carries the MemTotal gain this test
    measures itself: all of it SWIOTLB's, since disabling the engines frees no carve-out (reserved-memory untouched)."""
    base = device.snapshot()
    assert_stock_baseline(base)
    assert_l4t_identity(device)
    assert {path: node_status(device, path) for path in ENGINES} == dict.fromkeys(ENGINES, "okay")
    report_dir = device.run_dir / "report"
    extra = {
        "profile_name": "warehouse_robot",
        "slim_layers": ["swiotlb", "carveouts"],
        "carveouts_fdt_method": "merged",
        "edgeslim_reboot_ok": True,
        "edgeslim_serial": ["100%"],
    }
    res = device.play(REPO / "slim.yml", extra, name="slim", report_dir=report_dir)
    assert res.returncode == 0, res.stdout[-4000:]
    after = device.snapshot()
    slots = 2048
    verdicts = {layer: device.verdict(layer) or {} for layer in ("swiotlb", "carveouts")}
    row = json.loads((report_dir / "edgeslim-report.json").read_text())["hosts"][0]
    reclaimed = row.get("reclaimed_mb") or {}
    live = {path: node_status(device, path) for path in ENGINES}
    record("slim_boot_layers", slots=slots, memtotal_before_kb=base["MemTotal_kb"],
           memtotal_after_kb=after["MemTotal_kb"], gained_kb=after["MemTotal_kb"] - base["MemTotal_kb"],
           expected_kb=swiotlb_cost_kb(DEFAULT_SLOTS) - swiotlb_cost_kb(slots),
           verdict={k: v.get("status") for k, v in verdicts.items()}, engines=live,
           report_status=row.get("status"), report_reclaimed_mb=reclaimed,
           boots=len(device.guest.stats()["boots"]))  # fmt: skip
    assert_swiotlb_applied(base, after, slots)  # MemTotal gain = the SWIOTLB formula alone, to 16 kB
    for layer, verdict in verdicts.items():
        assert verdict.get("status") == "committed" and verdict["boot_identity"] == after["boot_id"], (layer, verdict)
    # Boots seen on the console (U-Boot banner to ready): the cold boot and exactly one reboot, slim's.
    assert [b["boot_id"] for b in device.guest.stats()["boots"]] == [base["boot_id"], after["boot_id"]]
    assert live == dict.fromkeys(ENGINES, "disabled"), live
    assert reserved_nodes(device)["display-framebuffer@c8000000"] == "okay"  # the role touches no reserved-memory
    extlinux = device.extlinux()
    assert default_label(extlinux) == "edgeslim"
    assert re.search(r"FDT\s+/boot/edgeslim/carveouts\.dtb\n", extlinux)
    assert "OVERLAYS" not in extlinux
    assert "EDGESLIM FLEET REPORT" in res.stdout
    assert row["status"] == "ok" and row["layer_status"] == {"swiotlb": "applied", "carveouts": "applied"}, row
    gained_mb = (after["MemTotal_kb"] - base["MemTotal_kb"]) / 1024
    assert reclaimed.get("swiotlb") is not None and abs(reclaimed["swiotlb"] - gained_mb) <= 0.1, row
    assert reclaimed.get("carveouts") is not None and abs(reclaimed["carveouts"]) <= 0.1, row
    # A re-run with reboots allowed changes nothing, writes nothing and does not reboot: the engine's probe finds the
    # entry, the merged DTB and the journal as wanted, so apply does not run.
    rerun_dir = device.run_dir / "report-rerun"
    again = device.play(REPO / "slim.yml", extra, name="slim-rerun", report_dir=rerun_dir)
    assert again.returncode == 0, again.stdout[-4000:]
    rerun = json.loads((rerun_dir / "edgeslim-report.json").read_text())["hosts"][0]
    assert rerun["layer_status"] == {"swiotlb": "unchanged", "carveouts": "unchanged"}, rerun
    assert device.snapshot()["boot_id"] == after["boot_id"]
    assert [b["boot_id"] for b in device.guest.stats()["boots"]] == [base["boot_id"], after["boot_id"]]
    assert device.extlinux() == extlinux
