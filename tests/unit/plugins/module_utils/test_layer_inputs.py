"""layer_refusals: every input refusal of the boot layers, decided before any change, and the accepted cases."""

from __future__ import annotations

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils.layer_inputs import (
    SWIOTLB_MAX_MIB,
    layer_refusals,
    reboot_policy,
    swiotlb_size_error,
)

SWIOTLB = {"swiotlb_size_mib": 4, "swiotlb_min_mib": 4, "swiotlb_reboot_ok": False, "edgeslim_reboot_ok": None,
           "swiotlb_force_below_usage": False, "swiotlb_debugfs_path": "/sys/kernel/debug/swiotlb"}  # fmt: skip
CARVEOUTS = {"carveouts_recipes": ["headless"], "carveouts_reboot_ok": True, "edgeslim_reboot_ok": None,
             "carveouts_fdt_method": "auto"}  # fmt: skip
ORIN_NANO = {"soc": "t234", "module": {"module": "p3767-0005"}, "l4t": {"major": 36, "minor": 4, "version": "36.4.7"}}
USE_2500 = {"peak_slots": 2500, "peak_mib": 4.8828125, "peak_source": "io_tlb_used_hiwater",
            "recommendation": {"size_mib": 10}}  # fmt: skip


def refused(layers, settings, **kw):
    return layer_refusals(layers, settings, **kw)["refused"]


def test_accepted_both_layers_with_the_values_the_roles_go_on_with():
    out = layer_refusals(["services", "swiotlb", "carveouts"], {**SWIOTLB, **CARVEOUTS}, info=ORIN_NANO)
    assert out == {"refused": [], "warnings": [], "swiotlb_mib": 4, "swiotlb_slots": 2048,
                   "carveouts_recipes": ["headless"], "carveouts_fdt_method": "overlays"}  # fmt: skip


def test_layers_not_applied_are_not_checked():
    assert refused(["services"], {"swiotlb_size_mib": 0, "carveouts_recipes": ["no_gpu"]}) == []
    assert refused(["carveouts"], {**CARVEOUTS, "swiotlb_size_mib": 0}, info=ORIN_NANO) == []


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 MiB"), (True, "True MiB"), (2, "2 MiB"), ("4.5", "4.5 MiB"), (-4, "-4 MiB"), ("²", "² MiB"),
     (SWIOTLB_MAX_MIB + 1, "1025 MiB"), (None, "unset"), ([4], "[4] MiB")],
    ids=repr,
)  # fmt: skip
def test_swiotlb_size_refused(size, shown):
    errors = refused(["swiotlb"], {**SWIOTLB, "swiotlb_size_mib": size})
    assert len(errors) == 1
    assert errors[0].startswith("swiotlb_size_mib") and f"SWIOTLB size {shown} refused" in errors[0]
    assert "whole number of MiB, at least 4 (swiotlb_min_mib) and at most 1024" in errors[0]


@pytest.mark.parametrize("size", [4, "8", " 16 ", SWIOTLB_MAX_MIB])
def test_swiotlb_size_accepted(size):
    out = layer_refusals(["swiotlb"], {**SWIOTLB, "swiotlb_size_mib": size})
    assert out["refused"] == [] and out["swiotlb_mib"] == int(size) and out["swiotlb_slots"] == int(size) * 512


def test_swiotlb_size_from_the_profile_when_unset():
    profile = {"swiotlb": {"size_mib": 8}}
    out = layer_refusals(["swiotlb"], {**SWIOTLB, "swiotlb_size_mib": ""}, profile=profile)
    assert out["refused"] == [] and out["swiotlb_mib"] == 8
    errors = refused(["swiotlb"], {**SWIOTLB, "swiotlb_size_mib": None}, profile={"swiotlb": {"size_mib": 1}})
    assert errors and "the profile's swiotlb.size_mib: SWIOTLB size 1 MiB refused" in errors[0]


@pytest.mark.parametrize("floor", [0, -1, "x", None, True])
def test_swiotlb_min_refused(floor):
    errors = refused(["swiotlb"], {**SWIOTLB, "swiotlb_min_mib": floor})
    assert len(errors) == 1 and errors[0].startswith("swiotlb_min_mib ") and "greater than 0" in errors[0]


def test_swiotlb_below_the_high_water_mark():
    errors = refused(["swiotlb"], SWIOTLB, swiotlb_use=USE_2500)
    assert errors == [
        "SWIOTLB size 4 MiB (2048 slots) refused: it is below the high-water mark observed on this device, 2500 slots "
        "(4.88 MiB, io_tlb_used_hiwater in /sys/kernel/debug/swiotlb). Size it with playbooks/audit.yml under the "
        "real workload (it recommends 10 MiB now), or set swiotlb_force_below_usage: true to apply it anyway"
    ]


@pytest.mark.parametrize(
    ("settings", "use"),
    [({}, {**USE_2500, "peak_slots": 2048}), ({"swiotlb_size_mib": 8}, USE_2500),
     ({"swiotlb_force_below_usage": True}, USE_2500), ({"swiotlb_force_below_usage": "yes"}, USE_2500),
     ({}, {"peak_slots": None}), ({}, None)],
)  # fmt: skip
def test_swiotlb_usage_accepted(settings, use):
    assert refused(["swiotlb"], {**SWIOTLB, **settings}, swiotlb_use=use) == []


@pytest.mark.parametrize("layer", ["swiotlb", "carveouts"])
def test_unset_reboot_policy_refused_and_only_a_warning_in_check_mode(layer):
    settings = {**SWIOTLB, **CARVEOUTS, f"{layer}_reboot_ok": None}
    title = {"swiotlb": "SWIOTLB", "carveouts": "carveouts"}[layer]
    assert refused([layer], settings, info=ORIN_NANO) == [
        f"the {title} layer needs a reboot to take effect: set edgeslim_reboot_ok (or {layer}_reboot_ok) to true to "
        "reboot in this play, or to false to record it as pending for your maintenance window"
    ]
    planned = layer_refusals([layer], {**settings, f"{layer}_reboot_ok": "None"}, info=ORIN_NANO, check_mode=True)
    assert planned["refused"] == []
    assert len(planned["warnings"]) == 1 and "check mode plans it only (status planned)" in planned["warnings"][0]


@pytest.mark.parametrize(
    ("layer_value", "common", "expect"),
    [
        (True, None, True),  # set, no common policy
        (False, None, False),
        ("yes", False, True),  # the layer's own value overrides the common one
        (False, True, False),  # ... false overriding true
        ("0", "true", False),
        (None, True, True),  # unset (null): inherits edgeslim_reboot_ok
        ("", False, False),  # unset (empty string): inherits
        ("", "1", True),
        (None, None, None),  # undecided
        ("", "", None),
        ("None", None, None),  # a role default rendered from an undefined edgeslim_reboot_ok
    ],
)
@pytest.mark.parametrize("layer", ["swiotlb", "carveouts"])
def test_effective_reboot_policy(layer, layer_value, common, expect):
    settings = {f"{layer}_reboot_ok": layer_value, "edgeslim_reboot_ok": common}
    assert reboot_policy(settings, layer) is expect
    other = "carveouts" if layer == "swiotlb" else "swiotlb"
    assert reboot_policy({**settings, f"{other}_reboot_ok": not expect}, layer) is expect  # only its own layer's


def test_effective_reboot_policy_without_any_variable_is_undecided():
    assert reboot_policy({}, "swiotlb") is None


@pytest.mark.parametrize(("layer_value", "common"), [(None, True), ("", False), (False, True), (True, None)])
def test_refusals_accept_what_the_effective_policy_decides(layer_value, common):
    # The pre-flight refusals and the engine's reboot read the same policy: a layer left unset inherits the common
    # one instead of asking for a decision.
    settings = {**SWIOTLB, "swiotlb_reboot_ok": layer_value, "edgeslim_reboot_ok": common}
    assert reboot_policy(settings, "swiotlb") is not None
    out = layer_refusals(["swiotlb"], settings)
    assert out["refused"] == [] and out["warnings"] == []


@pytest.mark.parametrize("value", [True, False, "yes", "NO", "1", 0])
def test_reboot_policy_accepted(value):
    out = layer_refusals(["swiotlb"], {**SWIOTLB, "swiotlb_reboot_ok": value})
    assert out["refused"] == [] and out["warnings"] == []


def test_reboot_policy_not_a_boolean_is_refused_even_in_check_mode():
    errors = refused(["swiotlb"], {**SWIOTLB, "swiotlb_reboot_ok": "maybe"}, check_mode=True)
    assert errors == [
        "swiotlb_reboot_ok must be true or false (or yes/no, 1/0), got 'maybe' (str); nothing was changed"
    ]


def test_reboot_policy_inherited_from_edgeslim_reboot_ok_is_named_once_as_set():
    settings = {
        **SWIOTLB,
        **CARVEOUTS,
        "edgeslim_reboot_ok": "on",
        "swiotlb_reboot_ok": "on",
        "carveouts_reboot_ok": "on",
    }
    assert refused(["swiotlb", "carveouts"], settings, info=ORIN_NANO) == [
        "edgeslim_reboot_ok must be true or false (or yes/no, 1/0), got 'on' (str); nothing was changed"
    ]


@pytest.mark.parametrize(
    ("recipes", "expect"),
    [([], "carveout recipes unset refused: name a list of headless and/or no_camera"),
     ("headless", "carveout recipes 'headless' (str) refused: name a list"),
     (["headless", "no_gpu"], "carveout recipes ['no_gpu'] refused: only the validated recipes headless and no_")],
)  # fmt: skip
def test_carveouts_recipes_refused(recipes, expect):
    errors = refused(["carveouts"], {**CARVEOUTS, "carveouts_recipes": recipes}, info=ORIN_NANO)
    assert len(errors) == 1 and expect in errors[0], errors
    assert errors[0].startswith("carveouts_recipes")


def test_carveouts_recipes_from_the_profile():
    out = layer_refusals(["carveouts"], {**CARVEOUTS, "carveouts_recipes": []}, info=ORIN_NANO,
                         profile={"carveouts": {"recipes": ["headless", "no_camera"]}})  # fmt: skip
    assert out["refused"] == [] and out["carveouts_recipes"] == ["headless", "no_camera"]


@pytest.mark.parametrize(
    ("info", "expect"),
    [({"soc": None, "module": {"module": None}}, "unknown chip; recipes exist only for T234 and T264"),
     ({"soc": "t194", "module": {"module": "p3668-0000"}}, "unknown chip 't194'"),
     ({"soc": "t234", "module": {"module": "p9999-0000"}}, "module 'p9999-0000' has no validated carveout recipe"),
     ({"soc": "t264", "module": {}}, "module 'unknown' has no validated carveout recipe")],
)  # fmt: skip
def test_carveouts_chip_or_module_refused(info, expect):
    errors = refused(["carveouts"], CARVEOUTS, info={**info, "l4t": {"major": 36, "minor": 4}})
    assert len(errors) == 1 and "refused on this device" in errors[0] and expect in errors[0], errors


def test_carveouts_thor_accepted():
    thor = {"soc": "t264", "module": {"module": "p3834-0008"}, "l4t": {"major": 38, "minor": 2}}
    out = layer_refusals(["carveouts"], {**CARVEOUTS, "carveouts_recipes": ["no_camera"]}, info=thor)
    assert out["refused"] == [] and out["carveouts_fdt_method"] == "overlays"


@pytest.mark.parametrize(
    ("method", "l4t", "resolved", "expect"),
    [("auto", {"major": 35, "minor": 6, "version": "35.6.0"}, "merged", None),
     ("merged", {}, "merged", None),
     ("overlays", {"major": 35, "minor": 6, "version": "35.6.0"}, None, "overlays refused on L4T 35.6.0"),
     ("auto", {}, None, "the L4T release is unknown"),
     ("dtbo", {"major": 36, "minor": 4}, None, "carveouts_fdt_method 'dtbo': expected one of auto, overlays, merged"),
     (3, {"major": 36, "minor": 4}, None, "carveouts_fdt_method 3 (int): expected one of")],
)  # fmt: skip
def test_carveouts_fdt_method(method, l4t, resolved, expect):
    out = layer_refusals(["carveouts"], {**CARVEOUTS, "carveouts_fdt_method": method}, info={**ORIN_NANO, "l4t": l4t})
    assert out["carveouts_fdt_method"] == resolved
    if expect is None:
        assert out["refused"] == []
    else:
        assert len(out["refused"]) == 1 and expect in out["refused"][0], out


def test_without_device_identity_only_the_inputs_are_checked():
    out = layer_refusals(["carveouts"], CARVEOUTS)
    assert out["refused"] == [] and out["carveouts_recipes"] == ["headless"] and out["carveouts_fdt_method"] is None


def test_all_messages_at_once():
    settings = {**SWIOTLB, **CARVEOUTS, "swiotlb_size_mib": 0, "swiotlb_reboot_ok": None, "carveouts_recipes": ["x"],
                "carveouts_reboot_ok": "maybe", "carveouts_fdt_method": "overlays"}  # fmt: skip
    errors = refused(["swiotlb", "carveouts"], settings, info={**ORIN_NANO, "l4t": {"major": 35, "minor": 6}})
    assert [e.split(" ", 1)[0] for e in errors] == [
        "swiotlb_size_mib:", "the", "carveouts_recipes:", "carveouts_fdt_method", "carveouts_reboot_ok"
    ]  # fmt: skip


def test_size_error_of_the_swiotlb_slots_filter_has_no_floor_variable():
    assert swiotlb_size_error(2) is None
    assert swiotlb_size_error(0, name="swiotlb_slots").startswith("swiotlb_slots: SWIOTLB size 0 MiB refused")
    assert "at least 1 and at most 1024" in swiotlb_size_error(0)
