"""Capsule orchestration pieces: nvbootctrl slot parsing and the safety rules, capsule headers (from the stand-in of
NVIDIA's tools), OsIndications bytes, and edgeslim.jetson.uefi_capsule through main()."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import capsule as c
from ansible_collections.edgeslim.jetson.plugins.modules import uefi_capsule
from modhelper import run_module

STANDIN = Path(__file__).resolve().parents[3] / "standin" / "nvidia_capsule_standin.py"

# Shapes from NVIDIA forum threads 306475 (bootloader + rootfs on an A/B image) and 247290 (after a rootfs failover).
BOOT_OK = """Current version: 36.4.3
Capsule update status: 0
Current bootloader slot: A
Active bootloader slot: A
num_slots: 2
slot: 0,             status: normal
slot: 1,             status: normal
"""
ROOTFS_OK = """Current rootfs slot: A
Active rootfs slot: A
num_slots: 2
slot: 0,             retry_count: 3,             status: normal
slot: 1,             retry_count: 3,             status: normal
"""
ROOTFS_FAILED_OVER = """Current rootfs slot: B
Active rootfs slot: B
num_slots: 2
slot: 0,             retry_count: 0,             status: unbootable
slot: 1,             retry_count: 3,             status: normal
"""


def test_parse_slots():
    boot = c.parse_slots(BOOT_OK)
    assert (boot["current"], boot["active"], boot["num_slots"], boot["version"]) == ("A", "A", 2, "36.4.3")
    assert boot["capsule_update_status"] == 0
    assert boot["slots"] == [{"slot": 0, "status": "normal"}, {"slot": 1, "status": "normal"}]
    rootfs = c.parse_slots(ROOTFS_FAILED_OVER)
    assert rootfs["slots"][0] == {"slot": 0, "retry_count": 0, "status": "unbootable"}


@pytest.mark.parametrize(
    ("boot", "rootfs", "synced", "expect"),
    [
        (BOOT_OK, None, False, []),
        (BOOT_OK, ROOTFS_OK, True, []),
        (BOOT_OK, ROOTFS_OK, False, ["confirm that the inactive rootfs slot is a current copy"]),
        (BOOT_OK, ROOTFS_FAILED_OVER, True, ["rootfs slot 0 is unbootable"]),
        (BOOT_OK.replace("Active bootloader slot: A", "Active bootloader slot: B"), None, False,
         ["boot-chain slot switch already pending"]),
        (BOOT_OK.replace("slot: 1,             status: normal", "slot: 1,             status: unbootable"), None,
         False, ["boot-chain slot 1 is unbootable"]),
        (BOOT_OK.replace("num_slots: 2", "num_slots: 1").replace("slot: 1,             status: normal\n", ""), None,
         False, ["redundancy is off"]),
        ("", None, False, ["did not report the boot-chain slots"]),
    ],
)  # fmt: skip
def test_unsafe_reasons(boot, rootfs, synced, expect):
    reasons = c.unsafe_reasons(c.parse_slots(boot), c.parse_slots(rootfs) if rootfs else None, synced)
    assert len(reasons) == len(expect)  # so zip below pairs every reason (zip strict= needs 3.10)
    for reason, text in zip(reasons, expect):
        assert text in reason


@pytest.fixture
def bsp(tmp_path, monkeypatch) -> Path:
    """A fake Linux_for_Tegra with the stand-in installed under NVIDIA's tool names."""
    root = tmp_path / "Linux_for_Tegra"
    for rel in ("l4t_generate_soc_bup.sh", "generate_capsule/l4t_generate_soc_capsule.sh"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"#!{sys.executable}\n" + STANDIN.read_text())
        (root / rel).chmod(0o755)
    monkeypatch.setenv("EDGESLIM_STANDIN_LOG", str(tmp_path / "calls.jsonl"))
    return root


def build(bsp: Path, chip: str = "t234") -> Path:
    family = {"t234": "t23x", "t264": "t26x"}[chip]
    subprocess.run([str(bsp / "l4t_generate_soc_bup.sh"), "-e", f"{family}_3767_bl_spec", family], cwd=bsp,
                   check=True)  # fmt: skip
    subprocess.run([str(bsp / "generate_capsule/l4t_generate_soc_capsule.sh"), "-i",
                    f"bootloader/payloads_{family}/bl_only_payload", "-o", "TEGRA_BL.Cap", chip], cwd=bsp,
                   check=True)  # fmt: skip
    return bsp / "TEGRA_BL.Cap"


def test_standin_records_calls_and_writes_a_capsule(bsp, tmp_path):
    cap = build(bsp)
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [x["tool"] for x in calls] == ["l4t_generate_soc_bup.sh", "l4t_generate_soc_capsule.sh"]
    assert calls[1]["argv"] == ["-i", "bootloader/payloads_t23x/bl_only_payload", "-o", "TEGRA_BL.Cap", "t234"]
    info = c.parse_capsule(cap.read_bytes())
    assert info["capsule_guid"] == str(c.FMP_CAPSULE_GUID) and info["size"] == cap.stat().st_size
    assert info["image_types"] == [str(c.IMAGE_TYPE["t234"])]
    assert c.check_image_type(info, None, "t234") == str(c.IMAGE_TYPE["t234"])
    with pytest.raises(c.CapsuleError, match="UEFI would reject it"):
        c.check_image_type(info, None, "t264")
    with pytest.raises(c.CapsuleError, match="ESRT fw_class"):
        c.check_image_type(info, "3c834404-d2d7-4912-8c1c-6e850b5f2824", "t234")


def test_malformed_capsules(bsp):
    blob = build(bsp).read_bytes()
    with pytest.raises(c.CapsuleError, match="not an FMP capsule"):
        c.parse_capsule(b"\x01" * 16 + blob[16:])
    with pytest.raises(c.CapsuleError, match="sizes inconsistent"):
        c.parse_capsule(blob[:-4])
    with pytest.raises(c.CapsuleError, match="shorter"):
        c.parse_capsule(blob[:10])


def test_os_indications_bytes():
    fresh = c.os_indications_request(None)
    assert fresh == struct.pack("<IQ", 0x07, 0x04)  # 4 attribute bytes + the 8-byte value [jetson-facts §3.5]
    other = struct.pack("<IQ", 0x07, 0x01)  # BOOT_TO_FW_UI set by someone else: kept
    assert c.os_indications_value(c.os_indications_request(other)) == 0x05
    assert c.os_indications_clear(c.os_indications_request(other)) == other
    assert c.os_indications_clear(None) is None


# ---- the module ---------------------------------------------------------------------------------------------------
@pytest.fixture
def device(tmp_path) -> dict:
    """efivars/ESRT directories and a stand-in nvbootctrl reading its output from files."""
    efivars, esrt = tmp_path / "efivars", tmp_path / "esrt/entries/entry0"
    efivars.mkdir()
    esrt.mkdir(parents=True)
    for name, value in (("fw_class", str(c.IMAGE_TYPE["t234"])), ("fw_version", "2360323"),
                        ("last_attempt_status", "0")):  # fmt: skip
        (esrt / name).write_text(value + "\n")
    state = tmp_path / "nvbootctrl"
    state.mkdir()
    (state / "bootloader").write_text(BOOT_OK)
    (state / "rootfs").write_text("")  # not A/B: the real tool fails for -t rootfs there
    tool = tmp_path / "nvbootctrl.sh"
    tool.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-t" ]; then f={state}/rootfs; else f={state}/bootloader; fi\n'
        '[ -s "$f" ] || { echo "rootfs A/B is not enabled" >&2; exit 1; }\n'
        'cat "$f"\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    esp = tmp_path / "esp/EFI/UpdateCapsule"
    esp.mkdir(parents=True)
    return {"efivars": efivars, "esrt": tmp_path / "esrt", "state": state, "tool": tool, "esp": esp}


def run(device: dict, args: dict, check: bool = False) -> dict:
    base = {
        "efivars_path": str(device["efivars"]),
        "esrt_path": str(device["esrt"]),
        "nvbootctrl": [str(device["tool"])],
    }
    return run_module(uefi_capsule.main, {**base, **args}, check=check, diff=True)


def var(device: dict) -> Path:
    return device["efivars"] / c.OS_INDICATIONS


def test_request_idempotent_check_mode_and_cancel(device, bsp):
    staged = device["esp"] / "TEGRA_BL.Cap"
    shutil.copy(build(bsp), staged)
    info = run(device, {"state": "checked", "capsule_path": str(staged)})
    assert info["unsafe"] == [] and info["rootfs_ab"] is False and info["capsule_staged"] is True
    assert info["bootloader"]["current"] == "A" and info["capsule_requested"] is False
    # status 0 before any capsule boot: only meaningful right after one (the role judges it there)
    assert info["capsule_update_failure"] == "nvbootctrl capsule update status 0: no capsule update"
    args = {"state": "requested", "capsule_path": str(staged), "chip": "t234"}
    res = run(device, args, check=True)
    assert res["changed"] and not var(device).exists()
    res = run(device, args)
    assert res["changed"] and res["image_type"] == str(c.IMAGE_TYPE["t234"])
    assert var(device).read_bytes() == struct.pack("<IQ", 7, 4)
    assert run(device, args)["changed"] is False
    back = run(device, {"state": "cancelled", "capsule_path": str(staged)})
    assert back["changed"] and not staged.exists()
    assert var(device).read_bytes() == struct.pack("<IQ", 7, 0)
    assert run(device, {"state": "cancelled", "capsule_path": str(staged)})["changed"] is False


def test_request_refused_before_any_change(device, bsp):
    staged = device["esp"] / "TEGRA_BL.Cap"
    shutil.copy(build(bsp, "t264"), staged)
    args = {"state": "requested", "capsule_path": str(staged), "chip": "t234"}
    res = run(device, args)
    assert res["failed"] and "do not include bf0d4599" in res["msg"] and not var(device).exists()
    shutil.copy(build(bsp), staged)
    (device["state"] / "rootfs").write_text(ROOTFS_FAILED_OVER)
    res = run(device, args)
    assert res["failed"] and "rootfs slot 0 is unbootable" in res["msg"] and "current copy" in res["msg"]
    (device["state"] / "rootfs").write_text(ROOTFS_OK)
    assert run(device, args)["failed"]  # A/B without the operator's word that the other slot is current
    assert run(device, {**args, "rootfs_ab_synced": True})["changed"] is True
    os.unlink(var(device))
    (device["esrt"] / "entries/entry0/last_attempt_status").write_text("6163\n")
    res = run(device, {**args, "rootfs_ab_synced": True})
    assert res["failed"] and "last capsule update failed" in res["msg"] and not var(device).exists()


def test_missing_nvbootctrl_is_unsafe(device, bsp):
    res = run(device, {"state": "checked", "nvbootctrl": ["/nonexistent/nvbootctrl"]})
    assert res["unsafe"][0] == "nvbootctrl: /nonexistent/nvbootctrl not found"


def test_inspect_on_the_controller(bsp, device):
    cap = build(bsp)
    res = run(device, {"state": "inspected", "capsule_path": str(cap), "chip": "t234"})
    assert res["changed"] is False and res["capsule"]["payload_count"] == 1
    res = run(device, {"state": "inspected", "capsule_path": str(cap.with_name("nope"))})
    assert res["failed"] and "no such capsule" in res["msg"]
