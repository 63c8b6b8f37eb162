"""drift_layers: the audit's findings per layer, as the fleet report lists them."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.filter.drift_layers import drift_layers

DETAILS = {
    "services": [{"unit": "gdm.service", "reason": "enabled again"}],
    "boot_entry": [{"layer": "swiotlb", "reason": "swiotlb=2048 gone from the managed entry"}],
}


def test_each_layer_lists_its_findings():
    assert drift_layers(DETAILS) == {
        "services": {"drift": ["gdm.service: enabled again"]},
        "swiotlb": {"drift": ["swiotlb=2048 gone from the managed entry"]},
    }


def test_no_finding_no_layer():
    assert drift_layers({"services": [], "boot_entry": []}) == {}
    assert drift_layers({}) == {}


def test_carveouts_findings_are_listed_without_a_boot_entry_finding():
    """A BCT carve-out that came back is drift even when the boot entry is as applied."""
    assert drift_layers(DETAILS, ["display carve-out back (32 MiB)"])["carveouts"] == {
        "drift": ["display carve-out back (32 MiB)"]
    }
    both = {"boot_entry": [{"layer": "carveouts", "reason": "OVERLAYS gone"}]}
    assert drift_layers(both, ["x"]) == {"carveouts": {"drift": ["OVERLAYS gone", "x"]}}


@pytest.mark.parametrize(("details", "findings"), [(None, []), ([], []), ({"services": [{}]}, []), ({}, "x")])
def test_bad_input_is_an_error(details, findings):
    with pytest.raises(AnsibleFilterError):
        drift_layers(details, findings)
