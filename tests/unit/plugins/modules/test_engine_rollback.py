"""edgeslim.jetson.engine, phase rollback (device module): the layers come back from the journal in one device run -
the boot layers through the restore the deadline also runs (extlinux.conf byte-identical to the stock file, the
overlay files, pending records and the checker gone), signing strict under UEFI Secure Boot (a hook that fails leaves
the managed file, its signature and the journal layer as they were, for a re-run), the services layer's units, default
target and journald drop-in; check mode changes nothing; a second rollback changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import bootdevice
import pytest
import test_engine as svc
from bootdevice import DTC, Device, compiled, hook_calls, set_secure_boot, sign_hook

tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here

SWIOTLB = {"slots": 2048}
CARVEOUTS = {"recipes": ["headless"], "fdt_method": "overlays"}
STOCK = (bootdevice.FIXTURES / "extlinux" / "r36-stock.conf").read_bytes()


def applied(device: Device, **extra: Any) -> None:
    """Both boot layers applied (the overlay compiled as the action plugin does it)."""
    probe = device.run("probe", device.boot(swiotlb=SWIOTLB, carveouts=CARVEOUTS, **extra))
    assert not probe.get("failed"), probe.get("msg")
    dtbo = compiled(probe["boot"]["carveouts"]["dts"], device.tmp)
    res = device.run("apply", device.boot(swiotlb=SWIOTLB, carveouts={**CARVEOUTS, "dtbo_b64": dtbo}, **extra))
    assert res["changed"] is True, res.get("msg")


def rollback(device: Device, layers: list[str], check: bool = False, **extra: Any) -> dict[str, Any]:
    """The module's rollback run as the action plugin sends it (rollback_boot: paths and checker files only)."""
    boot = device.boot(carveouts={"recipes": []}, **extra)
    boot["checker"].update(program="", unit="")
    return device.run("rollback", boot, check=check, layers=layers)


def layers(device: Device) -> dict[str, Any]:
    return json.loads(Path(device.journal).read_text())["layers"] if os.path.exists(device.journal) else {}


def boot_files(device: Device) -> list[str]:
    return sorted(str(p.relative_to(device.root)) for p in (device.root / "boot/edgeslim").glob("*")) if (
        device.root / "boot/edgeslim").is_dir() else []  # fmt: skip


@pytest.mark.skipif(DTC is None, reason="dtc not installed")
def test_rollback_restores_both_boot_layers_and_a_second_one_changes_nothing(tmp_path, tree):
    device = Device(tmp_path, tree)
    applied(device)
    assert device.conf.read_bytes() != STOCK and device.pending() == ["carveouts.json", "swiotlb.json"]
    res = rollback(device, ["swiotlb", "carveouts"])
    assert res["changed"] is True, res.get("msg")
    assert device.conf.read_bytes() == STOCK
    assert boot_files(device) == [] and device.pending() == [] and layers(device) == {}
    assert not os.path.exists(device.etc / "systemd/edgeslim-boot-commit.service")
    recs = res["records"]
    assert recs["carveouts"]["status"] == recs["swiotlb"]["status"] == "rolled_back"
    assert recs["swiotlb"]["measured_by"] == "MemTotal" and recs["swiotlb"]["reclaimed_mb"] is None
    assert res["reboot_needed"] is True and res["boot_label"] == "primary"
    assert any(d.get("before_header") == str(device.conf) for d in res["diff"])
    again = rollback(device, ["swiotlb", "carveouts"])
    assert again["changed"] is False and again["reboot_needed"] is False
    assert {r["status"] for r in again["records"].values()} == {"unchanged"}
    assert device.conf.read_bytes() == STOCK


@pytest.mark.skipif(DTC is None, reason="dtc not installed")
def test_check_mode_rollback_plans_and_changes_nothing(tmp_path, tree):
    device = Device(tmp_path, tree)
    applied(device)
    conf, journal, files = device.conf.read_bytes(), layers(device), boot_files(device)
    res = rollback(device, ["swiotlb", "carveouts"], check=True)
    assert res["changed"] is True and res["reboot_needed"] is True
    assert {r["status"] for r in res["records"].values()} == {"planned"}
    assert device.conf.read_bytes() == conf and layers(device) == journal and boot_files(device) == files
    assert device.pending() == ["carveouts.json", "swiotlb.json"]


@pytest.mark.skipif(DTC is None, reason="dtc not installed")
def test_one_layer_of_a_shared_entry_leaves_the_other_booting(tmp_path, tree):
    device = Device(tmp_path, tree)
    applied(device)
    res = rollback(device, ["carveouts"])
    assert res["records"]["carveouts"]["status"] == "rolled_back" and "swiotlb" not in res["records"]
    text = device.conf.read_text()
    assert "DEFAULT edgeslim" in text and "swiotlb=2048" in text and "OVERLAYS" not in text
    assert boot_files(device) == [] and device.pending() == ["swiotlb.json"] and list(layers(device)) == ["swiotlb"]


@pytest.mark.skipif(DTC is None, reason="dtc not installed")
def test_secure_boot_signing_is_strict_a_failure_keeps_the_managed_file_and_journal(tmp_path, tree, monkeypatch):
    device = Device(tmp_path, tree)
    set_secure_boot(device, True)
    hook, log = sign_hook(tmp_path)
    applied(device, sign_command=hook)
    managed, sig = device.conf.read_bytes(), Path(str(device.conf) + ".sig").read_bytes()
    calls = len(hook_calls(log))
    monkeypatch.setenv("SIGN_FAIL", "extlinux.conf")
    res = rollback(device, ["swiotlb"], sign_command=hook)
    assert res["records"]["swiotlb"]["status"] == "failed"
    assert "signing" in res["records"]["swiotlb"]["details"]["error"]
    assert "journal layer is kept" in res["records"]["swiotlb"]["details"]["error"]
    assert device.conf.read_bytes() == managed and Path(str(device.conf) + ".sig").read_bytes() == sig
    assert "swiotlb" in layers(device) and res["reboot_needed"] is False
    monkeypatch.delenv("SIGN_FAIL")
    res = rollback(device, ["swiotlb", "carveouts"], sign_command=hook)
    assert {r["status"] for r in res["records"].values()} == {"rolled_back"}, res["records"]
    assert (
        device.conf.read_bytes() == STOCK and hook_calls(log)[calls:] == [str(device.conf)] * 3
    )  # the refused try, then one per layer
    assert Path(str(device.conf) + ".sig").read_bytes() != sig


def test_a_boot_layer_without_its_paths_is_refused(tmp_path, tree):
    device = Device(tmp_path, tree)
    res = device.run("rollback", None, layers=["swiotlb"])
    assert res["failed"] is True and "paths of the boot layers" in res["msg"]


def test_services_rollback_restores_units_target_and_dropin(tmp_path):
    dev = svc.device(tmp_path)
    before = dev.fake.snapshot()
    svc.run(dev, "apply", {**svc.WAREHOUSE, "journald": {"Storage": "volatile"}}, tmp_path)
    assert dev.fake.snapshot() != before
    planned = svc.run(dev, "rollback", None, tmp_path, check=True, layers=["services"])
    assert planned["records"]["services"]["status"] == "planned" and dev.fake.snapshot() != before
    res = svc.run(dev, "rollback", None, tmp_path, layers=["services"])
    rec = res["records"]["services"]
    assert res["changed"] is True and rec["status"] == "rolled_back" and rec["measured_by"] == "MemAvailable"
    assert rec["details"]["default_target"]["after"] == "graphical.target"
    assert rec["details"]["collateral"] == ["gnome-session-desktop.service"]
    assert dev.fake.snapshot() == before
    assert not (tmp_path / "journald.conf.d/60-edgeslim.conf").exists()
    assert ["/bin/systemctl", "restart", "systemd-journald.service"] in dev.calls
    again = svc.run(dev, "rollback", None, tmp_path, layers=["services"])
    assert again["changed"] is False and again["records"]["services"]["status"] == "unchanged"
