"""Drift of the firmware carveouts, read from the device: the live tree's reserved-memory and engine nodes (the
simulated Orin Nano's tree in the kernel's fs layout), the kernel's Memory: boot line, MemTotal and nvbootctrl
output in NVIDIA's format, against the state recorded after edgeslim's capsule; and nvbootctrl's capsule update
status after a capsule boot."""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import capsule as c
from ansible_collections.edgeslim.jetson.plugins.module_utils import carveouts_state as cs
from ansible_collections.edgeslim.jetson.plugins.modules import carveouts_info
from modhelper import run_module

SIM = Path(__file__).resolve().parents[3] / "sim"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
sys.path.insert(0, str(SIM))
import build_image
import dtb2fs

needs_dtc = pytest.mark.skipif(shutil.which("dtc") is None, reason="dtc not installed")

BOOT = """Current version: 36.4.7
Capsule update status: 1
Current bootloader slot: B
Active bootloader slot: B
num_slots: 2
slot: 0,             status: normal
slot: 1,             status: normal
"""


@pytest.fixture(scope="module")
def stock_tree(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("nano")
    dtb = base / "board.dtb"
    build_image.compile_dts(SIM / "variants" / "orin-nano-8gb" / "board.dts", dtb)
    dtb2fs.unpack(dtb.read_bytes(), base / "dt")
    return base / "dt"


@pytest.fixture
def device(stock_tree, tmp_path) -> dict:
    """A writable live tree, /proc/meminfo, a kernel log and an nvbootctrl printing a file."""
    dt = tmp_path / "dt"
    shutil.copytree(stock_tree, dt)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:        7620000 kB\nMemFree:         5000000 kB\nMemAvailable:    6000000 kB\nBuffers: 1 kB\n"
        "Cached: 1 kB\nShmem: 1 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
    )
    klog = tmp_path / "kernel.log"
    klog.write_text((FIXTURES / "l4t" / "dmesg-stock.txt").read_text())
    slots = tmp_path / "slots"
    slots.write_text(BOOT)
    tool = tmp_path / "nvbootctrl"
    tool.write_text(f'#!/bin/sh\n[ "$1" = dump-slots-info ] && exec cat {slots}\nexit 2\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return {"dt": dt, "meminfo": meminfo, "klog": klog, "slots": slots, "tool": tool,
            "record": tmp_path / "capsule.json"}  # fmt: skip


def run(device: dict, **extra) -> dict:
    args = {
        "devicetree_path": str(device["dt"]),
        "record_path": str(device["record"]),
        "nvbootctrl": [str(device["tool"])],
        "kernel_log_command": ["cat", str(device["klog"])],
        "meminfo_path": str(device["meminfo"]),
        **extra,
    }
    return run_module(carveouts_info.main, args, check=True)


def applied(device: dict) -> dict:
    """What the device looks like after edgeslim's headless capsule and overlay, recorded as the baseline."""
    shutil.rmtree(device["dt"] / "reserved-memory" / "display-framebuffer@c8000000")
    for node in ("bus@0/display@13800000", "bus@0/dce@d800000"):
        (device["dt"] / node / "status").write_bytes(b"disabled\0")
    device["klog"].write_text(device["klog"].read_text().replace("7395656K/8147968K", "7428424K/8180736K"))
    device["meminfo"].write_text(device["meminfo"].read_text().replace("7620000", "7652768"))
    state = run(device, record_path="", recipes=["headless"])["state"]
    device["record"].write_text(json.dumps({"status": "applied", "sha256": "0" * 64, "recipes": ["headless"],
                                            "state_after": state}))  # fmt: skip
    return state


def test_boot_memory_line_real_format():
    assert cs.boot_memory_total_kb((FIXTURES / "l4t" / "dmesg-stock.txt").read_text()) == 8147968
    assert cs.boot_memory_total_kb("[    0.000000] software IO TLB: mapped\n") is None
    assert cs.boot_memory_total_kb(None) is None


@needs_dtc
def test_state_read_from_the_live_tree(device):
    res = run(device, record_path="", recipes=["headless"])
    state = res["state"]
    assert state["reserved_memory"]["display-framebuffer@c8000000"] == 32 * 1048576
    assert state["reserved_memory"]["fsi-carveout@a6000000"] == 32 * 1048576
    assert state["engines"] == {"/bus@0/dce@d800000": "okay", "/bus@0/display@13800000": "okay"}
    assert (state["memtotal_kb"], state["boot_memory_total_kb"]) == (7620000, 8147968)
    assert (state["firmware_version"], state["boot_slot"]) == ("36.4.7", "B")
    assert res["capsule_update_status"] == 1 and res["changed"] is False
    assert res["baseline"] is None and res["drift"] == [] and res["checked"] is False and res["notes"] == []


@needs_dtc
def test_no_drift_right_after_the_capsule(device):
    applied(device)
    res = run(device)
    assert res["checked"] is True and res["drift"] == [] and res["unchecked"] == []
    assert res["record"] == {"status": "applied", "sha256": "0" * 64, "recipes": ["headless"]}


@needs_dtc
def test_stock_firmware_back_is_drift(device, stock_tree):
    """An L4T upgrade's stock capsule: the carveout, the engines and the memory come back."""
    applied(device)
    shutil.rmtree(device["dt"])
    shutil.copytree(stock_tree, device["dt"])
    device["klog"].write_text((FIXTURES / "l4t" / "dmesg-stock.txt").read_text())
    device["meminfo"].write_text(device["meminfo"].read_text().replace("7652768", "7620000"))
    device["slots"].write_text(BOOT.replace("36.4.7", "36.5.0").replace("slot: B", "slot: A"))
    drift = run(device)["drift"]
    assert drift == [
        "boot firmware version 36.5.0, 36.4.7 when edgeslim's capsule was verified: the firmware was replaced behind "
        "edgeslim (an L4T upgrade staging NVIDIA's capsule?)",
        "boot chain A, B when edgeslim's capsule was verified: the device boots the other chain, which need not hold "
        "edgeslim's BCT",
        "carveout display-framebuffer@c8000000 present again (32.0 MiB): firmware changed behind edgeslim",
        "engine node /bus@0/dce@d800000 enabled again (status okay, disabled when verified)",
        "engine node /bus@0/display@13800000 enabled again (status okay, disabled when verified)",
        "MemTotal 7441 MiB, 32.0 MiB below the 7473 MiB recorded after edgeslim's capsule",
        "kernel boot memory total 7957 MiB, 32.0 MiB below the 7989 MiB recorded after edgeslim's capsule",
    ]


@needs_dtc
def test_within_tolerance_and_improvements_are_not_drift(device):
    applied(device)
    device["meminfo"].write_text(device["meminfo"].read_text().replace("7652768", "7650000"))  # 2.7 MiB less
    shutil.rmtree(device["dt"] / "reserved-memory" / "ramoops_carveout")  # a carveout gone is not a regression
    assert run(device)["drift"] == []
    assert run(device, tolerance_mb=1.0)["drift"] == [
        "MemTotal 7470 MiB, 2.7 MiB below the 7473 MiB recorded after edgeslim's capsule"
    ]


@needs_dtc
def test_unreadable_signals_are_notes_never_a_pass(device):
    applied(device)
    res = run(device, nvbootctrl=["/nonexistent/nvbootctrl"], kernel_log_command=["false"])
    assert res["drift"] == [] and res["unchecked"] == ["firmware_version", "boot_slot", "boot_memory_total_kb"]
    assert res["notes"][0].startswith("no 'Memory: ...K/...K available' line from false")
    assert res["notes"][1] == "/nonexistent/nvbootctrl not found: firmware version and slot not read"


def test_no_record_no_drift_check(device, tmp_path):
    res = run(device, devicetree_path=str(tmp_path / "none"), recipes=["headless"])
    assert res["checked"] is False and res["record"] is None
    assert f"no capsule record at {device['record']}: drift not checked" in res["notes"]
    device["record"].write_text("{not json")
    res = run(device)
    assert res["failed"] and "unreadable capsule record" in res["msg"]


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (1, None),
        (None, None),
        (0, "nvbootctrl capsule update status 0: no capsule update"),
        (2, "nvbootctrl capsule update status 2: capsule installed but booting the new firmware failed"),
        (3, "nvbootctrl capsule update status 3: capsule install failed"),
        (7, "nvbootctrl capsule update status 7: a value NVIDIA does not document"),
    ],
)
def test_capsule_update_status_after_a_capsule_boot(status, failure):
    text = BOOT if status is None else BOOT.replace("Capsule update status: 1", f"Capsule update status: {status}")
    if status is None:
        text = text.replace("Capsule update status: 1\n", "")
    assert c.capsule_update_failure(c.parse_slots(text)["capsule_update_status"]) == failure
