"""extlinux_summary: the module's parser on the controller (which entry boots next after a rollback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.filter.extlinux import extlinux_summary

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "extlinux"


def test_stock_r36_boots_primary():
    summary = extlinux_summary((FIXTURES / "r36-stock.conf").read_text())
    assert summary["default_label"] == "primary"
    assert summary["boot_label"] == "primary"
    assert summary["boot_entry"]["linux"] == "/boot/Image"


def test_default_naming_no_entry_boots_the_first():
    text = (FIXTURES / "r36-stock.conf").read_text().replace("DEFAULT primary", "DEFAULT edgeslim")
    summary = extlinux_summary(text)
    assert summary["default_label"] == "edgeslim" and not summary["default_found"]
    assert summary["boot_label"] == "primary"


@pytest.mark.parametrize("bad", ["", "DEFAULT primary\n", "LABEL a\n  APPEND x\n", None, b"LABEL a\n"])
def test_refuses_what_l4tlauncher_would_not_boot(bad):
    with pytest.raises(AnsibleFilterError):
        extlinux_summary(bad)
