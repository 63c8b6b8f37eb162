"""edgeslim.jetson.profile_resolve on the shipped profile data and on broken copies of it (contract 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.edgeslim.jetson.plugins.filter.profile_resolve import FilterModule, resolve_profile

PROFILES = Path(__file__).resolve().parents[4] / "profiles"


def catalog(overrides: dict[str, dict[str, str | None]] | None = None) -> dict:
    cat = {
        "dir": "profiles",
        "classes": {p.stem: p.read_text() for p in sorted((PROFILES / "classes").glob("*.yml"))},
        "blocks": {p.stem: p.read_text() for p in sorted((PROFILES / "blocks").glob("*.yml"))},
        "protected": (PROFILES / "protected.yml").read_text(),
    }
    for section, items in (overrides or {}).items():
        if section == "protected":
            cat["protected"] = items
            continue
        for name, text in items.items():
            if text is None:
                cat[section].pop(name, None)
            else:
                cat[section][name] = text
    return cat


def ok(*args, **kwargs) -> dict:
    res = resolve_profile(*args, **kwargs)
    assert res["errors"] == [], res["errors"]
    return res["profile"]


def test_filter_is_registered():
    assert FilterModule().filters()["profile_resolve"] is resolve_profile


def test_warehouse_robot():
    p = ok(catalog(), "warehouse_robot")
    assert p["blocks"] == ["headless", "no_camera", "lean_network", "lean_housekeeping", "small_swiotlb"]
    s = p["services"]
    assert s["default_target"] == "multi-user.target" and s["default_target_block"] == "headless"
    assert {"gdm.service", "gdm3.service", "packagekit.service"} <= set(s["mask"])
    assert {"nvargus-daemon.service", "avahi-daemon.service", "avahi-daemon.socket", "cups.path"} <= set(s["disable"])
    assert not set(s["mask"]) & set(s["disable"])
    assert s["units"]["avahi-daemon.socket"]["companion_of"] == "avahi-daemon.service"
    assert p["swiotlb"] == {"size_mib": 4}  # swiotlb=2048 slots [SKILL-MEM]
    assert p["carveouts"] == {"recipes": ["headless", "no_camera"]}
    assert "sshd.service" in p["protected"] and "nv-l4t-bootloader-config.service" in p["protected"]
    assert s["blocks"]["no_camera"] == ["nvargus-daemon.service"]


def test_every_unit_has_why_and_source_and_every_block_is_resolvable():
    for block in catalog()["blocks"]:
        p = ok(catalog(), "devkit", extra_blocks=[block])
        for unit, info in p["services"]["units"].items():
            assert info["why"] and info["source"], unit


def test_smart_camera_keeps_camera_and_devkit_is_empty():
    cam = ok(catalog(), "smart_camera")
    assert "nvargus-daemon.service" not in cam["services"]["disable"] + cam["services"]["mask"]
    assert cam["carveouts"] == {"recipes": ["headless"]} and cam["swiotlb"] is None
    dev = ok(catalog(), "devkit")
    assert dev["services"] == {
        "default_target": None,
        "default_target_block": None,
        "disable": [],
        "mask": [],
        "keep": [],
        "units": {},
        "blocks": {},
    }
    assert dev["swiotlb"] is None and dev["carveouts"] is None


def test_extra_blocks_and_keep():
    p = ok(catalog(), "smart_camera", extra_blocks=["no_pva", "journal_volatile"], keep_units=["gdm3", "udisks2"])
    s = p["services"]
    assert "nvidia-pva-allowd.service" in s["disable"] and "syslog.socket" in s["disable"]
    assert "gdm3.service" not in s["mask"] and "udisks2.service" not in s["disable"]
    assert s["keep"] == ["gdm3.service", "udisks2.service"]
    assert "udisks2.service" not in s["blocks"]["headless"]
    assert p["journald"] == {"Storage": "volatile", "RuntimeMaxUse": "16M"}


@pytest.mark.parametrize(
    ("kwargs", "overrides", "message"),
    [
        ({"name": "forklift"}, None, "unknown profile 'forklift'; known device classes: devkit, smart_camera"),
        ({"name": None}, None, "profile_name must be a non-empty string"),
        ({"name": "devkit", "extra_blocks": ["no_gpu"]}, None, "unknown block 'no_gpu' in profile_extra_blocks"),
        ({"name": "devkit", "extra_blocks": "headless"}, None, "profile_extra_blocks must be a list of strings"),
        ({"name": "devkit", "keep_units": True}, None, "profile_keep_units must be a list of strings, got True"),
        ({"name": "devkit", "keep_units": ["a b"]}, None, "not systemd unit names: a b"),
        (
            {"name": "devkit", "extra_blocks": ["bad"]},
            {"blocks": {"bad": "name: bad\nservices:\n  units:\n    - {name: sshd, why: x, source: y}\n"}},
            "block 'bad' names protected unit sshd.service",
        ),
        (
            {"name": "devkit", "extra_blocks": ["bad"]},
            {"blocks": {"bad": "name: bad\nservices:\n  units:\n    - {name: foo, why: x, source: y, mask: 'yes'}\n"}},
            "'mask' must be a boolean, got 'yes'",
        ),
        (
            {"name": "devkit", "extra_blocks": ["bad"]},
            {"blocks": {"bad": "name: bad\nservices:\n  units:\n    - {name: foo}\n"}},
            "'why' is required",
        ),
        (
            {"name": "devkit", "extra_blocks": ["bad"]},
            {"blocks": {"bad": "name: bad\nservices: {units: [{name: foo, why: x, source: y}]\n"}},
            "profiles/blocks/bad.yml: not valid YAML",
        ),
        (
            {"name": "devkit", "extra_blocks": ["bad"]},
            {"blocks": {"bad": "name: other\n"}},
            "'name' must be 'bad' (the file name)",
        ),
        (
            {"name": "devkit", "extra_blocks": ["bad"]},
            {"blocks": {"bad": "name: bad\nswiotlb: {size_mib: 0}\n"}},
            "swiotlb.size_mib must be a positive integer (never 0",
        ),
        (
            {"name": "devkit", "extra_blocks": ["small_swiotlb", "bad"]},
            {"blocks": {"bad": "name: bad\nswiotlb: {size_mib: 8}\n"}},
            "ask for different SWIOTLB sizes",
        ),
        (
            {"name": "devkit", "extra_blocks": ["headless", "bad"]},
            {"blocks": {"bad": "name: bad\nservices: {default_target: graphical.target}\n"}},
            "blocks disagree on the default target",
        ),
        (
            {"name": "devkit", "extra_blocks": ["bad"]},
            {"blocks": {"bad": "name: bad\nservices: {default_target: multi-user}\n"}},
            "must name a .target unit",
        ),
        ({"name": "odd"}, {"classes": {"odd": "name: odd\nblocks: [headless, nope]\n"}}, "unknown block 'nope'"),
        ({"name": "odd"}, {"classes": {"odd": "name: odd\nfoo: 1\n"}}, "unknown key 'foo'"),
        ({"name": "devkit"}, {"protected": "protected: nope\n"}, "protected.yml: must be"),
    ],
)
def test_bad_input_messages(kwargs, overrides, message):
    res = resolve_profile(catalog(overrides), **kwargs)
    assert res["profile"] is None
    assert any(message in e for e in res["errors"]), res["errors"]


def test_serial_console_gettys_are_protected_by_pattern():
    block = "name: bad\nservices:\n  units:\n    - {name: serial-getty@ttyTCU0, why: x, source: y}\n"
    res = resolve_profile(catalog({"blocks": {"bad": block}}), "devkit", extra_blocks=["bad"])
    assert res["profile"] is None
    assert (
        "block 'bad' names protected unit serial-getty@ttyTCU0.service (protected by serial-getty@*.service)"
        in " ".join(res["errors"])
    )
    p = ok(catalog(), "devkit", extra_protected=["foo@*"])
    assert "foo@*.service" in p["protected"] and "nv-load-display-modules.service" in p["protected"]


def test_volatile_journal_without_rsyslog_off_is_refused():
    res = resolve_profile(catalog(), "devkit", extra_blocks=["journal_volatile"], keep_units=["rsyslog"])
    assert res["profile"] is None
    assert "saves memory only with rsyslog.service disabled" in " ".join(res["errors"]), res["errors"]
    block = "name: bad\njournald: {Storage: volatile}\n"
    res = resolve_profile(catalog({"blocks": {"bad": block}}), "devkit", extra_blocks=["bad"])
    assert "block 'bad' keeps the journal in RAM" in " ".join(res["errors"]), res["errors"]
    assert ok(catalog(), "devkit", extra_blocks=["journal_volatile"])["journald"]["Storage"] == "volatile"


def test_extra_protected_refuses_a_block_unit():
    res = resolve_profile(catalog(), "warehouse_robot", extra_protected=["bluetooth"])
    assert "block 'lean_network' names protected unit bluetooth.service" in " ".join(res["errors"])


def test_class_level_section_overrides_blocks():
    cls = "name: rr\nblocks: [headless, small_swiotlb]\ncarveouts: null\nswiotlb: {size_mib: 8}\n"
    p = ok(catalog({"classes": {"rr": cls}}), "rr")
    assert p["carveouts"] is None and p["swiotlb"] == {"size_mib": 8}


def test_shipped_files_are_plain_yaml_mappings():
    for path in PROFILES.rglob("*.yml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
