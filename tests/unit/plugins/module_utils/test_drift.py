"""Drift of a slimmed device from its journal: units back after an upgrade, the managed boot entry changed."""

from __future__ import annotations

import json

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import drift as dr
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import parse_show
from conftest import FIXTURES

JOURNAL = json.loads((FIXTURES / "drift" / "journal-slimmed.json").read_text())
SLIMMED = (FIXTURES / "drift" / "extlinux-slimmed.conf").read_text()
STOCK = (FIXTURES / "extlinux" / "r36-stock.conf").read_text()
PATH = "/boot/extlinux/extlinux.conf"


def show(states: dict[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """``systemctl show`` text for the units, parsed as the module parses it."""
    text = "\n".join(
        f"Id={unit}\nLoadState={'not-found' if fs == 'not-found' else 'loaded'}\nActiveState={active}\n"
        f"UnitFileState={'' if fs == 'not-found' else fs}\n"
        for unit, (fs, active) in states.items()
    )
    blocks = parse_show(text)
    return {b["Id"]: b for b in blocks}


def slimmed_states() -> dict[str, tuple[str, str]]:
    out = {}
    for unit, record in JOURNAL["layers"]["services"]["units"].items():
        fs = {"mask": "masked", "disable": "disabled"}.get(record["action"], record["unit_file_state"])
        out[unit] = (fs, "inactive")
    return out


def test_slimmed_device_has_no_drift():
    assert dr.journaled_units(JOURNAL["layers"]["services"]) == sorted(JOURNAL["layers"]["services"]["units"])
    assert dr.services_drift(JOURNAL["layers"]["services"], show(slimmed_states())) == []
    boot = {layer: JOURNAL["layers"].get(layer) for layer in dr.BOOT_LAYERS}
    assert dr.boot_drift(boot, {PATH: SLIMMED}) == []


@pytest.mark.parametrize(
    ("unit", "now", "reason"),
    [
        # an apt upgrade's postinst: deb-systemd-helper unmask + enable, then start
        ("gdm.service", ("static", "active"), "no longer masked (unit file state static); running again (active)"),
        ("nvargus-daemon.service", ("enabled", "inactive"), "no longer masked (unit file state enabled)"),
        ("ModemManager.service", ("enabled", "active"), "enabled again (enabled); running again (active)"),
        ("avahi-daemon.socket", ("disabled", "active"), "running again (active)"),  # socket-activated by hand
        ("gnome-session-desktop.service", ("static", "activating"), "running again (activating)"),
    ],
)
def test_unit_back_is_drift(unit, now, reason):
    states = slimmed_states()
    states[unit] = now
    found = dr.services_drift(JOURNAL["layers"]["services"], show(states))
    assert [(f["unit"], f["reason"]) for f in found] == [(unit, reason)]
    assert found[0]["now"] == {"unit_file_state": now[0], "active_state": now[1]}


def test_removed_or_unread_unit_is_not_drift():
    states = slimmed_states()
    states["bluetooth.service"] = ("not-found", "inactive")  # package purged
    live = show(states)
    del live["ModemManager.service"]
    assert dr.services_drift(JOURNAL["layers"]["services"], live) == []
    assert dr.services_drift(None, {}) == []


def boot(text: str | None) -> list[str]:
    layers = {layer: JOURNAL["layers"].get(layer) for layer in dr.BOOT_LAYERS}
    return [f"{f['layer']}: {f['reason']}" for f in dr.boot_drift(layers, {PATH: text})]


def test_default_moved_back_by_hand():
    assert boot(SLIMMED.replace("DEFAULT edgeslim", "DEFAULT primary", 1)) == [
        "swiotlb: DEFAULT is 'primary', not the managed entry 'edgeslim'",
        "carveouts: DEFAULT is 'primary', not the managed entry 'edgeslim'",
    ]


def test_stock_file_put_back_by_an_l4t_upgrade():
    assert boot(STOCK) == [
        "swiotlb: the managed entry 'edgeslim' is gone",
        "carveouts: the managed entry 'edgeslim' is gone",
    ]


def test_swiotlb_argument_reverted():
    assert boot(SLIMMED.replace(" swiotlb=2048", "", 1)) == [
        "swiotlb: kernel argument swiotlb of 'edgeslim' is back to its value before edgeslim (absent)"
    ]
    # Another value is not a revert (edgeslim may resize the pool itself); only the pre-edgeslim value is drift.
    assert boot(SLIMMED.replace("swiotlb=2048", "swiotlb=4096")) == []


def test_overlays_not_compared():
    # The carveouts layer records OVERLAYS (null here) and, with a merged DTB, writes none: not drift.
    assert boot(SLIMMED.replace("      OVERLAYS /boot/edgeslim/display-off.dtbo\n", "", 1)) == []


def test_missing_or_broken_file():
    assert boot(None)[0] == "swiotlb: the boot configuration is missing or unreadable"
    assert "no longer parses" in boot("DEFAULT edgeslim\nFDTDIR /boot\n")[0]


def test_no_boot_layer_journaled_no_boot_drift():
    assert dr.boot_drift({"swiotlb": None, "carveouts": None}, {}) == []
