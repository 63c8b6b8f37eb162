"""layer_refusals filter: its inputs are checked, and it hands the device identity and pool use to the helper."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.filter.layer_refusals import FilterModule, layer_refusals

SETTINGS = {"swiotlb_size_mib": 4, "swiotlb_min_mib": 4, "swiotlb_reboot_ok": False,
            "carveouts_recipes": ["headless"], "carveouts_reboot_ok": True, "carveouts_fdt_method": "auto"}  # fmt: skip


@pytest.mark.parametrize(("layers", "settings"), [("swiotlb", SETTINGS), ([1], SETTINGS), (["swiotlb"], [])])
def test_bad_arguments(layers, settings):
    with pytest.raises(AnsibleFilterError):
        layer_refusals(layers, settings)


def test_registered_results_are_used_and_skipped_ones_ignored():
    info = {"soc": None, "module": {}, "l4t": {"major": 36, "minor": 4}}
    use = {"peak_slots": 4000, "peak_mib": 7.8, "peak_source": "io_tlb_used_hiwater"}
    out = layer_refusals(["swiotlb", "carveouts"], SETTINGS, info=info, swiotlb_use=use)
    assert [m.split(" ", 3)[:3] for m in out["refused"]] == [
        ["SWIOTLB", "size", "4"],
        ["carveouts_recipes:", "carveout", "recipes"],
    ]
    assert layer_refusals(["swiotlb", "carveouts"], SETTINGS, info={}, swiotlb_use={}, profile=None)["refused"] == []


def test_registered():
    assert FilterModule().filters()["layer_refusals"] is layer_refusals
