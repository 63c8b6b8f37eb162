"""After slim + rollback: every unit, alias and the default target exactly as prepare left them."""

from __future__ import annotations

import json


def blocks(text):
    out = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines())
        out[props["Id"]] = (props["UnitFileState"], props["ActiveState"])
    return out


def test_every_unit_back_exactly(host):
    pre = blocks(host.file("/root/es-pre-state.txt").content_string)
    names = " ".join(pre)
    now = blocks(host.check_output(f"systemctl show -p Id,UnitFileState,ActiveState -- {names}"))
    assert now == pre
    assert len(pre) >= 11


def test_aliases_and_default_target_back(host):
    assert host.check_output("systemctl get-default") == "graphical.target"
    assert host.check_output("systemctl is-enabled gdm3.service display-manager.service || true").split() == [
        "alias",
        "alias",
    ]


def test_journal_layer_cleared(host):
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    assert journal == {"version": 1, "layers": {}}


def test_journald_dropin_removed(host):
    assert not host.file("/etc/systemd/journald.conf.d/60-edgeslim.conf").exists
