"""edgeslim.jetson.engine action plugin with the boot layers, end to end with the device module on a fake device:
input refusals before the probe, device refusals (high-water mark, Secure Boot) after it and before any change,
the overlay compiled here (cached by its source), staged vs pending_reboot by the reboot policy, a second run that
only probes, and the merged method's DTB made with the controller's fdtoverlay."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.plugins.action import ActionBase
from ansible_collections.edgeslim.jetson.plugins.action import engine as action
from ansible_collections.edgeslim.jetson.plugins.module_utils import dt_overlay as ov
from conftest import swiotlb_debugfs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import bootdevice
from bootdevice import DTB, OVERLAY, Device, hook_calls, reboot_into, set_secure_boot, sign_hook, task_boot, with_pool

tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here

pytestmark = pytest.mark.skipif(not (shutil.which("dtc") and shutil.which("fdtoverlay")), reason="no dtc")
PROFILE = {"services": {}, "blocks": [], "swiotlb": {"size_mib": 4}, "carveouts": {"recipes": ["headless"]}}


@pytest.fixture
def device(tmp_path, tree) -> Device:
    return with_pool(Device(tmp_path, tree))


def boot_args(device: Device, **settings: Any) -> dict[str, Any]:
    return task_boot(device, **{"edgeslim_reboot_ok": True, **settings})


def run_action(device: Device, boot: dict[str, Any], layers=("swiotlb", "carveouts"), check: bool = False):
    task = mock.MagicMock()
    task.args = {"profile": PROFILE, "layers": list(layers), "boot": boot, "journal_path": device.journal,
                 "management_interface": "eth0"}  # fmt: skip
    task.check_mode = check
    plugin = action.ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), None)
    phases = []

    def execute(name, module_args, task_vars):
        phases.append(module_args["phase"])
        return device.run(module_args["phase"], module_args["boot"], check=check)

    with mock.patch.object(ActionBase, "run", return_value={}), mock.patch.object(plugin, "_execute_module", execute):
        res = plugin.run(task_vars={"ansible_run_tags": ["all"], "ansible_skip_tags": []})
    return res, phases


def test_bad_inputs_are_refused_before_the_device_is_read(device):
    res, phases = run_action(device, boot_args(device, swiotlb_size_mib=0))
    assert phases == [] and res["failed"] and res["changed"] is False
    assert res["engine_failed"] is True  # what a caller with failed_when: false reads
    assert res["report"]["swiotlb"]["status"] == "failed" and "swiotlb" in res["msg"]
    assert res["report"]["carveouts"]["details"]["failed_task"] == action.REFUSED_BOOT
    res, phases = run_action(device, {**boot_args(device), "settings": {"carveouts_fdt_method": "overlays"}})
    assert phases == [] and "needs a reboot" in res["msg"]


def test_both_layers_staged_then_a_second_run_only_probes(device):
    res, phases = run_action(device, boot_args(device))
    assert phases == ["probe", "apply"] and res["changed"] is True and res["reboot"] is True, res.get("msg")
    assert {res["report"][x]["status"] for x in ("swiotlb", "carveouts")} == {"staged"}
    assert res["report"]["swiotlb"]["details"]["slots"] == 2048
    assert os.listdir(device.tmp / "cache")  # the compiled overlay is cached by its source
    text = device.conf.read_text()
    assert "swiotlb=2048" in text and f"OVERLAYS {OVERLAY}" in text and "DEFAULT edgeslim" in text
    again, phases = run_action(device, boot_args(device))
    assert phases == ["probe"] and again["changed"] is False and again["reboot"] is False
    assert {again["report"][x]["status"] for x in ("swiotlb", "carveouts")} == {"unchanged"}


def test_no_reboot_allowed_is_pending_reboot_and_check_mode_plans(device):
    planned, phases = run_action(device, boot_args(device), check=True)
    assert phases == ["probe"] and planned["changed"] is True and device.pending() == []
    assert planned["report"]["carveouts"]["status"] == "planned"
    # The planned record is the one apply would publish: the pool's use the size was checked against, the nodes.
    swiotlb = planned["report"]["swiotlb"]
    assert swiotlb["status"] == "planned" and swiotlb["details"]["usage"]["peak_slots"] == 100
    assert swiotlb["details"]["check_mode"] is True and planned["report"]["carveouts"]["details"]["nodes"]
    res, _phases = run_action(device, boot_args(device, edgeslim_reboot_ok=False))
    assert res["reboot"] is False and res["report"]["swiotlb"]["status"] == "pending_reboot"
    assert device.pending() == ["carveouts.json", "swiotlb.json"]


def test_high_water_mark_and_secure_boot_refused_after_the_probe(device):
    args = boot_args(device)
    (device.tmp / "busy").mkdir()
    args["swiotlb"]["debugfs_path"] = swiotlb_debugfs(device.tmp / "busy", nslabs=32768, used=10, hiwater=4000)
    before = device.conf.read_bytes()
    res, phases = run_action(device, args, layers=("swiotlb",))
    assert phases == ["probe"] and res["failed"] and "high-water mark" in res["msg"]
    (device.tmp / "efivars").mkdir()
    (device.tmp / "efivars" / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c").write_bytes(b"\x06\0\0\0\x01")
    res, phases = run_action(device, boot_args(device), layers=("carveouts",))
    assert phases == ["probe"] and res["failed"] and res["msg"] == action.SECURE_BOOT_REFUSAL
    assert "boot.sign_command" in res["msg"] and res["report"]["carveouts"]["details"]["changed"] is False
    assert device.conf.read_bytes() == before and device.pending() == []


def test_secure_boot_with_a_hook_signs_what_apply_writes(device):
    set_secure_boot(device, True)
    hook, log = sign_hook(device.tmp)
    args = {**boot_args(device, carveouts_fdt_method="merged"), "sign_command": hook}
    merged = str(device.root / "boot/edgeslim/kernel-carveouts.dtb")
    planned, phases = run_action(device, args, check=True)
    assert phases == ["probe"] and planned["changed"] is True and hook_calls(log) == [], planned.get("msg")
    assert planned["probe"]["boot"]["signing"]["files"] == [merged, str(device.conf)]
    assert planned["diff"][-1] == {"prepared": f"UEFI Secure Boot: boot.sign_command signs {merged}, {device.conf}\n"}
    res, phases = run_action(device, args)
    assert phases == ["probe", "apply"] and res["reboot"] is True, res.get("msg")
    assert {res["report"][x]["status"] for x in ("swiotlb", "carveouts")} == {"staged"}
    assert hook_calls(log) == [merged, str(device.conf)] and res["apply"]["boot"]["done"]["signed"] == hook_calls(log)
    for path in hook_calls(log):
        assert Path(path + ".sig").read_text() == hashlib.sha256(Path(path).read_bytes()).hexdigest() + "\n"
    assert not list(device.root.rglob("*.sig.edgeslim-prev"))
    assert json.loads((device.state / "pending/carveouts.json").read_text())["sign_command"] == hook
    again, _phases = run_action(device, args)  # the merged DTB is compared on the device: apply runs, finds it
    assert again["changed"] is False and len(hook_calls(log)) == 2


def test_a_failing_hook_rolls_back_and_reports_the_signatures_it_could_not_redo(device, monkeypatch):
    set_secure_boot(device, True)
    hook, log = sign_hook(device.tmp)
    stock = device.conf.read_bytes()
    Path(str(device.conf) + ".sig").write_text("stock\n")
    monkeypatch.setenv("SIGN_FAIL", "extlinux.conf")
    res, phases = run_action(device, {**boot_args(device), "sign_command": hook}, layers=("swiotlb",))
    assert phases == ["probe", "apply"] and res["failed"] and res["changed"] is True
    rec = res["report"]["swiotlb"]
    assert rec["status"] == "rolled_back" and "signing service refused" in rec["details"]["error"]
    assert rec["details"]["sign_warnings"] == res["warnings"] and str(device.conf) in res["warnings"][0]
    assert hook_calls(log) == [str(device.conf)] * 2  # the write, then the restored file
    assert device.conf.read_bytes() == stock and Path(str(device.conf) + ".sig").read_text() == "stock\n"
    assert device.pending() == []


def test_the_hook_is_not_run_without_secure_boot_and_must_be_an_argv(device):
    hook, log = sign_hook(device.tmp)
    res, phases = run_action(device, {**boot_args(device), "sign_command": " ".join(hook)})
    assert phases == [] and res["failed"] and "boot.sign_command must be a list" in res["msg"]
    res, phases = run_action(device, {**boot_args(device), "sign_command": hook[:2]})
    assert phases == [] and res["failed"] and "does not name the file to sign" in res["msg"]
    set_secure_boot(device, False)
    res, phases = run_action(device, {**boot_args(device), "sign_command": hook})
    assert phases == ["probe", "apply"] and res["report"]["swiotlb"]["status"] == "staged", res.get("msg")
    assert hook_calls(log) == [] and not (device.conf.parent / "extlinux.conf.sig").exists()


def test_merged_method_made_on_the_controller(device):
    res, _phases = run_action(device, boot_args(device, carveouts_fdt_method="merged"), layers=("carveouts",))
    assert res["report"]["carveouts"]["status"] == "staged", res.get("msg")
    merged = device.root / "boot/edgeslim/kernel-carveouts.dtb"
    assert merged.is_file()
    text = device.conf.read_text()
    assert "FDT /boot/edgeslim/kernel-carveouts.dtb" in text and "OVERLAYS" not in text
    assert ov.parse_fdt(merged.read_bytes()) is not None
    journal = json.loads(Path(device.journal).read_text())["layers"]["carveouts"]
    assert journal["owned"]["fdt"] == DTB


def test_verify_run_after_the_reboot(device, tmp_path):
    shutil.copytree(device.tree, tmp_path / "own-dt")
    device.tree = tmp_path / "own-dt"
    args = boot_args(device)
    args["swiotlb"]["debugfs_path"] = str(device.tmp / "swiotlb")
    res, _phases = run_action(device, args)
    assert res["reboot"] is True, res.get("msg")
    reboot_into(device, res["apply"])

    def verify_run(before: dict) -> tuple:
        task = mock.MagicMock()
        task.args = {"profile": PROFILE, "layers": ["swiotlb", "carveouts"], "boot": args, "before": before,
                     "journal_path": device.journal}  # fmt: skip
        task.check_mode = False
        plugin = action.ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), None)
        phases = []

        def execute(name, module_args, task_vars):
            phases.append(module_args["phase"])
            return device.run(module_args["phase"], module_args["boot"], before=module_args["before"])

        with (
            mock.patch.object(ActionBase, "run", return_value={}),
            mock.patch.object(plugin, "_execute_module", execute),
        ):
            return plugin.run(task_vars={}), phases

    verified, phases = verify_run(res["apply"]["boot"]["snapshot"])
    assert phases == ["verify"] and not verified.get("failed"), verified.get("msg")
    assert {verified["report"][x]["status"] for x in ("swiotlb", "carveouts")} == {"applied"}
    (device.state / "boot-commit" / "carveouts.json").write_text(
        json.dumps({"status": "reverted", "failures": ["node /bus@0/display@13800000 enabled"]})
    )
    verified, _phases = verify_run(res["apply"]["boot"]["snapshot"])
    assert (
        verified["failed"]
        and "did not commit the carveouts change (reverted): node /bus@0/display@13800000 enabled" in verified["msg"]
    )


@pytest.mark.parametrize("restored", [None, True, False])
def test_a_boot_failure_after_the_services_layer_keeps_its_record(restored):
    plugin = action.ActionModule(mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock(),
                                 mock.MagicMock(), None)  # fmt: skip
    plugin._boot_layers = ["swiotlb", "carveouts"]
    services = {"status": "applied", "reclaimed_mb": 800.0}
    applied = {"failed": True, "changed": True, "boot_failed": True, "msg": "boom", "services": {"record": services}}
    if restored is not None:
        applied.update(restored=restored, restore_error="" if restored else "cannot remove x")
    res = plugin._apply_failed({"report": {}}, {"services": {}, "boot": {}}, applied)
    assert res["failed"] and res["changed"] is True and res["report"]["services"] == services
    expected = {None: "failed", True: "rolled_back", False: "failed"}[restored]
    assert {res["report"][x]["status"] for x in ("swiotlb", "carveouts")} == {expected}
    details = res["report"]["swiotlb"]["details"]
    if restored is None:
        assert details["changed"] is False
    elif restored is False:
        assert details["restore_error"] == "cannot remove x"


def test_boot_checks_per_layer_reach_the_device(device):
    """boot.checks.<layer> (the module's form: the management switch among them) and boot.<layer>.checks are both
    passed on; the management path is armed unless switched off."""
    args = boot_args(device)
    args["checks"] = {"swiotlb": {"management": False, "units_active": ["ssh.service"]}}
    args["carveouts"] = {"checks": {"management_wait": 30}}
    res, phases = run_action(device, args)
    assert phases == ["probe", "apply"] and res["changed"] is True, res.get("msg")
    swiotlb = json.loads((device.state / "pending/swiotlb.json").read_text())["checks"]
    carveouts = json.loads((device.state / "pending/carveouts.json").read_text())["checks"]
    assert swiotlb["management"] is False and swiotlb["units_active"] == ["ssh.service"]
    assert carveouts["management"]["interface"] == "eth0" and carveouts["management"]["wait"] == 30
    bad, phases = run_action(device, {**boot_args(device), "checks": {"services": {"command": "true"}}})
    assert phases == ["probe"] and bad["failed"] and "boot.checks.services" in bad["msg"]


def test_each_layer_reboots_by_its_own_policy_else_the_common_one(device):
    # swiotlb unset ("") inherits edgeslim_reboot_ok: true; carveouts' own false overrides it.
    res, phases = run_action(device, boot_args(device, swiotlb_reboot_ok="", carveouts_reboot_ok=False))
    assert phases == ["probe", "apply"] and res["reboot"] is True, res.get("msg")
    assert res["report"]["swiotlb"]["status"] == "staged"
    assert res["report"]["carveouts"]["status"] == "pending_reboot"
