"""edgeslim.jetson.engine, the trial boot by kexec (module_utils/trial_boot.py): apply writes the managed entry but
keeps DEFAULT on the stock entry, arms the checker with the trial marker and loads the entry with ``kexec -l``
(panic= and the marker on its command line); a failed ``kexec -l`` restores everything; where kexec is missing, or
the entry has OVERLAYS, or no reboot follows, DEFAULT is switched as before and the reason is returned."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x
from ansible_collections.edgeslim.jetson.plugins.module_utils import trial_boot as tb
from bootdevice import DTB, DTC, Device, build_tree, compiled

pytestmark = pytest.mark.skipif(DTC is None, reason="dtc not installed")
KEXEC = "/usr/sbin/kexec"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("nano"))


class KexecDevice(Device):
    """The fake device with a kexec binary: ``kexec -l`` answers kexec_rc."""

    kexec_rc = 0

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        if argv and argv[0] == KEXEC:
            self.calls.append(list(argv))
            return (self.kexec_rc, "", "kexec_load failed: Cannot allocate memory\n" if self.kexec_rc else "")
        return super().__call__(argv)


@pytest.fixture
def device(tmp_path, tree, monkeypatch) -> KexecDevice:
    monkeypatch.setattr(tb, "support", lambda: {"available": True, "kexec": KEXEC, "reason": ""})
    dev = KexecDevice(tmp_path, tree)
    # Booted from the stock entry by a bootloader that added its own arguments (L4TLauncher's ${cbootargs}).
    stock = x.parse_extlinux(dev.conf.read_text())
    append = stock.get(stock.entry("primary"), "APPEND").replace("${cbootargs}", "").strip()
    (dev.tmp / "cmdline").write_text(f"tegraid=23.4 bl_prof_dataptr=2 {append}\n")
    return dev


def kexec_calls(device: Device) -> list[list[str]]:
    return [c for c in device.calls if c and c[0] == KEXEC]


def test_apply_keeps_the_stock_default_arms_the_marker_and_loads_the_entry(device):
    before = device.conf.read_text()
    res = device.run("apply", device.boot(swiotlb={"slots": 2048}, trial="auto"))
    assert res["changed"] is True, res.get("msg")
    trial = res["boot"]["trial"]
    assert trial["mode"] == "kexec" and trial["reason"] == "", trial
    text = device.conf.read_text()
    assert re.search(r"^DEFAULT primary$", text, re.M) and "LABEL edgeslim" in text and "swiotlb=2048" in text
    assert re.search(r"^DEFAULT primary$", before, re.M)
    done = res["boot"]["done"]["trial"]
    record = json.loads((device.state / "pending/swiotlb.json").read_text())
    assert record["trial"] == {"marker": done["marker"], "label": "edgeslim", "stock": "primary"}
    assert re.fullmatch(r"edgeslim\.trial=[0-9a-f]{12}", done["marker"])
    (call,) = kexec_calls(device)
    assert call == done["argv"]
    root = str(device.root)
    assert call[:3] == [KEXEC, "-l", f"{root}/boot/Image"]
    assert f"--initrd={root}/boot/initrd" in call and f"--dtb={root}{DTB}" in call
    assert call[-1].startswith("--append=")
    cmdline = call[-1][len("--append=") :].split()
    # The bootloader's own arguments first, then the entry's APPEND (without ${cbootargs}), panic= and the marker.
    assert cmdline[:2] == ["tegraid=23.4", "bl_prof_dataptr=2"]
    assert "${cbootargs}" not in cmdline and "swiotlb=2048" in cmdline
    assert cmdline[-2:] == ["panic=10", done["marker"]]
    assert res["boot"]["records"]["swiotlb"]["details"]["trial"] == "kexec"


def test_a_failed_kexec_load_restores_everything(device):
    before = device.conf.read_bytes()
    device.kexec_rc = 1
    res = device.run("apply", device.boot(swiotlb={"slots": 2048}, trial="auto"))
    assert res.get("failed") and "kexec -l of the managed entry failed (rc 1)" in res["msg"], res
    assert res["restored"] is True
    assert device.conf.read_bytes() == before and device.pending() == []
    assert [c[1] for c in kexec_calls(device)] == ["-l"]  # never loaded, so nothing to unload


def test_an_error_after_the_load_unloads_the_trial_kernel(device, monkeypatch):
    from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux_edit as xe

    def broken(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xe, "write_conf", broken)
    before = device.conf.read_bytes()
    res = device.run("apply", device.boot(swiotlb={"slots": 2048}, trial="auto"))
    assert res.get("failed") and res["restored"] is True, res
    assert [c[1] for c in kexec_calls(device)] == ["-l", "-u"]
    assert device.conf.read_bytes() == before


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no_kexec", "no kexec binary"),
        ("no_reboot", "no reboot follows"),
        ("overlays", "OVERLAYS"),
    ],
)
def test_without_a_trial_default_is_switched_and_the_reason_given(device, tmp_path, monkeypatch, case, reason):
    boot = device.boot(swiotlb={"slots": 2048}, trial="auto")
    if case == "no_kexec":
        monkeypatch.setattr(tb, "support", lambda: {"available": False, "kexec": None,
                                                    "reason": "no kexec binary (package kexec-tools)"})  # fmt: skip
    elif case == "no_reboot":
        boot["trial"] = "none"
    else:
        probe = device.run("probe", device.boot(carveouts={"recipes": ["headless"], "fdt_method": "overlays"}))
        dtbo = compiled(probe["boot"]["carveouts"]["dts"], tmp_path)
        boot = device.boot(carveouts={"recipes": ["headless"], "fdt_method": "overlays", "dtbo_b64": dtbo},
                           trial="auto")  # fmt: skip
    res = device.run("apply", boot)
    assert res["changed"] is True, res.get("msg")
    assert res["boot"]["trial"]["mode"] == "none" and reason in res["boot"]["trial"]["reason"], res["boot"]["trial"]
    assert re.search(r"^DEFAULT edgeslim$", device.conf.read_text(), re.M)
    assert kexec_calls(device) == []
    assert all("trial" not in json.loads((device.state / "pending" / p).read_text()) for p in device.pending())


def test_support_reads_binary_kernel_and_container(tmp_path, monkeypatch):
    loaded, disabled = tmp_path / "kexec_loaded", tmp_path / "kexec_load_disabled"
    lock = str(tmp_path / "no-lockdown")
    monkeypatch.setattr(tb.shutil, "which", lambda *_a, **_k: KEXEC)
    assert tb.support(str(loaded), str(disabled), container=False, lockdown=lock)["reason"].startswith(
        "the running kernel has no"
    )
    loaded.write_text("0\n")
    got = tb.support(str(loaded), str(disabled), container=False, lockdown=lock)
    assert got == {"available": True, "kexec": KEXEC, "reason": ""}
    disabled.write_text("1\n")
    assert "disabled" in tb.support(str(loaded), str(disabled), container=False, lockdown=lock)["reason"]
    assert "container" in tb.support(str(loaded), str(disabled), container=True, lockdown=lock)["reason"]
    monkeypatch.setattr(tb.shutil, "which", lambda *_a, **_k: None)
    assert (
        "no kexec binary" in tb.support(str(loaded), str(tmp_path / "none"), container=False, lockdown=lock)["reason"]
    )


def test_firmware_args_drop_the_stock_append_and_an_earlier_trial():
    running = "tegraid=23 root=/dev/vda1 rw panic=5 edgeslim.trial=aaaa quiet"
    assert tb.firmware_args(running, "${cbootargs} root=/dev/vda1 rw quiet") == ["tegraid=23"]


def test_kernel_lockdown_refuses_the_trial(tmp_path, monkeypatch):
    loaded, lockdown = tmp_path / "kexec_loaded", tmp_path / "lockdown"
    loaded.write_text("0\n")
    monkeypatch.setattr(tb.shutil, "which", lambda *_a, **_k: KEXEC)
    lockdown.write_text("none [integrity] confidentiality\n")
    got = tb.support(str(loaded), str(tmp_path / "none"), container=False, lockdown=str(lockdown))
    assert got["available"] is False and "lockdown (integrity)" in got["reason"], got
    lockdown.write_text("[none] integrity confidentiality\n")
    assert tb.support(str(loaded), str(tmp_path / "none"), container=False, lockdown=str(lockdown))["available"]


def test_secure_boot_has_no_trial(device):
    from bootdevice import set_secure_boot, sign_hook

    set_secure_boot(device, True)
    hook, _log = sign_hook(device.tmp)
    res = device.run("apply", device.boot(swiotlb={"slots": 2048}, trial="auto", sign_command=hook))
    assert res["changed"] is True, res.get("msg")
    assert res["boot"]["trial"]["mode"] == "none" and "Secure Boot" in res["boot"]["trial"]["reason"]
    assert kexec_calls(device) == []
