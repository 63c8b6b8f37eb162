"""The engine action plugin with the run around the layers (lock, pre-flight, report snapshots, metrics) on the fake
device: how many device runs each case makes, which run takes and gives back the lock, and what the caller gets."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.edgeslim.jetson.plugins.action import engine as action
from conftest import swiotlb_debugfs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))

import bootdevice
from bootdevice import Device, FakeLock, reboot_into, set_secure_boot, task_boot, with_pool

fake_lock_fixture = bootdevice.fake_lock_fixture  # pytest finds the fixture "fake_lock" of bootdevice.py here
tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here

pytestmark = pytest.mark.skipif(not (shutil.which("dtc") and shutil.which("fdtoverlay")), reason="no dtc")
PROFILE = {"services": {}, "blocks": [], "swiotlb": {"size_mib": 4}, "carveouts": {"recipes": ["headless"]}}
SET_BY_THE_FAKE = ("phase", "boot", "journal_path", "management_interface", "measure")


@pytest.fixture
def device(tmp_path, tree, fake_lock) -> Device:
    return with_pool(Device(tmp_path, tree))


def task_args(device: Device, **settings: Any) -> dict[str, Any]:
    return {
        "profile": PROFILE,
        "layers": ["swiotlb", "carveouts"],
        "boot": task_boot(device, **{"edgeslim_reboot_ok": False, **settings}),
        "journal_path": device.journal,
        "management_interface": "eth0",
        "lock": {"run_id": "run-1", "path": "/run/edgeslim/device.lock", "holder": {"user": "alice"}},
        "preflight": {"devicetree_path": str(device.tree), "release_path": str(device.tmp / "nv_tegra_release"),
                      "efivars_path": str(device.tmp / "efivars"), "boot_path": str(device.root / "boot")},
        "report": True,
        "metrics": {"path": str(device.tmp / "metrics/edgeslim.prom"), "journal_path": device.journal},
    }  # fmt: skip


def run_action(
    device: Device, args: dict[str, Any], drop: str | None = None, killed: str | None = None, gone: str | None = None
):
    task = mock.MagicMock()
    task.args = args
    task.check_mode = False
    plugin = action.ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), None)
    phases = []

    def execute(name, module_args, task_vars):
        phases.append(module_args["phase"])
        if module_args["phase"] == drop:
            raise AnsibleConnectionFailure("Failed to connect to the host via ssh: Connection closed")
        if module_args["phase"] == gone:  # what a container connection raises for a device stopped before the module
            raise AnsibleError("Failed to set permissions on remote files (rc: 255, err: Error: OCI runtime error: "
                               "runc: exec failed: cannot exec in a stopped container)")  # fmt: skip
        if module_args["phase"] == killed:  # what a container connection returns for a command killed by a reboot
            return {"failed": True, "msg": "MODULE FAILURE\nSee stdout/stderr for the exact error", "rc": 137}
        rest = {k: v for k, v in module_args.items() if k not in SET_BY_THE_FAKE}
        return device.run(module_args["phase"], module_args.get("boot"), **rest)

    with mock.patch.object(ActionBase, "run", return_value={}), mock.patch.object(plugin, "_execute_module", execute):
        res = plugin.run(task_vars={"ansible_run_tags": ["all"], "ansible_skip_tags": [], "inventory_hostname": "r1"})
    return res, phases


def test_two_device_runs_without_a_reboot_and_one_on_a_rerun(device):
    res, phases = run_action(device, task_args(device))
    assert phases == ["probe", "apply"] and not res.get("failed"), res.get("msg")
    assert res["report"]["swiotlb"]["status"] == "pending_reboot" and res["lock_held"] is False
    assert FakeLock.log == ["acquired", "released"]
    assert res["preflight"]["is_jetson"] and res["memory"]["before"]["MemTotal_kb"] == 7999000
    assert res["memory"]["after"]["boot_id"] == "boot-1"
    assert "edgeslim_reboot_pending" in (device.tmp / "metrics/edgeslim.prom").read_text()
    again, phases = run_action(device, task_args(device))
    assert phases == ["probe"] and again["changed"] is False and again["lock_held"] is False
    assert FakeLock.log == ["acquired", "released"] * 2
    assert again["memory"]["before"] == again["memory"]["after"]


def test_a_reboot_follows_apply_keeps_the_lock_then_verify_takes_it_again_and_ends_the_run(device):
    res, phases = run_action(device, task_args(device, edgeslim_reboot_ok=True))
    assert phases == ["probe", "apply"] and res["reboot"] is True and res["lock_held"] is True
    assert FakeLock.log == ["acquired"]
    reboot_into(device, res["apply"], committed=True)
    args = {**task_args(device, edgeslim_reboot_ok=True), "before": res["apply"]["boot"]["snapshot"],
            "records": res["report"], "wait": {"layer": "swiotlb", "timeout": 1, "interval": 0.1}}  # fmt: skip
    args.pop("preflight")
    verified, phases = run_action(device, args)
    assert phases == ["verify"] and not verified.get("failed"), verified.get("msg")
    assert FakeLock.log == ["acquired", "acquired", "released"] and verified["lock_held"] is False
    assert verified["memory"]["after"]["boot_id"] == "boot-2"
    assert verified["verdict"]["status"] == "committed"  # the checker's verdict, for the caller's rescue


def test_a_dropped_connection_or_a_killed_module_in_verify_is_a_revert_reboot(device):
    res, _phases = run_action(device, task_args(device, edgeslim_reboot_ok=True))
    args = {**task_args(device, edgeslim_reboot_ok=True), "before": res["apply"]["boot"]["snapshot"],
            "wait": {"layer": "swiotlb", "timeout": 1}}  # fmt: skip
    verified, phases = run_action(device, args, drop="verify")
    assert phases == ["verify"] and verified["revert_reboot"] is True and verified["engine_failed"] is False
    verified, phases = run_action(device, args, killed="verify")
    assert phases == ["verify"] and verified["revert_reboot"] is True and verified["engine_failed"] is False
    verified, phases = run_action(device, args, gone="verify")
    assert (
        phases == ["verify"] and verified["revert_reboot"] is True and "stopped container" in verified["verify"]["msg"]
    )
    args.pop("wait")  # no verdict to wait for: no revert reboot is expected, the error is the task's
    with pytest.raises(AnsibleError, match="Failed to set permissions"):
        run_action(device, args, gone="verify")


def test_a_refusal_after_the_probe_ends_the_run_in_one_more_device_run(device):
    args = task_args(device)
    (device.tmp / "busy").mkdir()
    args["boot"]["swiotlb"]["debugfs_path"] = swiotlb_debugfs(device.tmp / "busy", nslabs=32768, used=10, hiwater=4000)
    before = device.conf.read_bytes()
    res, phases = run_action(device, args)
    assert phases == ["probe", "finish"] and res["failed"] and "high-water mark" in res["msg"]
    assert FakeLock.log == ["acquired", "released"] and res["lock_held"] is False
    prom = (device.tmp / "metrics/edgeslim.prom").read_text()
    assert 'edgeslim_last_run_result{playbook="slim",result="failed"} 1' in prom
    assert device.conf.read_bytes() == before and device.pending() == []


def test_a_refusal_after_a_probe_that_ended_the_run_rewrites_the_metrics_without_the_lock(device):
    res, _phases = run_action(device, task_args(device))
    assert not res.get("failed"), res.get("msg")
    args = task_args(device)
    (device.tmp / "busy").mkdir()
    args["boot"]["swiotlb"]["debugfs_path"] = swiotlb_debugfs(device.tmp / "busy", nslabs=32768, used=10, hiwater=4000)
    again, phases = run_action(device, args)
    assert phases == ["probe", "finish"] and again["failed"] and "high-water mark" in again["msg"]
    # the probe found nothing to change and gave the lock back; the finish run does not take it again
    assert FakeLock.log == ["acquired", "released", "acquired", "released"] and again["lock_held"] is False
    prom = (device.tmp / "metrics/edgeslim.prom").read_text()
    assert 'edgeslim_last_run_result{playbook="slim",result="failed"} 1' in prom


def test_preflight_refusal_and_secure_boot_skip(device):
    args = task_args(device)
    args["preflight"]["supported_l4t_majors"] = [38]
    res, phases = run_action(device, args)
    assert phases == ["probe"] and res["failed"] and res["msg"].startswith("L4T 36.4.7 on r1 is not supported")
    assert res["report"]["swiotlb"]["details"]["failed_task"] == action.PREFLIGHT and res["lock_held"] is False
    set_secure_boot(device, True)
    res, phases = run_action(device, task_args(device))
    assert phases == ["probe"] and not res.get("failed"), res.get("msg")
    assert {res["report"][x]["status"] for x in ("swiotlb", "carveouts")} == {"skipped"}
    assert "UEFI Secure Boot is on" in res["report"]["swiotlb"]["details"]["reason"]
    assert FakeLock.log == ["acquired", "released", "acquired", "released"]
