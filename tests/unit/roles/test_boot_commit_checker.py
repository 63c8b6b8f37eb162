"""The boot-time checker's device-tree check (dt_disabled): disabled passes, okay/missing fail, container = note."""

from __future__ import annotations

import importlib.util
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
