"""edgeslim.jetson.engine action plugin: block selection from the run/skip tags (as the services role did in YAML)
and the two device runs (probe, then apply once; one run when nothing changes; none when nothing is selected)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.plugins.action import ActionBase
from ansible_collections.edgeslim.jetson.plugins.action import engine as action
from ansible_collections.edgeslim.jetson.plugins.filter.profile_resolve import resolve_profile

PROFILES = Path(__file__).resolve().parents[4] / "profiles"


def warehouse(extra_blocks: list[str] | None = None) -> dict[str, Any]:
    catalog = {
        "dir": "profiles",
        "classes": {p.stem: p.read_text() for p in sorted((PROFILES / "classes").glob("*.yml"))},
        "blocks": {p.stem: p.read_text() for p in sorted((PROFILES / "blocks").glob("*.yml"))},
        "protected": (PROFILES / "protected.yml").read_text(),
    }
    res = resolve_profile(catalog, "warehouse_robot", extra_blocks or [])
    assert res["errors"] == []
    return res["profile"]


def test_all_blocks_by_default_and_with_the_layer_tag():
    profile = warehouse()
    for tags in (["all"], ["services"], ["services", "swiotlb"]):
        sel = action.select_services(profile, tags, [])
        assert sel["selected_blocks"] == profile["blocks"]
        assert sel["disable"] == profile["services"]["disable"] and sel["mask"] == profile["services"]["mask"]
        assert sel["default_target"] == "multi-user.target" and sel["requested"] is True
        assert sel["protected"] == profile["protected"] and sel["keep"] == profile["services"]["keep"]
        assert sel["blocks"]["gdm.service"] == "headless"


def test_tags_select_one_block_and_skip_tags_remove_one():
    profile = warehouse()
    only = action.select_services(profile, ["no_camera"], [])
    assert only["selected_blocks"] == ["no_camera"]
    assert only["default_target"] is None
    assert set(only["disable"] + only["mask"]) == set(profile["services"]["blocks"]["no_camera"])
    skipped = action.select_services(profile, ["all"], ["headless"])
    assert "headless" not in skipped["selected_blocks"] and skipped["default_target"] is None
    assert "gdm.service" not in skipped["mask"]
    assert action.select_services(profile, ["all"], ["headless", "no_camera"])["requested"] is True


def test_another_layers_tag_selects_nothing():
    sel = action.select_services(warehouse(), ["swiotlb"], [])
    assert sel["selected_blocks"] == [] and sel["requested"] is False


def test_journald_only_with_the_journal_volatile_block():
    profile = warehouse(["journal_volatile"])
    assert action.select_services(profile, ["all"], [])["journald"] == {"Storage": "volatile", "RuntimeMaxUse": "16M"}
    assert action.select_services(profile, ["all"], ["journal_volatile"])["journald"] == {}


PLAN_CHANGES = {
    "changes": True,
    "units": {"gdm.service": {}},
    "stopped": ["gdm.service"],
    "stopped_with": {},
    "absent": [],
    "kept": [],
    "default_target": {"before": "graphical.target", "after": "multi-user.target"},
    "unit_memory": {},
    "commands": [["systemctl", "mask", "--now", "--", "gdm.service"]],
}
RECORD = {"status": "applied", "reclaimed_mb": 100.0}


def run_action(probe: dict, apply: dict | None = None, check: bool = False, tags=("all",), services=None) -> tuple:
    task = mock.MagicMock()
    task.args = {"profile": warehouse(), "services": services or {}, "journal_path": "/j.json"}
    task.check_mode = check
    plugin = action.ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), None)
    calls = []

    def execute(name, module_args, task_vars):
        calls.append(module_args)
        return probe if module_args["phase"] == "probe" else apply

    with mock.patch.object(ActionBase, "run", return_value={}), mock.patch.object(plugin, "_execute_module", execute):
        res = plugin.run(task_vars={"ansible_run_tags": list(tags), "ansible_skip_tags": []})
    return res, calls


def test_two_device_runs_when_something_changes():
    res, calls = run_action({"services": PLAN_CHANGES}, {"changed": True, "services": {"record": RECORD}})
    assert [c["phase"] for c in calls] == ["probe", "apply"]
    assert calls[0]["services"]["default_target"] == "multi-user.target" and "profile" not in calls[0]
    assert res["changed"] is True and res["report"] == {"services": RECORD}


def test_one_device_run_when_nothing_changes():
    res, calls = run_action({"services": {**PLAN_CHANGES, "changes": False}})
    assert [c["phase"] for c in calls] == ["probe"]
    assert res["changed"] is False and res["report"]["services"]["status"] == "unchanged"


def test_no_device_run_when_no_block_is_selected():
    res, calls = run_action({}, tags=("swiotlb",))
    assert calls == [] and res["report"]["services"]["status"] == "skipped"


def test_check_mode_stops_after_the_probe_with_the_plan():
    res, calls = run_action({"services": PLAN_CHANGES, "diff": [{"after": "x"}]}, check=True)
    assert [c["phase"] for c in calls] == ["probe"]
    assert res["changed"] is True and res["diff"] == [{"after": "x"}]
    assert res["report"]["services"]["status"] == "planned"


@pytest.mark.parametrize("check_display", [True, False])
def test_display_in_use_refuses_going_headless(check_display):
    session = "Id=c2 Name=nvidia Type=x11 Class=user Remote=no Active=yes Seat=seat0"
    probe = {"services": PLAN_CHANGES, "display": {"checked": True, "sessions_in_use": [session]}}
    res, calls = run_action(probe, {"changed": True, "services": {"record": RECORD}},
                            services={"check_display": check_display})  # fmt: skip
    if check_display:
        assert [c["phase"] for c in calls] == ["probe"] and res["failed"] is True and res["changed"] is False
        assert res["report"]["services"]["details"]["failed_task"] == action.REFUSED_DISPLAY
        assert f"a local graphical session is active ({session})" in res["msg"]
    else:
        assert [c["phase"] for c in calls] == ["probe", "apply"]


def test_refusal_and_rolled_back_apply_records():
    res = run_action({"failed": True, "msg": "refusing to change anything: unit ssh.service is protected"})[0]
    rec = res["report"]["services"]
    assert rec["status"] == "failed" and rec["details"]["changed"] is False and res["changed"] is False
    failed = {"failed": True, "changed": True, "restored": True, "msg": "x is still active after stop"}
    res = run_action({"services": PLAN_CHANGES}, failed)[0]
    assert res["report"]["services"]["status"] == "rolled_back" and res["changed"] is True
    res = run_action({"services": PLAN_CHANGES}, {**failed, "restored": False, "restore_error": "boom"})[0]
    assert res["report"]["services"]["status"] == "failed"
    assert res["report"]["services"]["details"]["restore_error"] == "boom"
