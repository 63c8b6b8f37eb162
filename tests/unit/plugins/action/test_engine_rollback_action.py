"""The engine action plugin's rollback on the fake device: one device run restores the layers, and the single reboot
into the restored entry follows the restored boot layers' reboot policies (layer_inputs.reboot_policy, the one the
metrics file reports by), never in check mode, never when the device already runs the restored entry."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.plugins.action import ActionBase
from ansible_collections.edgeslim.jetson.plugins.action import engine as action
from ansible_collections.edgeslim.jetson.plugins.module_utils.metrics import rebooted_after_restore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))

import bootdevice
from bootdevice import Device, compiled, task_boot, with_pool

tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here

pytestmark = pytest.mark.skipif(not shutil.which("dtc"), reason="no dtc")
STOCK = (bootdevice.FIXTURES / "extlinux" / "r36-stock.conf").read_bytes()

# The layers applied before the rollback, the policies the play sees, whether the rollback reboots.
CASES = [
    (["swiotlb"], {"edgeslim_reboot_ok": True}, True),
    (["swiotlb"], {"edgeslim_reboot_ok": True, "swiotlb_reboot_ok": False}, False),
    (["swiotlb"], {"edgeslim_reboot_ok": False, "swiotlb_reboot_ok": ""}, False),
    (["carveouts"], {"edgeslim_reboot_ok": False, "carveouts_reboot_ok": "true"}, True),
    (["swiotlb", "carveouts"], {"edgeslim_reboot_ok": False, "swiotlb_reboot_ok": True, "carveouts_reboot_ok": None},
     True),
    ([], {"edgeslim_reboot_ok": True}, False),  # nothing restored: no reboot
    (["swiotlb"], {}, False),  # undecided: the restored entry waits for the next boot
]  # fmt: skip


def apply(device: Device, layers: list[str]) -> None:
    parts: dict[str, Any] = {}
    if "swiotlb" in layers:
        parts["swiotlb"] = {"slots": 2048}
    if "carveouts" in layers:
        parts["carveouts"] = {"recipes": ["headless"], "fdt_method": "overlays"}
    if not parts:
        return
    probe = device.run("probe", device.boot(**parts))
    if "carveouts" in parts:
        parts["carveouts"]["dtbo_b64"] = compiled(probe["boot"]["carveouts"]["dts"], device.tmp)
    assert device.run("apply", device.boot(**parts))["changed"] is True


def run_rollback(device: Device, layers: list[str], check: bool = False, **args: Any) -> tuple[dict, list[str]]:
    task = mock.MagicMock()
    task.args = {"rollback": layers, "journal_path": device.journal, **args}
    task.check_mode = check
    plugin = action.ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), None)
    phases = []

    def execute(name, module_args, task_vars):
        phases.append(module_args["phase"])
        rest = {k: v for k, v in module_args.items() if k not in ("phase", "boot", "journal_path")}
        return device.run(module_args["phase"], module_args.get("boot"), check=check, **rest)

    with mock.patch.object(ActionBase, "run", return_value={}), mock.patch.object(plugin, "_execute_module", execute):
        return plugin.run(task_vars={"inventory_hostname": "r1"}), phases


@pytest.mark.parametrize(("applied", "policies", "expect"), CASES)
def test_one_reboot_when_a_restored_layer_allows_it_as_the_metrics_file_says(tmp_path, tree, applied, policies,
                                                                             expect):  # fmt: skip
    device = with_pool(Device(tmp_path, tree))
    apply(device, applied)
    res, phases = run_rollback(device, ["carveouts", "swiotlb"], boot=task_boot(device, **policies))
    assert phases == ["rollback"] and not res.get("failed"), res.get("msg")
    assert res["reboot"] is expect
    assert res["reboot_pending"] is (bool(applied) and not expect)
    assert device.conf.read_bytes() == STOCK and device.pending() == []
    results = {layer: res["report"][layer] for layer in ("carveouts", "swiotlb")}
    assert {layer for layer, rec in results.items() if rec["status"] == "rolled_back"} == set(applied)
    assert rebooted_after_restore(results, policies) is expect


def test_no_reboot_in_check_mode_or_into_the_entry_the_device_already_runs(tmp_path, tree):
    device = with_pool(Device(tmp_path, tree))
    apply(device, ["swiotlb"])
    boot = task_boot(device, edgeslim_reboot_ok=True)
    planned, _phases = run_rollback(device, ["swiotlb"], check=True, boot=boot)
    assert planned["changed"] is True and planned["reboot"] is False
    assert planned["report"]["swiotlb"]["status"] == "planned" and device.conf.read_bytes() != STOCK
    # the device reverted by itself and runs the stock entry ("primary"), which the restored file boots
    res, _phases = run_rollback(device, ["swiotlb"], boot=boot, running_label="primary")
    assert res["report"]["swiotlb"]["status"] == "rolled_back" and res["reboot"] is False
    assert res["reboot_pending"] is False and device.conf.read_bytes() == STOCK


def test_bad_layers_are_refused_before_the_device_is_read(tmp_path, tree):
    device = Device(tmp_path, tree)
    res, phases = run_rollback(device, ["swiotlb", "firmware"])
    assert res["failed"] is True and "firmware" in res["msg"] and phases == []
