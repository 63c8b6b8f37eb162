"""carveouts_fdt_method: auto -> overlays from L4T R36.2 on, merged below; overlays refused below R36.2."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.filter.fdt_method import carveouts_fdt_method
from ansible_collections.edgeslim.jetson.plugins.module_utils.l4t import parse_nv_tegra_release


def l4t(line: str) -> dict:
    return parse_nv_tegra_release(line + ", GCID: 1, BOARD: generic, EABI: aarch64, DATE: Thu Jan  1 00:00:00 UTC 2026")


R35 = l4t("# R35 (release), REVISION: 6.4")
R36_0 = {"major": 36, "minor": 0, "patch": 0, "version": "36.0.0"}
R36_2 = {"major": 36, "minor": 2, "patch": 0, "version": "36.2.0"}
R36_4 = l4t("# R36 (release), REVISION: 4.7")
R38 = l4t("# R38 (release), REVISION: 2.0")


@pytest.mark.parametrize(
    ("requested", "release", "method"),
    [
        ("auto", R36_4, "overlays"),
        ("auto", R36_2, "overlays"),
        ("auto", R38, "overlays"),
        ("auto", R36_0, "merged"),
        ("auto", R35, "merged"),
        ("overlays", R36_2, "overlays"),
        ("overlays", None, "overlays"),  # unknown release: the operator's explicit choice stands
        ("merged", R35, "merged"),
        ("merged", R36_4, "merged"),
        ("merged", None, "merged"),
    ],
)
def test_resolution(requested, release, method):
    assert carveouts_fdt_method(requested, release) == {"method": method, "error": None}


@pytest.mark.parametrize(
    ("requested", "release", "message"),
    [
        ("overlays", R35, "overlays refused on L4T 35.6.4: L4TLauncher applies the OVERLAYS line"),
        ("overlays", R36_0, "overlays refused on L4T 36.0.0"),
        ("auto", None, "the L4T release is unknown"),
        ("auto", {}, "the L4T release is unknown"),
        ("overlay", R36_4, "expected one of auto, overlays, merged"),
    ],
)
def test_refusals(requested, release, message):
    res = carveouts_fdt_method(requested, release)
    assert res["method"] is None and message in res["error"], res


def test_not_a_string():
    with pytest.raises(AnsibleFilterError):
        carveouts_fdt_method(None, R36_4)
