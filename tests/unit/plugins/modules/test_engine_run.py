"""The run around the engine's layers on the device (module_utils/engine_run.py, devlock.py, metrics.py): the probe
takes the lock first and runs pre-flight and the baseline; the last run writes the metrics file and gives the lock
back; verify waits for the checker's verdict itself."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import bootdevice
import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import engine_run as er
from bootdevice import Device, FakeLock, compiled, reboot_into

fake_lock_fixture = bootdevice.fake_lock_fixture  # pytest finds the fixture "fake_lock" of bootdevice.py here
tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here

SWIOTLB = {"slots": 2048}
CARVEOUTS = {"recipes": ["headless"], "fdt_method": "overlays"}
LOCK = {"run_id": "20261130T050000Z-abc123", "path": "/run/edgeslim/device.lock", "holder": {"user": "alice"}}


@pytest.fixture
def device(tmp_path, tree, fake_lock) -> Device:
    return Device(tmp_path, tree)


def run_options(device: Device, **preflight: Any) -> dict[str, Any]:
    pf = {"host": "robot-01", "devicetree_path": str(device.tree), "release_path": str(device.tmp / "nv_tegra_release"),
          "efivars_path": str(device.tmp / "efivars"), "boot_path": str(device.root / "boot"), **preflight}  # fmt: skip
    metrics = {"path": str(device.tmp / "metrics" / "edgeslim.prom"), "version": "9.9.9",
               "journal_path": device.journal}  # fmt: skip
    return {"lock": LOCK, "preflight": pf, "report": True, "metrics": metrics}


def test_the_lock_is_taken_before_anything_is_read(device):
    FakeLock.busy = True
    res = device.run("probe", device.boot(swiotlb=SWIOTLB), take_lock=True, finish="if_unchanged",
                     **run_options(device))  # fmt: skip
    assert res["failed"] and res["stage"] == "lock" and "holds the device lock" in res["msg"]
    assert res["lock"]["holder"] == {"run_id": "X"} and device.calls == []


@pytest.mark.parametrize(
    ("preflight", "message"),
    [
        ({"supported_l4t_majors": [35]}, "L4T 36.4.7 on robot-01 is not supported (supported majors: 35)"),
        ({"boot_min_free_mb": 10**9}, "MB free under"),
        ({"devicetree_path": "/nonexistent"}, "robot-01 is not a Jetson: no device tree at /nonexistent"),
    ],
)
def test_preflight_refuses_with_the_role_messages_and_gives_the_lock_back(device, preflight, message):
    before = device.conf.read_bytes()
    res = device.run("probe", device.boot(swiotlb=SWIOTLB), take_lock=True, finish="if_unchanged",
                     **run_options(device, **preflight))  # fmt: skip
    assert res["failed"] and res["stage"] == "preflight" and message in res["msg"], res["msg"]
    assert FakeLock.log == ["acquired", "released"] and res["finished"] is True
    prom = Path(res["metrics"]["path"]).read_text()
    assert 'edgeslim_last_run_result{playbook="slim",result="failed"} 1' in prom
    assert device.conf.read_bytes() == before and device.pending() == []


def test_secure_boot_without_a_hook_skips_the_boot_layers_in_preflight(device):
    from bootdevice import set_secure_boot

    set_secure_boot(device, True)
    res = device.run("probe", device.boot(swiotlb=SWIOTLB), take_lock=True, finish="if_unchanged",
                     **run_options(device))  # fmt: skip
    assert not res.get("failed"), res.get("msg")
    assert res["preflight"]["boot_layers_refused"] == er.PREFLIGHT_SECURE_BOOT and "boot" not in res
    assert res["unchanged"] and res["finished"]  # nothing else to do: the run ended in its probe


@pytest.mark.parametrize(("secure_boot", "sign_command", "refused"), [
    (True, [], er.PREFLIGHT_SECURE_BOOT),
    (True, ["sign", "{file}"], ""),
    (True, None, ""),  # not asked: no boot layer in the run
    (False, [], ""),
])  # fmt: skip
def test_preflight_on_its_own_says_whether_the_boot_layers_would_be_skipped(device, secure_boot, sign_command, refused):
    """No layer (the preflight role): the checks, the identity, and the Secure Boot verdict on its own hook."""
    from bootdevice import set_secure_boot

    set_secure_boot(device, secure_boot)
    pf = {k: v for k, v in run_options(device, sign_command=sign_command)["preflight"].items() if v is not None}
    res = device.run("probe", None, finish="if_unchanged", preflight=pf)
    assert not res.get("failed"), res.get("msg")
    assert res["preflight"]["is_jetson"] and res["preflight"]["l4t"]["major"] == 36 and res["preflight"]["boot_free_mb"]
    assert res["preflight"]["secure_boot"] is secure_boot and res["preflight"]["boot_layers_refused"] == refused
    assert res["changed"] is False and device.moves == [] and not os.path.exists(device.journal)


def test_apply_ends_the_run_then_a_rerun_is_one_probe(device):
    opts = run_options(device)
    probe = device.run("probe", device.boot(swiotlb=SWIOTLB, carveouts=CARVEOUTS), take_lock=True,
                       finish="if_unchanged", **opts)  # fmt: skip
    assert not probe.get("failed"), probe.get("msg")
    assert not probe.get("finished") and FakeLock.log == ["acquired"] and probe["lock"]["held"]
    assert probe["preflight"]["is_jetson"] and probe["preflight"]["l4t"]["major"] == 36
    assert probe["report"]["before"]["MemTotal_kb"] == 7999000 and probe["report"]["before"]["boot_id"] == "boot-1"
    dtbo = compiled(probe["boot"]["carveouts"]["dts"], device.tmp)
    boot = device.boot(swiotlb=SWIOTLB, carveouts={**CARVEOUTS, "dtbo_b64": dtbo})
    applied = device.run("apply", boot, finish="yes", **{**opts, "preflight": None})
    assert applied["changed"] and applied["finished"], applied.get("msg")
    assert FakeLock.log == ["acquired", "released"] and applied["report"]["after"]["MemTotal_kb"] == 7999000
    prom = Path(opts["metrics"]["path"]).read_text()
    # no reboot follows this apply: both boot layers wait for the next boot
    assert 'edgeslim_reboot_pending{layer="swiotlb"} 1' in prom
    assert 'edgeslim_reboot_pending{layer="carveouts"} 1' in prom
    assert 'edgeslim_last_run_result{playbook="slim",result="ok"} 1' in prom
    assert 'edgeslim_info{version="9.9.9"} 1' in prom

    again = device.run("probe", boot, take_lock=True, finish="if_unchanged", **opts)
    assert again["unchanged"] and again["finished"] and again["lock"]["held"] is False
    assert again["report"]["after"] == again["report"]["before"]
    assert FakeLock.log == ["acquired", "released", "acquired", "released"]


def test_verify_waits_for_the_verdict_and_ends_the_run(device):
    opts = run_options(device)
    probe = device.run("probe", device.boot(swiotlb=SWIOTLB, carveouts=CARVEOUTS))
    dtbo = compiled(probe["boot"]["carveouts"]["dts"], device.tmp)
    boot = device.boot(swiotlb={**SWIOTLB, "debugfs_path": str(device.tmp / "swiotlb")},
                       carveouts={**CARVEOUTS, "dtbo_b64": dtbo})  # fmt: skip
    applied = device.run("apply", boot)
    assert applied["changed"], applied.get("msg")
    reboot_into(device, applied, committed=True)
    wait = {"layer": "swiotlb", "timeout": 1, "interval": 0.1}
    res = device.run("verify", boot, before=applied["boot"]["snapshot"], take_lock=True, finish="yes", wait=wait,
                     **{**opts, "preflight": None})  # fmt: skip
    assert not res.get("failed"), res.get("msg")
    assert res["verdict"]["status"] == "committed" and res["finished"]
    assert FakeLock.log == ["acquired", "released"] and res["report"]["after"]["boot_id"] == device.boot_id


def test_a_reverted_boot_that_has_not_rebooted_yet_is_a_revert_reboot(device):
    probe = device.run("probe", device.boot(swiotlb=SWIOTLB))
    applied = device.run("apply", device.boot(swiotlb=SWIOTLB))
    assert applied["changed"] and not probe.get("failed")
    device.boot_id = "boot-2"  # the boot the checker reverted; the revert reboot has not happened yet
    (device.state / "boot-commit").mkdir(parents=True, exist_ok=True)
    verdict = device.state / "boot-commit" / "swiotlb.json"
    verdict.write_text(json.dumps({"status": "reverted", "boot_identity": device.boot_id, "failures": ["x"]}))
    res = device.run("verify", device.boot(swiotlb=SWIOTLB), before=applied["boot"]["snapshot"], take_lock=True,
                     finish="yes", lock=LOCK, wait={"layer": "swiotlb", "timeout": 0.3, "interval": 0.1})  # fmt: skip
    # the lock is taken after the verdict, in the boot to verify: not in a boot the revert ends
    assert res["revert_reboot"] is True and not res.get("finished") and FakeLock.log == []


def test_wait_verdict_polls_until_a_verdict_then_the_revert_boot():
    verdicts = iter([{"status": "no_verdict"}, {"status": "no_verdict"},
                     {"status": "reverted", "boot_identity": "b1"}])  # fmt: skip
    boots = iter(["b1", "b1", "b2"])
    clock = iter(range(100))
    verdict, pending = er.wait_verdict(lambda: next(verdicts), lambda: next(boots), 50, 1, sleep=lambda _s: None,
                                       clock=lambda: next(clock))  # fmt: skip
    assert verdict["status"] == "reverted" and pending is False


def test_wait_verdict_gives_up_at_the_deadline():
    clock = iter(range(100))
    verdict, pending = er.wait_verdict(lambda: {"status": "no_verdict", "failures": ["none"]}, lambda: "b1", 3, 1,
                                       sleep=lambda _s: None, clock=lambda: next(clock))  # fmt: skip
    assert pending is False and verdict["failures"][0] == "no verdict within 3 s"
    clock = iter(range(100))
    verdict, pending = er.wait_verdict(lambda: {"status": "reverted", "boot_identity": "b1"}, lambda: "b1", 3, 1,
                                       sleep=lambda _s: None, clock=lambda: next(clock))  # fmt: skip
    assert pending is True


def test_wait_verdict_reads_a_failing_boot_identity_as_the_revert_reboot_under_way():
    def going_down() -> str:
        raise OSError("awk: killed")

    verdict, pending = er.wait_verdict(lambda: {"status": "reverted", "boot_identity": "b1"}, going_down, 3, 1,
                                       sleep=lambda _s: None)  # fmt: skip
    assert pending is True and verdict["status"] == "reverted"
