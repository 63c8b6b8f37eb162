"""edgeslim.jetson.engine, boot layers under UEFI Secure Boot (device module): the signing hook (a real script run by
subprocess, writing sha256(file) as <file>.sig) signs the overlay and extlinux.conf apply writes; a hook that fails
or writes an empty .sig fails apply, which restores extlinux.conf, the files, the pending records, the journal and
the previous signatures, then signs what it restored again (a warning when it cannot); Secure Boot off runs no hook;
Secure Boot without a hook is refused before any change."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import bootdevice
import pytest
from ansible.module_utils import basic
from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_sign as sg
from bootdevice import DTC, OVERLAY, Device, compiled, hook_calls, set_secure_boot, sign_hook

tree_fixture = bootdevice.tree_fixture  # pytest finds the fixture "tree" of bootdevice.py here

pytestmark = pytest.mark.skipif(DTC is None, reason="dtc not installed")

SWIOTLB = {"slots": 2048}
CARVEOUTS = {"recipes": ["headless"], "fdt_method": "overlays"}
STOCK_SIG = b"stock signature of extlinux.conf\n"


@pytest.fixture
def device(tmp_path, tree) -> Device:
    dev = Device(tmp_path, tree)
    set_secure_boot(dev, True)
    dev.hook, dev.log = sign_hook(tmp_path)
    Path(str(dev.conf) + ".sig").write_bytes(STOCK_SIG)
    return dev


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("SIGN_FAIL", "SIGN_FAIL_ONCE", "SIGN_EMPTY"):
        monkeypatch.delenv(name, raising=False)


def request(device: Device, carveouts: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Probe, then the boot request with the overlay compiled as the action plugin does it."""
    carveouts = carveouts or CARVEOUTS
    probe = device.run("probe", device.boot(swiotlb=SWIOTLB, carveouts=carveouts, **extra))
    assert not probe.get("failed"), probe.get("msg")
    dtbo = compiled(probe["boot"]["carveouts"]["dts"], device.tmp)
    return device.boot(swiotlb=SWIOTLB, carveouts={**carveouts, "dtbo_b64": dtbo}, **extra)


def sha(path: Path) -> bytes:
    return (hashlib.sha256(path.read_bytes()).hexdigest() + "\n").encode()


def hooked(device: Device) -> list[str]:
    return hook_calls(device.log)


def set_aside_left(device: Device) -> list[str]:
    return [str(p) for p in device.tmp.rglob("*.sig.edgeslim-prev")]


def test_hook_signs_every_boot_file_apply_writes(device):
    overlay = device.root / OVERLAY.lstrip("/")
    boot = request(device, sign_command=device.hook)
    probe = device.run("probe", boot)
    assert probe["boot"]["signing"] == {"secure_boot": True, "hook": True, "active": True,
                                        "files": [str(overlay), str(device.conf)]}  # fmt: skip
    assert "signs " + str(overlay) + ", " + str(device.conf) in probe["diff"][-1]["prepared"]
    planned = device.run("apply", boot, check=True)
    assert planned["changed"] is False and hooked(device) == [] and device.moves == []
    assert planned["diff"][-1]["prepared"] == probe["diff"][-1]["prepared"]
    res = device.run("apply", boot)
    assert res["changed"] is True, res.get("msg")
    assert res["boot"]["done"]["signed"] == [str(overlay), str(device.conf)]
    assert hooked(device) == [str(overlay), str(device.conf)]  # not the overlay's source, which nothing boots
    assert Path(str(overlay) + ".sig").read_bytes() == sha(overlay)
    assert Path(str(device.conf) + ".sig").read_bytes() == sha(device.conf) != STOCK_SIG
    assert "DEFAULT edgeslim" in device.conf.read_text() and set_aside_left(device) == []
    assert not (device.root / "boot/edgeslim/carveouts.dts.sig").exists()
    # The checker signs extlinux.conf again when it reverts at boot.
    for layer in ("swiotlb", "carveouts"):
        assert json.loads((device.state / "pending" / f"{layer}.json").read_text())["sign_command"] == device.hook
    again = device.run("apply", boot)
    assert again["changed"] is False and len(hooked(device)) == 2


def state(device: Device) -> dict[str, Any]:
    boot_files = {str(p.relative_to(device.root)): p.read_bytes() for p in device.root.rglob("*") if p.is_file()
                  and ".extlinux.conf.bak" not in p.name and "extlinux.conf.edgeslim-" not in p.name}  # fmt: skip
    journal = json.loads(Path(device.journal).read_text())["layers"] if os.path.exists(device.journal) else {}
    return {"files": boot_files, "pending": device.pending(), "journal": journal}


@pytest.mark.parametrize("fault", ["rc1", "empty", "extlinux_only", "extlinux_once"])
def test_a_failed_signature_restores_everything(device, monkeypatch, fault):
    boot = request(device, sign_command=device.hook)
    before = state(device)
    before_conf = device.conf.read_bytes()
    if fault == "empty":
        monkeypatch.setenv("SIGN_EMPTY", "1")
    else:
        monkeypatch.setenv("SIGN_FAIL", "/boot/" if fault == "rc1" else "extlinux.conf")
    if fault == "extlinux_once":
        monkeypatch.setenv("SIGN_FAIL_ONCE", "1")
    warned: list[str] = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda _self, msg: warned.append(msg))
    res = device.run("apply", boot)
    assert res["failed"] and res["stage"] == "apply" and res["changed"] is True
    assert "for UEFI Secure Boot failed" in res["msg"]
    assert res["restored"] is True, res.get("restore_error")
    overlay = str(device.root / OVERLAY.lstrip("/"))
    if fault == "empty":
        assert f"the hook left an empty {overlay}.sig" in res["msg"]
    elif fault == "rc1":
        assert "rc 1" in res["msg"] and f"signing service refused {overlay}" in res["msg"]
    else:
        assert f"signing service refused {device.conf}" in res["msg"]
    # extlinux.conf was written only when the overlay signed; then the restore signs it again.
    conf = str(device.conf)
    expected_calls = {"rc1": [overlay], "empty": [overlay], "extlinux_only": [overlay, conf, conf],
                      "extlinux_once": [overlay, conf, conf]}[fault]  # fmt: skip
    assert hooked(device) == expected_calls
    after = state(device)
    if fault == "extlinux_once":  # signed again below; everything else as before
        after["files"]["boot/extlinux/extlinux.conf.sig"] = STOCK_SIG
    assert device.conf.read_bytes() == before_conf and after == before
    assert not os.path.exists(overlay) and not os.path.exists(overlay + ".sig")
    assert set_aside_left(device) == [] and device.pending() == []
    assert not (device.etc / "systemd/edgeslim-boot-commit.service").exists()
    if fault == "extlinux_once":  # the restored file signed again: the same content, so the same signature
        assert res["sign_warnings"] == [] == warned and Path(conf + ".sig").read_bytes() == sha(device.conf)
    elif fault == "extlinux_only":  # could not sign it again: a warning, the stock signature back in place
        (warning,) = res["sign_warnings"]
        assert conf in warning and "previous signature was put back" in warning
        assert warned == res["sign_warnings"]
        assert Path(conf + ".sig").read_bytes() == STOCK_SIG
    else:  # extlinux.conf was never written: nothing to restore or sign again
        assert res.get("sign_warnings") in (None, []) and Path(conf + ".sig").read_bytes() == STOCK_SIG


def test_a_replaced_overlay_is_restored_with_its_signature(device, monkeypatch):
    """The second run replaces the signed overlay; its hook fails: the previous overlay and its .sig come back."""
    assert device.run("apply", request(device, sign_command=device.hook))["changed"] is True
    overlay = device.root / OVERLAY.lstrip("/")
    first = (overlay.read_bytes(), Path(str(overlay) + ".sig").read_bytes())
    conf = (device.conf.read_bytes(), Path(str(device.conf) + ".sig").read_bytes())
    wider = {"recipes": ["headless", "no_camera"], "fdt_method": "overlays"}
    boot = request(device, carveouts=wider, sign_command=device.hook)
    monkeypatch.setenv("SIGN_FAIL", "carveouts.dtbo")
    res = device.run("apply", boot)
    assert res["failed"] and res["restored"] is True, res.get("restore_error")
    assert (overlay.read_bytes(), Path(str(overlay) + ".sig").read_bytes()) == first
    assert (device.conf.read_bytes(), Path(str(device.conf) + ".sig").read_bytes()) == conf
    (warning,) = res["sign_warnings"]  # the restored overlay could not be signed again: the previous .sig kept
    assert str(overlay) in warning and set_aside_left(device) == []
    monkeypatch.delenv("SIGN_FAIL")
    done = device.run("apply", boot)
    assert done["changed"] is True and done["boot"]["done"]["signed"] == [str(overlay)]  # extlinux.conf unchanged
    assert Path(str(overlay) + ".sig").read_bytes() == sha(overlay) != first[1]


def test_secure_boot_off_never_runs_the_hook(device):
    set_secure_boot(device, False)
    boot = request(device, sign_command=device.hook)
    probe = device.run("probe", boot)
    assert probe["boot"]["signing"] == {"secure_boot": False, "hook": True, "active": False, "files": []}
    assert not [d for d in probe["diff"] if "prepared" in d]
    res = device.run("apply", boot)
    assert res["changed"] is True and res["boot"]["done"]["signed"] == [] and hooked(device) == []
    assert Path(str(device.conf) + ".sig").read_bytes() == STOCK_SIG
    assert json.loads((device.state / "pending/swiotlb.json").read_text())["sign_command"] == []


def test_secure_boot_without_a_hook_is_refused_before_any_change(device):
    boot = request(device)
    before = state(device)
    res = device.run("apply", boot)
    assert res["failed"] and res["changed"] is False and "UEFI Secure Boot is on" in res["msg"]
    assert "boot.sign_command" in res["msg"] and state(device) == before and device.moves == []


@pytest.mark.parametrize(
    ("command", "error"),
    [(["/usr/local/sbin/sign"], "does not name the file to sign"), (["", "{file}"], "first the program to run")],
)
def test_a_hook_that_cannot_sign_is_refused_as_input(device, command, error):
    res = device.run("apply", device.boot(swiotlb=SWIOTLB, sign_command=command))
    assert res["failed"] and res["stage"] == "input" and error in res["msg"]
    assert device.moves == [] and not os.path.exists(device.journal)


def test_the_hook_is_bounded_and_must_exist(tmp_path):
    target = tmp_path / "extlinux.conf"
    target.write_text("x")
    slow = sg.run_hook([sys.executable, "-c", "import time; time.sleep(30)", "{file}"], str(target), timeout=0.5)
    assert slow == f"the hook {sys.executable} timed out after 0.5 s"
    missing = sg.run_hook([str(tmp_path / "no-such-hook"), "{file}"], str(target))
    assert missing is not None and "cannot be run" in missing and not (tmp_path / "extlinux.conf.sig").exists()
