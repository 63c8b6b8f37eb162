"""The boot-time checker on a trial boot (a pending record with ``trial``): the boot with the marker commits by making
the managed entry DEFAULT; a boot without it is the device back on the stock entry (``trial_failed``, no rewrite, no
reboot); a trial boot whose checks fail reverts and reboots as before."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

CHECKER = Path(__file__).resolve().parents[3] / "roles/boot_commit/files/edgeslim-boot-commit.py"
MARKER = "edgeslim.trial=0123456789ab"
CONF = (
    "TIMEOUT 30\nDEFAULT primary\n\nLABEL primary\n      LINUX /boot/Image\n\nLABEL edgeslim\n      LINUX /boot/Image\n"
)


@pytest.fixture
def checker(monkeypatch):
    spec = importlib.util.spec_from_file_location("edgeslim_boot_commit_trial", CHECKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "in_container", lambda: False)
    return mod


@pytest.fixture
def device(tmp_path, checker, monkeypatch):
    extlinux = tmp_path / "extlinux.conf"
    extlinux.write_text(CONF)
    extlinux.chmod(0o644)
    cmdline = tmp_path / "cmdline"
    monkeypatch.setattr(checker, "CMDLINE", str(cmdline))
    pending, results = tmp_path / "pending", tmp_path / "results"
    pending.mkdir()
    return extlinux, cmdline, pending, results


def arm(pending: Path, extlinux: Path, layer: str = "swiotlb", command: str = "true") -> None:
    doc = {"layer": layer, "extlinux_path": str(extlinux), "previous_default": "primary", "boots": 0,
           "max_boots": 3, "checks": {"command": command},
           "trial": {"marker": MARKER, "label": "edgeslim", "stock": "primary"}}  # fmt: skip
    (pending / f"{layer}.json").write_text(json.dumps(doc))


def verdict(results: Path, layer: str = "swiotlb") -> dict:
    return json.loads((results / f"{layer}.json").read_text())


def test_the_trial_boot_commits_by_making_the_managed_entry_default(checker, device):
    extlinux, cmdline, pending, results = device
    cmdline.write_text(f"root=/dev/vda1 swiotlb=2048 panic=10 {MARKER}\n")
    arm(pending, extlinux)
    assert checker.process(str(pending), str(results)) is False
    got = verdict(results)
    assert got["status"] == "committed" and got["trial"] == "passed", got
    assert extlinux.read_text() == CONF.replace("DEFAULT primary", "DEFAULT edgeslim")
    assert extlinux.stat().st_mode & 0o777 == 0o644
    assert list(pending.iterdir()) == []


def test_a_boot_without_the_marker_is_trial_failed_and_changes_nothing(checker, device):
    extlinux, cmdline, pending, results = device
    cmdline.write_text("root=/dev/vda1 rootwait\n")  # the stock entry's: the trial kernel never reached userspace
    arm(pending, extlinux, "swiotlb")
    arm(pending, extlinux, "carveouts")
    before = extlinux.stat().st_mtime_ns
    assert checker.process(str(pending), str(results)) is False  # no reboot: DEFAULT is the stock entry
    for layer in ("swiotlb", "carveouts"):
        got = verdict(results, layer)
        assert got["status"] == "trial_failed" and got["reverted_to"] == "primary", got
        assert any(MARKER in f for f in got["failures"]), got
    assert extlinux.read_text() == CONF and extlinux.stat().st_mtime_ns == before
    assert list(pending.iterdir()) == []


def test_a_marker_of_another_trial_does_not_count(checker, device):
    extlinux, cmdline, pending, results = device
    cmdline.write_text("root=/dev/vda1 edgeslim.trial=ffffffffffff\n")
    arm(pending, extlinux)
    checker.process(str(pending), str(results))
    assert verdict(results)["status"] == "trial_failed"


def test_a_trial_boot_whose_checks_fail_reverts_and_reboots(checker, device):
    extlinux, cmdline, pending, results = device
    cmdline.write_text(f"root=/dev/vda1 {MARKER}\n")
    arm(pending, extlinux, command="false")
    assert checker.process(str(pending), str(results)) is True  # leave the trial kernel: the firmware boots stock
    got = verdict(results)
    assert got["status"] == "reverted" and got["reverted_to"] == "primary", got
    assert extlinux.read_text() == CONF  # DEFAULT never left the stock entry


def test_stock_boot_with_default_on_the_managed_entry_reverts_it(checker, device):
    """Someone made the managed entry DEFAULT before the trial was decided: the checker puts DEFAULT back."""
    extlinux, cmdline, pending, results = device
    extlinux.write_text(CONF.replace("DEFAULT primary", "DEFAULT edgeslim"))
    cmdline.write_text("root=/dev/vda1\n")
    arm(pending, extlinux)
    assert checker.process(str(pending), str(results)) is True
    assert verdict(results)["status"] == "reverted"
    assert "DEFAULT primary" in extlinux.read_text()


def test_a_commit_that_cannot_be_written_reverts(checker, device, monkeypatch):
    extlinux, cmdline, pending, results = device
    cmdline.write_text(f"{MARKER}\n")
    arm(pending, extlinux)
    real = checker.set_default

    def set_default(path: str, label: str) -> None:
        if label == "edgeslim":
            raise OSError(28, "No space left on device")
        real(path, label)

    monkeypatch.setattr(checker, "set_default", set_default)
    assert checker.process(str(pending), str(results)) is True
    got = verdict(results)
    assert got["status"] == "reverted" and any("commit of DEFAULT edgeslim" in f for f in got["failures"]), got
    assert extlinux.read_text() == CONF
