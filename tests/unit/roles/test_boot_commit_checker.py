"""The boot-time checker: device-tree check (dt_disabled), and changes booted together commit or revert together."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import stat
from pathlib import Path

import pytest

CHECKER = Path(__file__).resolve().parents[3] / "roles/boot_commit/files/edgeslim-boot-commit.py"


@pytest.fixture
def checker(monkeypatch):
    spec = importlib.util.spec_from_file_location("edgeslim_boot_commit", CHECKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def tree(tmp_path) -> Path:
    for node, status in (("bus@0/display@13800000", b"disabled\0"), ("bus@0/dce@d800000", b"okay\0"),
                         ("bus@0/vi@15c00000", None)):  # fmt: skip
        (tmp_path / node).mkdir(parents=True)
        if status is not None:
            (tmp_path / node / "status").write_bytes(status)
    return tmp_path


def test_dt_disabled(checker, tree, monkeypatch):
    monkeypatch.setattr(checker, "in_container", lambda: False)
    spec = {"checks": {"dt_root": str(tree), "dt_disabled": ["/bus@0/display@13800000"]}}
    assert checker.checks(spec) == ([], [])
    spec["checks"]["dt_disabled"] += ["/bus@0/dce@d800000", "/bus@0/vi@15c00000", "/bus@0/gone@0"]
    failures, notes = checker.checks(spec)
    assert failures == [
        "/bus@0/dce@d800000 is okay in the live device tree (the overlay was not applied)",
        "/bus@0/vi@15c00000 is okay in the live device tree (the overlay was not applied)",
        "/bus@0/gone@0 is missing from the live device tree",
    ]
    assert notes == []


def test_dt_disabled_in_a_container_is_a_note_never_a_pass(checker, tree, monkeypatch):
    monkeypatch.setattr(checker, "in_container", lambda: True)
    failures, notes = checker.checks({"checks": {"dt_root": str(tree), "dt_disabled": ["/bus@0/dce@d800000"]}})
    assert failures == [] and notes == [
        "device-tree check for /bus@0/dce@d800000 not possible in a container (the live tree is not this boot's)"
    ]


def _pending(directory: Path, layer: str, extlinux: Path, command: str) -> None:
    doc = {"layer": layer, "extlinux_path": str(extlinux), "previous_default": "primary", "boots": 0, "max_boots": 3,
           "checks": {"command": command}}  # fmt: skip
    (directory / f"{layer}.json").write_text(json.dumps(doc))


@pytest.fixture
def boot(tmp_path, checker, monkeypatch):
    """Two layers pending on one extlinux.conf whose DEFAULT is the managed entry (one reboot for both)."""
    monkeypatch.setattr(checker, "in_container", lambda: False)
    extlinux = tmp_path / "extlinux.conf"
    extlinux.write_text("TIMEOUT 30\nDEFAULT edgeslim\n\nLABEL primary\n      LINUX /boot/Image\n")
    extlinux.chmod(0o644)
    pending, results = tmp_path / "pending", tmp_path / "results"
    pending.mkdir()
    return extlinux, pending, results


def _boot_both(checker, boot, carveouts_check: str, swiotlb_check: str) -> tuple[bool, dict]:
    """Both layers pending on the shared entry, one boot: (reboot requested, verdict per layer)."""
    extlinux, pending, results = boot
    _pending(pending, "carveouts", extlinux, carveouts_check)
    _pending(pending, "swiotlb", extlinux, swiotlb_check)
    reboot = checker.process(str(pending), str(results))
    return reboot, {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}


def test_layers_booted_together_commit_together(checker, boot):
    extlinux, pending = boot[:2]
    reboot, verdicts = _boot_both(checker, boot, "true", "true")
    assert reboot is False
    assert {k: v["status"] for k, v in verdicts.items()} == {"carveouts": "committed", "swiotlb": "committed"}
    assert "DEFAULT edgeslim" in extlinux.read_text() and not list(pending.iterdir())


def test_one_failing_layer_reverts_every_layer_of_that_boot(checker, boot):
    extlinux, pending = boot[:2]
    reboot, verdicts = _boot_both(checker, boot, "true", "false")
    assert reboot is True
    assert verdicts["swiotlb"]["status"] == "reverted"
    assert verdicts["swiotlb"]["failures"] == ["health command failed (rc 1): false"]
    # carveouts' own checks passed, but the device goes back to the entry that has neither change
    assert verdicts["carveouts"]["status"] == "reverted"
    assert verdicts["carveouts"]["failures"] == [
        "booted together with swiotlb, which failed; the shared entry is reverted"
    ]
    text = extlinux.read_text()
    assert "DEFAULT primary" in text and "DEFAULT edgeslim" not in text and not list(pending.iterdir())
    assert stat.S_IMODE(extlinux.stat().st_mode) == 0o644  # the file keeps its mode (not mkstemp's 0600)


def test_a_layer_on_another_boot_file_is_not_dragged_along(checker, boot, tmp_path):
    extlinux, pending, results = boot
    other = tmp_path / "other.conf"
    other.write_text(extlinux.read_text())
    _pending(pending, "carveouts", other, "true")
    _pending(pending, "swiotlb", extlinux, "false")
    assert checker.process(str(pending), str(results)) is True
    assert json.loads((results / "carveouts.json").read_text())["status"] == "committed"
    assert "DEFAULT edgeslim" in other.read_text()


def test_a_revert_is_signed_with_the_hook_of_the_pending_record(checker, boot, tmp_path):
    """UEFI Secure Boot: the rewritten extlinux.conf gets a fresh .sig from the hook recorded at arm time."""
    extlinux, pending, results = boot
    signer = tmp_path / "sign.sh"
    signer.write_text('#!/bin/sh\nsha256sum "$1" | cut -d" " -f1 > "$1.sig"\n')
    signer.chmod(0o755)
    _pending(pending, "swiotlb", extlinux, "false")
    doc = json.loads((pending / "swiotlb.json").read_text())
    (pending / "swiotlb.json").write_text(json.dumps({**doc, "sign_command": [str(signer), "{file}"]}))
    assert checker.process(str(pending), str(results)) is True
    sig = (tmp_path / "extlinux.conf.sig").read_text().strip()
    assert "DEFAULT primary" in extlinux.read_text() and sig == hashlib.sha256(extlinux.read_bytes()).hexdigest()
    assert json.loads((results / "swiotlb.json").read_text())["notes"] == []


def test_a_revert_whose_signing_fails_says_so(checker, boot, tmp_path):
    extlinux, pending, results = boot
    _pending(pending, "swiotlb", extlinux, "false")
    doc = json.loads((pending / "swiotlb.json").read_text())
    (pending / "swiotlb.json").write_text(json.dumps({**doc, "sign_command": ["true", "{file}"]}))
    assert checker.process(str(pending), str(results)) is True
    verdict = json.loads((results / "swiotlb.json").read_text())
    assert verdict["status"] == "reverted" and verdict["notes"] == [f"signing hook left no {extlinux}.sig"]
