"""The engine action plugin reboots and verifies in the same task when given ``reboot`` (roles/boot_commit/tasks/
engine.yml): one reboot (ansible.builtin.reboot, run from the action), one verify run that takes the lock again and
waits for the verdict; after a revert reboot it waits for the device and verifies again until that reboot is through;
a reboot that fails, or a device that never answers again, fails the task with verify_failed (the caller restores)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase
from ansible_collections.edgeslim.jetson.plugins.action import engine as action

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))

import bootdevice
from bootdevice import Device, FakeLock, reboot_into, task_boot, with_pool
from test_engine_run_action import SET_BY_THE_FAKE, task_args

fake_lock_fixture = bootdevice.fake_lock_fixture  # pytest finds the fixture "fake_lock" of bootdevice.py here
tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here

pytestmark = pytest.mark.skipif(not (shutil.which("dtc") and shutil.which("fdtoverlay")), reason="no dtc")
REBOOT = {"timeout": 600, "boot_time_command": "", "wait_timeout": 60}


@pytest.fixture
def device(tmp_path, tree, fake_lock) -> Device:
    return with_pool(Device(tmp_path, tree))


def run(device: Device, args: dict[str, Any], reboot_fails: bool = False, drops: int = 0, committed: bool = True):
    """The action with ``args``; the reboot it runs is the fake device's (reboot_into), ``drops`` verify runs lose the
    connection first. Returns the result, the device phases and the actions the plugin ran."""
    task = mock.MagicMock()
    task.args = args
    task.check_mode = False
    plugin = action.ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), None)
    phases: list[str] = []
    actions: list[tuple[str, dict]] = []
    applied: dict[str, Any] = {}
    left = [drops]

    def execute(name, module_args, task_vars):
        phases.append(module_args["phase"])
        if module_args["phase"] == "verify" and left[0] > 0:
            left[0] -= 1
            raise AnsibleConnectionFailure("Failed to connect to the host via ssh: Connection closed")
        rest = {k: v for k, v in module_args.items() if k not in SET_BY_THE_FAKE}
        res = device.run(module_args["phase"], module_args.get("boot"), **rest)
        if module_args["phase"] == "apply":
            applied.update(res)
        return res

    def other(_plugin, name, args, task_vars):
        actions.append((name, args))
        if name.endswith("reboot"):
            if reboot_fails:
                return {"failed": True, "msg": "timed out waiting for the device to come back"}
            reboot_into(device, applied, committed=committed)
        return {"changed": name.endswith("reboot")}

    with (mock.patch.object(ActionBase, "run", return_value={}), mock.patch.object(plugin, "_execute_module", execute),
          mock.patch.object(action, "run_action", other), mock.patch.object(action.time, "sleep")):  # fmt: skip
        res = plugin.run(task_vars={"ansible_run_tags": ["all"], "ansible_skip_tags": [], "inventory_hostname": "r1"})
    return res, phases, actions


def test_one_reboot_and_one_verify_in_the_same_task(device):
    res, phases, actions = run(device, {**task_args(device, edgeslim_reboot_ok=True), "reboot": REBOOT})
    assert not res.get("failed"), res.get("msg")
    assert phases == ["probe", "apply", "verify"] and res["rebooted"] is True and res["verify_failed"] is False
    assert [name for name, _args in actions] == ["ansible.legacy.reboot"]
    assert actions[0][1] == {"msg": "edgeslim: rebooting for swiotlb and carveouts", "reboot_timeout": 600,
                             "post_reboot_delay": 3}  # fmt: skip
    assert {rec["status"] for rec in res["report"].values()} == {"applied"}, res["report"]
    assert res["verdict"]["status"] == "committed" and res["memory"]["after"]["boot_id"] == "boot-2"
    assert FakeLock.log == ["acquired", "acquired", "released"] and res["lock_held"] is False


def test_no_reboot_without_a_policy_that_allows_it(device):
    res, phases, actions = run(device, {**task_args(device), "reboot": REBOOT})
    assert phases == ["probe", "apply"] and actions == [] and "rebooted" not in res
    assert {rec["status"] for rec in res["report"].values()} == {"pending_reboot"}


def test_a_revert_reboot_is_waited_for_then_verified_again(device):
    res, phases, actions = run(device, {**task_args(device, edgeslim_reboot_ok=True), "reboot": REBOOT}, drops=1)
    assert phases == ["probe", "apply", "verify", "verify"] and not res.get("failed"), res.get("msg")
    assert [name for name, _args in actions] == ["ansible.legacy.reboot", "ansible.legacy.wait_for_connection"]
    assert "revert_reboot" not in res


def test_a_device_that_never_answers_again_fails_the_task(device):
    res, phases, _actions = run(device, {**task_args(device, edgeslim_reboot_ok=True), "reboot": REBOOT}, drops=99)
    assert res["failed"] is True and res["verify_failed"] is True and res["engine_failed"] is True
    assert "did not answer again within 60 s" in res["msg"]
    assert phases.count("verify") == 1 + 3  # the first, then one every 20 s within the 60 s


def test_a_reverted_change_fails_the_task_for_the_rescue(device):
    res, _phases, _actions = run(
        device, {**task_args(device, edgeslim_reboot_ok=True), "reboot": REBOOT}, committed=False
    )
    assert res["failed"] is True and res["verify_failed"] is True and res["changed"] is True
    assert res["report"]["swiotlb"]["status"] == "reverted"


def test_a_reboot_that_fails_fails_the_task_after_apply(device):
    res, phases, _actions = run(
        device, {**task_args(device, edgeslim_reboot_ok=True), "reboot": REBOOT}, reboot_fails=True
    )
    assert phases == ["probe", "apply"] and res["failed"] is True and res["verify_failed"] is True
    assert "timed out waiting" in res["msg"] and res["lock_held"] is True and res["rebooted"] is False


@pytest.mark.parametrize("bad", [{"timeout": 0}, {"wait_timeout": "soon"}, {"when": "now"}, "yes"])
def test_bad_reboot_options_are_refused_before_the_device_is_read(device, bad):
    res, phases, _actions = run(device, {**task_args(device, edgeslim_reboot_ok=True), "reboot": bad})
    assert res["failed"] is True and "nothing was changed" in res["msg"] and phases == []


def test_a_rollback_reboots_into_the_restored_entry_and_takes_the_lock_again(device):
    applied, _phases, _actions = run(device, task_args(device, edgeslim_reboot_ok=True))
    lock = {"run_id": "run-2", "path": "/run/edgeslim/device.lock", "ttl": 60, "holder": {}}
    args = {"rollback": ["carveouts", "swiotlb"], "journal_path": device.journal, "lock": lock,
            "boot": task_boot(device, edgeslim_reboot_ok=True), "reboot": {"timeout": 300}}  # fmt: skip
    with mock.patch.object(action.ActionModule, "_execute_module", autospec=True) as execute:
        execute.side_effect = lambda _self, name, module_args=None, task_vars=None: (
            {"held": True} if name == "edgeslim.jetson.device_lock"
            else device.run("rollback", module_args.get("boot"), layers=module_args["layers"]))  # fmt: skip
        res, _phases, actions = run_plain(args)
    assert not res.get("failed"), res.get("msg")
    assert res["rebooted"] is True and res["reboot"] is True
    assert [name for name, _args in actions] == ["ansible.legacy.reboot"] and actions[0][1]["reboot_timeout"] == 300
    relock = [c for c in execute.call_args_list if c.args[1] == "edgeslim.jetson.device_lock"]
    assert relock[0].kwargs["module_args"] == {"state": "acquired", **lock}
    assert applied["report"]["swiotlb"]["status"] == "staged"  # no reboot option: the caller reboots


def run_plain(args: dict[str, Any]):
    """The action with ``args`` and its own _execute_module (patched by the caller); other actions recorded."""
    task = mock.MagicMock()
    task.args = args
    task.check_mode = False
    plugin = action.ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), None)
    actions: list[tuple[str, dict]] = []

    def other(_plugin, name, args, task_vars):
        actions.append((name, args))
        return {"changed": True}

    with mock.patch.object(ActionBase, "run", return_value={}), mock.patch.object(action, "run_action", other):
        return plugin.run(task_vars={"inventory_hostname": "r1"}), [], actions
