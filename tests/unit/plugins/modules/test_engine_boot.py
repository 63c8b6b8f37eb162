"""edgeslim.jetson.engine, boot layers (device module): probe reads and changes nothing; apply journals first,
installs the overlay, arms commit-or-revert and writes extlinux.conf ONCE for both layers, last; an error restores
everything; a second apply changes nothing; the journal records are the ones the roles' rollback reads; verify after
the reboot gives each layer's record."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import bootdevice
import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_apply as ba
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux_edit as xe
from ansible_collections.edgeslim.jetson.plugins.modules import extlinux
from bootdevice import CAMERA, DTB, DTC, OVERLAY, REPO, Device, compiled, reboot_into
from modhelper import run_module

tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here

pytestmark = pytest.mark.skipif(DTC is None, reason="dtc not installed")
CHECKER = REPO / "roles/boot_commit/files/edgeslim-boot-commit.py"


@pytest.fixture
def device(tmp_path, tree) -> Device:
    return Device(tmp_path, tree)


SWIOTLB = {"slots": 2048}
CHECKS = {"swiotlb": {"units_active": ["ssh.service"]}}
CARVEOUTS = {"recipes": ["headless"], "fdt_method": "overlays"}


def both(device: Device) -> dict[str, Any]:
    """Probe, then the boot request with the overlay compiled as the action plugin does it."""
    probe = device.run("probe", device.boot(swiotlb=SWIOTLB, carveouts=CARVEOUTS))
    assert not probe.get("failed"), probe.get("msg")
    dtbo = compiled(probe["boot"]["carveouts"]["dts"], device.tmp)
    return device.boot(swiotlb=SWIOTLB, carveouts={**CARVEOUTS, "dtbo_b64": dtbo}, checks=CHECKS)


def test_probe_reads_everything_and_changes_nothing(device):
    before = device.conf.read_bytes()
    res = device.run("probe", device.boot(swiotlb=SWIOTLB, carveouts=CARVEOUTS))
    assert res["changed"] is False and device.conf.read_bytes() == before and device.moves == []
    boot = res["boot"]
    assert boot["layers"] == ["swiotlb", "carveouts"] and boot["changes"] is True
    assert boot["extlinux"]["summary"]["boot_label"] == "primary" and boot["extlinux"]["stock_default"] == "primary"
    assert boot["boot_space"]["free_mb"] > 0
    assert boot["device"]["soc"] == "t234" and boot["device"]["l4t"]["major"] == 36
    assert boot["swiotlb"]["previous_slots"] == 32768 and boot["swiotlb"]["attributed_mb"] > 0
    assert "swiotlb" in boot["swiotlb"]["use"]["warnings_list"][0] or boot["swiotlb"]["use"]["present"] is False
    c = boot["carveouts"]
    assert c["method"] == "overlays" and c["base_fdt"] == DTB and "/bus@0/display@13800000" in c["paths"]
    assert 'status = "disabled"' in c["dts"]
    entry = boot["extlinux"]["after_summary"]["boot_entry"]
    assert entry["label"] == "edgeslim" and entry["append"].endswith("swiotlb=2048")
    assert entry["fdt"] == DTB and entry["overlays"] == [OVERLAY]
    (diff,) = res["diff"]
    assert "swiotlb=2048" in diff["after"] and "DEFAULT edgeslim" in diff["after"]
    assert device.pending() == [] and not os.path.exists(device.journal)


def test_apply_journals_installs_arms_then_writes_extlinux_once(device):
    boot = both(device)
    device.moves.clear()
    res = device.run("apply", boot)
    assert res["changed"] is True, res.get("msg")
    done = res["boot"]["done"]
    assert done["armed"] == ["swiotlb", "carveouts"] and done["extlinux_written"] is True
    # Order of the renames: journal, boot files, checker, pending records, extlinux.conf last (one write).
    conf_moves = [i for i, d in enumerate(device.moves) if d == str(device.conf)]
    assert len(conf_moves) == 1 and conf_moves[0] == len(device.moves) - 1
    first_pending = next(i for i, d in enumerate(device.moves) if "/pending/" in d)
    overlay_i = device.moves.index(str(device.root / OVERLAY.lstrip("/")))
    assert device.moves.index(device.journal) < overlay_i < first_pending < conf_moves[0]
    assert device.pending() == ["carveouts.json", "swiotlb.json"]
    record = json.loads((device.state / "pending/swiotlb.json").read_text())
    assert record["previous_default"] == "primary" and record["checks"]["cmdline_contains"] == ["swiotlb=2048"]
    assert record["checks"]["units_active"] == ["ssh.service"]
    carve = json.loads((device.state / "pending/carveouts.json").read_text())
    assert "/bus@0/display@13800000" in carve["checks"]["dt_disabled"]
    assert ["/bin/systemctl", "enable", "edgeslim-boot-commit.service"] in device.calls
    text = device.conf.read_text()
    assert "DEFAULT edgeslim" in text and text.count("MENU LABEL edgeslim: slimmed boot entry") == 1
    assert f"OVERLAYS {OVERLAY}" in text and "swiotlb=2048" in text
    journal = json.loads(Path(device.journal).read_text())["layers"]
    assert journal["swiotlb"]["owned"] == {"kernel_args": {"swiotlb": False}}
    assert journal["carveouts"]["owned"] == {"fdt": DTB, "overlays": None}
    assert journal["carveouts"]["boot_files"][str(device.root / OVERLAY.lstrip("/"))] is None
    assert {r["status"] for r in res["boot"]["records"].values()} == {"staged"}
    assert res["boot"]["records"]["swiotlb"]["measured_by"] == "MemTotal"


def test_a_revert_whose_previous_label_is_gone_never_picks_the_managed_entry(device):
    """DEFAULT moved by hand after arming, the previous label gone: the checker reverts to the first entry that is not
    the managed one, which the record names (the DEFAULT this boot was made with may be another)."""
    assert device.run("apply", device.boot(swiotlb=SWIOTLB))["changed"] is True
    record = json.loads((device.state / "pending/swiotlb.json").read_text())
    assert record["managed_label"] == "edgeslim"
    checker = load_checker()
    conf = device.tmp / "moved.conf"
    conf.write_text("DEFAULT backup\n\nLABEL edgeslim\n  LINUX /boot/Image\n\nLABEL backup\n  LINUX /boot/Image\n")
    gone = {**record, "previous_default": "gone", "extlinux_path": str(conf)}
    assert checker.revert_target(str(conf), gone) == "backup"
    del gone["managed_label"]
    assert checker.revert_target(str(conf), gone) == "edgeslim"  # what recording the label prevents


def test_second_apply_changes_nothing_writes_nothing_arms_nothing(device):
    boot = both(device)
    assert device.run("apply", boot)["changed"] is True
    state = (device.conf.read_bytes(), device.conf.stat().st_mtime_ns, sorted(os.listdir(device.conf.parent)))
    device.moves.clear()
    device.calls.clear()
    again = device.run("apply", boot)
    assert again["changed"] is False and device.moves == []
    assert not [c for c in device.calls if c[1:2] in (["enable"], ["daemon-reload"])]
    assert (device.conf.read_bytes(), device.conf.stat().st_mtime_ns, sorted(os.listdir(device.conf.parent))) == state
    assert {r["status"] for r in again["boot"]["records"].values()} == {"unchanged"}


def test_check_mode_plans_and_writes_nothing(device):
    boot = both(device)
    res = device.run("apply", boot, check=True)
    assert res["changed"] is False and device.moves == [] and device.pending() == []
    assert {r["status"] for r in res["boot"]["records"].values()} == {"planned"}


def test_failed_extlinux_write_restores_everything(device, monkeypatch):
    boot = both(device)
    before = device.conf.read_bytes()

    def full(*_a: Any, **_k: Any) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xe, "durable_temp", full)
    res = device.run("apply", boot)
    assert res["failed"] and res["stage"] == "apply" and "file system is full" in res["msg"]
    assert res["restored"] is True and res["changed"] is True, res.get("restore_error")
    assert device.conf.read_bytes() == before
    assert not (device.root / OVERLAY.lstrip("/")).exists() and device.pending() == []
    assert not (device.etc / "systemd/edgeslim-boot-commit.service").exists()
    assert json.loads(Path(device.journal).read_text())["layers"] == {}


def test_refusals_before_any_change(device):
    bad = device.run("apply", device.boot(swiotlb={"slots": 0}))
    assert bad["failed"] and bad["stage"] == "input" and "swiotlb=0 refused" in bad["msg"]
    checks = device.run("apply", device.boot(swiotlb=SWIOTLB, checks={"swiotlb": {"command": ["true"]}}))
    assert checks["failed"] and checks["stage"] == "input" and "boot.checks.swiotlb.command refused" in checks["msg"]
    unknown = device.run("apply", device.boot(carveouts={"recipes": ["no_gpu"]}))
    assert unknown["failed"] and unknown["stage"] == "plan" and "no_gpu" in unknown["msg"]
    uncompiled = device.run("apply", device.boot(carveouts=CARVEOUTS))
    assert uncompiled["failed"] and "compiled files are missing" in uncompiled["msg"]
    assert device.moves == [] and device.pending() == [] and not os.path.exists(device.journal)


def test_kept_camera_overlay_and_one_layer_rollback_with_the_extlinux_module(device):
    text = device.conf.read_text().replace(f"      FDT {DTB}\n", f"      FDT {DTB}\n      OVERLAYS {CAMERA}\n")
    device.conf.write_text(text)
    (device.root / CAMERA.lstrip("/")).write_text("x")
    boot = both(device)
    assert device.run("apply", boot)["changed"] is True
    assert f"OVERLAYS {CAMERA},{OVERLAY}" in device.conf.read_text()
    # The roles' rollback of the carveouts layer alone (extlinux state absent) reads the engine's journal record.
    res = run_module(extlinux.main, {"path": str(device.conf), "root": str(device.root), "state": "absent",
                                     "managed_label": "edgeslim", "journal_path": device.journal,
                                     "journal_layer": "carveouts", "backup": False})  # fmt: skip
    assert res["changed"] and res["shared_with"] == ["swiotlb"]
    after = device.conf.read_text()
    assert f"OVERLAYS {CAMERA}\n" in after and "swiotlb=2048" in after and "DEFAULT edgeslim" in after


@pytest.fixture
def own_tree(tmp_path, tree) -> Path:
    shutil.copytree(tree / "dt", tmp_path / "dt")
    return tmp_path / "dt"


@pytest.mark.parametrize("case", ["applied", "reverted", "not_disabled"])
def test_verify_after_the_reboot(device, own_tree, case):
    device.tree = own_tree
    swiotlb = {**SWIOTLB, "debugfs_path": str(device.tmp / "swiotlb")}
    boot = both(device)
    boot["swiotlb"] = swiotlb
    applied = device.run("apply", boot)
    assert applied["changed"], applied.get("msg")
    before = applied["boot"]["snapshot"]
    assert before["memtotal_kb"] == 7999000 and before["boot_id"] == "boot-1"
    assert before["swiotlb_previous_slots"] == 32768
    reboot_into(device, applied, committed=case != "reverted", disable=case != "not_disabled")
    res = device.run("verify", boot, before=before)
    assert res["changed"] is False, res.get("msg")
    records = res["boot"]["records"]
    if case == "applied":
        assert {r["status"] for r in records.values()} == {"applied"}, records
        sw = records["swiotlb"]
        assert sw["attributed_mb"] == round((32768 - applied["boot"]["swiotlb"]["kernel_slots"]) * 2072 / 1048576, 1)
        assert sw["reclaimed_mb"] == min(122.0, sw["attributed_mb"])
        assert records["carveouts"]["reclaimed_mb"] == round(122.0 - sw["reclaimed_mb"], 1)
    elif case == "reverted":
        assert {r["status"] for r in records.values()} == {"reverted"}
    else:
        assert records["swiotlb"]["status"] == "applied" and records["carveouts"]["status"] == "failed"
        assert "does not show these nodes disabled" in records["carveouts"]["details"]["verification"][0]


def test_verify_needs_the_apply_snapshot(device):
    res = device.run("verify", device.boot(swiotlb=SWIOTLB))
    assert res["failed"] and res["stage"] == "input" and "before" in res["msg"]


def test_a_new_size_rearms_swiotlb_only(device):
    boot = both(device)
    assert device.run("apply", boot)["changed"] is True
    for name in ("swiotlb.json", "carveouts.json"):
        (device.state / "pending" / name).unlink()
    boot["swiotlb"] = {**SWIOTLB, "slots": 4096}
    res = device.run("apply", boot)
    assert res["changed"] is True and res["boot"]["done"]["armed"] == ["swiotlb"]
    assert res["boot"]["records"]["carveouts"]["status"] == "unchanged"
    assert device.pending() == ["swiotlb.json"] and "swiotlb=4096" in device.conf.read_text()
    journal = json.loads(Path(device.journal).read_text())["layers"]
    assert journal["swiotlb"]["owned"] == {"kernel_args": {"swiotlb": False}}  # the stock state is kept


def test_a_full_boot_partition_is_refused_before_any_change(device, monkeypatch):
    boot = both(device)
    real = os.statvfs

    class Full:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_fsid, self.f_frsize, self.f_bavail, self.f_blocks = st.f_fsid, st.f_frsize, 1, st.f_blocks

    monkeypatch.setattr(os, "statvfs", lambda path: Full(real(path)))
    res = device.run("apply", boot)
    assert res["failed"] and res["changed"] is False and "not enough space" in res["msg"]
    assert device.moves == [] and device.pending() == [] and not os.path.exists(device.journal)


# ---- the management check armed with each boot layer -------------------------------------------------------------
SSH_PATH = {"mode": "ssh", "interface": "eth0", "addresses": ["10.88.0.5"], "peer": "10.88.0.1",
            "peer_role": "controller", "ssh_port": 22, "source": "SSH_CONNECTION of process 812 (sudo)"}  # fmt: skip


def load_checker():
    spec = importlib.util.spec_from_file_location("edgeslim_boot_commit_engine", CHECKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_armed_layer_carries_the_management_path_by_default(device):
    """The probe shows the path apply records; each pending record requires it back, with the default wait."""
    probe = device.run("probe", device.boot(swiotlb=SWIOTLB, carveouts=CARVEOUTS))
    assert probe["boot"]["management"] == SSH_PATH
    res = device.run("apply", both(device))
    assert res["changed"] is True and res["boot"]["management"] == SSH_PATH, res.get("msg")
    for layer in ("swiotlb", "carveouts"):
        record = json.loads((device.state / "pending" / f"{layer}.json").read_text())
        assert record["checks"]["management"] == {**SSH_PATH, "wait": 60}
    swiotlb = json.loads((device.state / "pending/swiotlb.json").read_text())
    assert swiotlb["checks"]["units_active"] == ["ssh.service"]  # the caller's checks are kept beside it


def test_pull_mode_records_the_default_route_and_no_path_records_why(device):
    """No SSH connection (ansible-pull, a local connection): the default route's interface, its global addresses
    and its gateway; no route at all: nothing to require, and the record says why."""
    for pid in os.listdir(device.proc):
        if pid.isdigit():
            (device.proc / pid / "environ").write_bytes(b"USER=root\0")
    res = device.run("apply", device.boot(swiotlb=SWIOTLB), management_interface=None)
    record = json.loads((device.state / "pending/swiotlb.json").read_text())
    assert record["checks"]["management"] == {
        "mode": "pull", "interface": "eth0", "addresses": ["10.88.0.5"], "peer": "10.88.0.1", "peer_role": "gateway",
        "ssh_port": None, "source": "the default route (/proc/net/route, /proc/net/ipv6_route)", "wait": 60,
    }  # fmt: skip
    assert res["changed"] is True
    (device.state / "pending/swiotlb.json").unlink()
    (device.proc / "net/route").write_text((device.proc / "net/route").read_text().splitlines()[0] + "\n")
    device.run("apply", device.boot(swiotlb={"slots": 4096}), management_interface=None)
    record = json.loads((device.state / "pending/swiotlb.json").read_text())
    assert record["checks"]["management"] == {
        "skipped": "no SSH connection (ansible-pull or a local connection) and no default route at arm time: no "
        "network path to check"
    }


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ({"management": "no"}, "boot.checks.swiotlb.management refused: 'no'"),
        ({"management_wait": 0}, "boot.checks.swiotlb.management_wait must be more than 0 and at most 180 s"),
        ({"management_wait": 900}, "boot.checks.swiotlb.management_wait must be more than 0 and at most 180 s"),
        ({"management_wait": True}, "boot.checks.swiotlb.management_wait refused: True"),
        # a misspelt check would never run; a check the checker cannot time
        ({"unit_active": ["app.service"]}, "boot.checks.swiotlb.unit_active refused"),
        ({"units_active": {"a": 1}}, "boot.checks.swiotlb.units_active refused"),
        ({"units_active": [""]}, "boot.checks.swiotlb.units_active must name units"),
        ({"timeout": 0}, "boot.checks.swiotlb.timeout must be a positive number of seconds"),
    ],
)
def test_bad_health_checks_are_refused_before_any_change(device, checks, message):
    res = device.run("apply", device.boot(swiotlb=SWIOTLB, checks={"swiotlb": checks}))
    assert res["failed"] and res["stage"] == "input" and message in res["msg"], res["msg"]
    assert device.moves == [] and device.pending() == []


def test_the_device_and_the_checker_agree_on_the_wait():
    checker = load_checker()
    assert (ba.MANAGEMENT_WAIT, ba.MANAGEMENT_WAIT_MAX) == (checker.MANAGEMENT_WAIT, checker.MANAGEMENT_WAIT_MAX)


@pytest.mark.parametrize("checks", [{}, {"management_wait": 20}, {"management": False}],
                         ids=["default", "shorter-wait", "protection-removed"])  # fmt: skip
def test_a_boot_that_lost_the_network_reverts_what_the_engine_armed(device, tmp_path, monkeypatch, checks):
    """End to end: the record the engine writes, read by the real checker at a boot where eth0 never came up. By
    default it reverts after the wait; with the check switched off (the protection removed) the same boot commits."""
    res = device.run("apply", device.boot(swiotlb=SWIOTLB, checks={"swiotlb": checks}))
    assert res["changed"] is True, res.get("msg")
    checker = load_checker()
    net = tmp_path / "sys-class-net"
    (net / "eth0").mkdir(parents=True)
    (net / "eth0" / "operstate").write_text("down\n")
    now = [0.0]
    monkeypatch.setattr(checker, "SYS_NET", str(net))
    monkeypatch.setattr(checker, "CLOCK", lambda: now[0])
    monkeypatch.setattr(checker, "SLEEP", lambda s: now.__setitem__(0, now[0] + s))
    monkeypatch.setattr(checker, "in_container", lambda: True)  # the kernel checks are notes here
    real_run = checker.run
    monkeypatch.setattr(checker, "run", lambda argv, timeout=None: subprocess.CompletedProcess(argv, 0, "", "")
                        if argv[0] == "dmesg" else real_run(argv, timeout))  # fmt: skip
    reboot = checker.process(str(device.state / "pending"), str(device.state / "boot-commit"))
    verdict = json.loads((device.state / "boot-commit/swiotlb.json").read_text())
    if checks.get("management") is False:
        assert reboot is False and verdict["status"] == "committed"
        assert "management check switched off at arm time (boot.checks.<layer>.management: false)" in verdict["notes"]
        return
    wait = checks.get("management_wait", 60)
    assert reboot is True and verdict["status"] == "reverted" and now[0] == wait
    assert verdict["failures"] == [f"management interface eth0 is not up (operstate down) (waited {wait} s)"]
    assert "DEFAULT primary" in device.conf.read_text()
