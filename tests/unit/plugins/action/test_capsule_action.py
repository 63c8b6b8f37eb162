"""edgeslim.jetson.capsule action plugin: the refusals before any change, the placeholders, the build once per play
(parallel forks), the record decision, the verification after the capsule boot and the rescue (cancel, record back)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.edgeslim.jetson.plugins.action import capsule as action
from ansible_collections.edgeslim.jetson.plugins.module_utils import capsule as c

SPECS = {"p3767": "t23x_3767_bl_spec", "p3701": "t23x_agx_bl_spec", "p3701-0005": "t23x_agx64_bl_spec"}
COMMANDS = [
    ["./l4t_generate_soc_bup.sh", "-e", "{bup_spec}", "{chip_family}"],
    ["./generate_capsule/l4t_generate_soc_capsule.sh", "-o", "TEGRA_BL-{bup_spec}.Cap", "{chip}"],
]


def args(**over: Any) -> dict[str, Any]:
    base = {"bup_specs": SPECS, "build_commands": COMMANDS, "build_chdir": "/srv/L4T", "name": "TEGRA_BL.Cap",
            "build_output": "TEGRA_BL-{bup_spec}.Cap", "esp_path": "/opt/nvidia/esp"}  # fmt: skip
    return {**base, **over}


def refusal(a: dict[str, Any], module: str = "p3767-0005", peers: list[str] | None = None) -> str:
    with pytest.raises(action.Refused) as exc:
        action.plan_build(a, "t234", module, peers or [])
    return str(exc.value)


def test_bup_spec_by_module_id_then_board_id():
    assert action.bup_spec_for("p3701-0005", SPECS) == "t23x_agx64_bl_spec"
    assert action.bup_spec_for("p3701-0000", SPECS) == "t23x_agx_bl_spec"
    assert action.bup_spec_for("p3767-0005", SPECS) == "t23x_3767_bl_spec"
    assert action.bup_spec_for("p3509-0000", SPECS) == "" and action.bup_spec_for("", SPECS) == ""


def test_placeholders_filled_per_device():
    build = action.plan_build(args(), "t234", "p3767-0005", [])
    assert build["bup_spec"] == "t23x_3767_bl_spec"
    assert build["commands"] == [
        ["./l4t_generate_soc_bup.sh", "-e", "t23x_3767_bl_spec", "t23x"],
        ["./generate_capsule/l4t_generate_soc_capsule.sh", "-o", "TEGRA_BL-t23x_3767_bl_spec.Cap", "t234"],
    ]
    assert build["src"] == "/srv/L4T/TEGRA_BL-t23x_3767_bl_spec.Cap"
    assert build["dest"] == "/opt/nvidia/esp/EFI/UpdateCapsule/TEGRA_BL.Cap"
    absolute = action.plan_build(args(build_output="/out/{chip_family}-{chip}.Cap"), "t264", "p3767-0005", [])
    assert absolute["src"] == "/out/t26x-t264.Cap"


def test_module_without_bup_spec_refused_naming_the_known_ones():
    msg = refusal(args(), module="p3509-0000")
    assert msg.startswith("no BUP spec for module p3509-0000 (t234): a capsule built for another module's boot chain")
    assert "(known: p3767, p3701, p3701-0005)" in msg


def test_build_naming_another_modules_spec_refused():
    msg = refusal(args(build_commands=[["./l4t_generate_soc_bup.sh", "-e", "t23x_agx_bl_spec", "t23x"]]))
    assert msg.startswith("carveouts_capsule_build_commands name BUP spec t23x_agx_bl_spec, but this device is module "
                          "p3767-0005 (t23x_3767_bl_spec); write {bup_spec}")  # fmt: skip
    # its own spec written out is accepted
    own = action.plan_build(args(build_commands=[["x", "t23x_3767_bl_spec"]]), "t234", "p3767-0005", [])
    assert own["commands"] == [["x", "t23x_3767_bl_spec"]]


@pytest.mark.parametrize(
    "over",
    [{"build_commands": []}, {"build_commands": ["./l4t_generate_soc_bup.sh -e x"]}, {"build_chdir": ""},
     {"build_output": ""}],
)  # fmt: skip
def test_no_build_interface_refused(over: dict[str, Any]):
    assert refusal(args(**over)) == action.BUILD_HELP


def test_one_output_for_several_specs_refused():
    msg = refusal(args(build_output="TEGRA_BL.Cap"), peers=["t23x_agx_bl_spec", "t23x_3767_bl_spec"])
    assert msg == ("this play has modules with BUP specs t23x_3767_bl_spec, t23x_agx_bl_spec and one capsule output "
                   "(TEGRA_BL.Cap): put {bup_spec} in carveouts_capsule_build_output")  # fmt: skip
    # the same spec on every host, or {bup_spec} in the output: accepted
    action.plan_build(args(build_output="TEGRA_BL.Cap"), "t234", "p3767-0005", ["t23x_3767_bl_spec"])
    action.plan_build(args(), "t234", "p3767-0005", ["t23x_agx_bl_spec"])


def test_record_decision():
    applied = {"status": "applied", "sha256": "aa"}
    assert action.todo(applied, "aa", False) is False
    assert action.todo(applied, "bb", False) is True
    assert action.todo({"status": "pending", "sha256": "aa"}, "aa", False) is True
    assert action.todo({}, "aa", False) is True
    assert action.todo({}, None, True) is False  # check mode delivers nothing


def after(current: str, status: int = 0, failure: str | None = None, cus: int | None = 1) -> dict[str, Any]:
    return {"bootloader": {"current": current, "capsule_update_status": cus},
            "esrt": [{"fw_class": "x", "last_attempt_status": status}], "capsule_update_failure": failure}  # fmt: skip


def test_verification_after_the_capsule_boot():
    assert action.verify_failure("A", after("B")) is None
    assert action.verify_failure("0", after("1")) is None
    kept = action.verify_failure("A", after("A", 6163, c.capsule_update_failure(3)))
    assert kept is not None and kept.startswith("the capsule was not applied: boot chain A (expected B after the "
                                                "update), ESRT [6163], nvbootctrl capsule update status 3")  # fmt: skip
    assert kept.endswith("UEFI kept or fell back to the previous chain, which still has the stock BCT")
    assert "ESRT [6163]" in (action.verify_failure("A", after("B", 6163)) or "")
    assert "no capsule update status" in (action.verify_failure("A", {"bootloader": None, "esrt": []}) or "")


def test_build_once_across_parallel_hosts(tmp_path: Path):
    calls: list[list] = []

    def slow(commands: list, chdir: str) -> None:
        calls.append(commands)
        time.sleep(0.3)

    build = {"chdir": "/srv/L4T", "commands": [["a", "t23x_3767_bl_spec"]]}
    results: list[dict] = []
    forks = [threading.Thread(target=lambda: results.append(action.build_once(str(tmp_path), "run1", build, slow)))
             for _fork in range(4)]  # fmt: skip
    for fork in forks:
        fork.start()
    for fork in forks:
        fork.join()
    assert len(calls) == 1
    assert sorted(r["built"] for r in results) == [False, False, False, True]
    assert all(r["error"] is None for r in results)
    # another spec's commands, a later run: built again
    action.build_once(str(tmp_path), "run1", {**build, "commands": [["a", "t23x_agx_bl_spec"]]}, slow)
    action.build_once(str(tmp_path), "run2", build, slow)
    assert len(calls) == 3


def test_failed_build_is_not_retried_by_each_host(tmp_path: Path):
    calls: list[list] = []

    def broken(commands: list, chdir: str) -> None:
        calls.append(commands)
        raise action.Refused("capsule build failed: a (rc 2 in /srv/L4T): boom")

    build = {"chdir": "/srv/L4T", "commands": [["a"]]}
    first = action.build_once(str(tmp_path), "r", build, broken)
    second = action.build_once(str(tmp_path), "r", build, broken)
    assert first == {"built": True, "error": "capsule build failed: a (rc 2 in /srv/L4T): boom"}
    assert second == {"built": False, "error": first["error"]} and len(calls) == 1


def test_run_commands_names_the_failing_tool(tmp_path: Path):
    (tmp_path / "ok").write_text("")
    action.run_commands([["true"], ["test", "-e", "ok"]], str(tmp_path))
    with pytest.raises(action.Refused, match=r"capsule build failed: sh -c echo nope >&2; exit 3 \(rc 3 in .*\): nope"):
        action.run_commands([["sh", "-c", "echo nope >&2; exit 3"], ["touch", "never"]], str(tmp_path))
    assert not (tmp_path / "never").exists()
    with pytest.raises(action.Refused, match="No such file"):
        action.run_commands([["./missing.sh"]], str(tmp_path))


def test_hold_only_an_installed_package_and_mark_only_edgeslims_hold():
    assert action.hold_wanted(0, "ii  install ok installed") == (True, True)
    assert action.hold_wanted(0, "hi  hold ok installed") == (True, False)  # the operator's hold stays theirs
    assert action.hold_wanted(0, "un  unknown ok not-installed") == (False, False)
    assert action.hold_wanted(1, "") == (False, False)


def test_reports():
    mem = {"snapshot": {"meminfo_kb": {"MemTotal": 7_000_000}}}
    mem_after = {"snapshot": {"meminfo_kb": {"MemTotal": 7_032_768}}}
    applied = action.delivered_report(True, "A", "aa", mem, after("B"), mem_after)
    assert applied["reclaimed_mb"] == 32.0
    assert applied["details"]["capsule"] == {"status": "applied", "slot_before": "A", "slot_after": "B",
                                             "memtotal_before_kb": 7_000_000, "memtotal_after_kb": 7_032_768,
                                             "sha256": "aa", "capsule_update_status": 1}  # fmt: skip
    pending = action.delivered_report(True, "A", "aa", mem, None, None)
    assert pending["reclaimed_mb"] is None and pending["details"]["capsule"]["status"] == "pending_reboot"
    assert pending["details"]["capsule"]["slot_after"] is None
    assert action.delivered_report(False, "A", "aa", mem, None, None)["details"]["capsule"]["status"] == "staged"
    info = {"checked": True, "drift": ["x present again"], "unchecked": [], "notes": []}
    drift = action.drift_report(False, {"sha256": "aa", "slot_after": "B"}, info)
    assert drift["drift"] == ["x present again"] and drift["details"]["capsule"]["status"] == "drift"
    assert action.drift_report(True, {}, {**info, "checked": False})["drift"] is None
    assert action.drift_report(True, {}, info)["details"]["capsule"]["status"] == "check_mode"
    assert action.drift_report(False, {}, {**info, "drift": []})["details"]["capsule"]["status"] == "unchanged"
    rec = action.applied_record({"status": "applied", "old": 1}, "bb", "A", after("B"), ["headless"], {"s": 1})
    assert rec == {"status": "applied", "old": 1, "sha256": "bb", "slot_before": "A", "slot_after": "B",
                   "recipes": ["headless"], "capsule_update_status": 1, "state_after": {"s": 1}}  # fmt: skip


# ---- the deliver protocol against a fake device ---------------------------------------------------------------
def capsule_blob() -> bytes:
    """A minimal FMP capsule for t234 (EFI capsule header, FMP header, one image header)."""
    image = struct.pack("<I16s4BII", 2, c.IMAGE_TYPE["t234"].bytes_le, 1, 0, 0, 0, 0, 0)
    fmp = struct.pack("<IHHQ", 1, 0, 1, 16) + image
    header = struct.pack("<16sIII", c.FMP_CAPSULE_GUID.bytes_le, 28, 0x50000, 28 + len(fmp))
    return header + fmp


class FakeDevice(action.ActionModule):
    def __init__(self, args: dict[str, Any], record: dict[str, Any], slot_after: str, tmp: Path):
        self._args, self._vars, self._check = args, {"inventory_hostname": "nano"}, False
        self.record, self.slot_after, self.calls, self.tmp = dict(record), slot_after, [], tmp
        self._task = type("T", (), {"_uuid": "task-1"})()

    def _execute_module(self, module_name: str = "", module_args: Any = None, task_vars: Any = None, **_: Any):
        return self._module(module_name, module_args or {}, module_name)

    def _module(self, name: str, args: dict[str, Any], what: str) -> dict[str, Any]:
        self.calls.append((name, args.get("state") or args.get("path") or ""))
        if name.endswith("slurp"):
            if not self.record:
                return {"failed": True, "msg": "file not found"}
            return {"content": base64.b64encode(json.dumps(self.record).encode()).decode()}
        if name.endswith("uefi_capsule") and args["state"] == "checked":
            return after(self.slot_after, 0 if self.slot_after == "B" else 6163,
                         None if self.slot_after == "B" else c.capsule_update_failure(3))  # fmt: skip
        if name.endswith("memory_snapshot"):
            return {"snapshot": {"meminfo_kb": {"MemTotal": 7_000_000}}}
        if name.endswith("carveouts_info"):
            return {"state": {"boot_slot": self.slot_after}, "checked": True, "drift": [], "unchecked": [], "notes": []}
        if name.endswith("file") and args.get("state") == "absent":
            self.record = {}
        return {"changed": True}

    def _action(self, name: str, args: dict[str, Any], what: str) -> dict[str, Any]:
        self.calls.append((name, args.get("dest", "")))
        if name.endswith("copy") and args.get("dest") == action.RECORD:
            self.record = json.loads(args["content"])
        return {"changed": True}

    def _build(self, build: dict[str, Any]) -> dict[str, Any]:
        return {"built": True, "error": None}


def deliver(tmp_path: Path, record: dict[str, Any], slot_after: str) -> tuple[FakeDevice, dict[str, Any]]:
    src = tmp_path / "TEGRA_BL.Cap"
    src.write_bytes(capsule_blob())
    validated = {"chip": "t234", "src": str(src), "dest": "/opt/nvidia/esp/EFI/UpdateCapsule/TEGRA_BL.Cap",
                 "recipes": ["headless"], "slot_before": "A", "chdir": str(tmp_path),
                 "commands": [["true"]]}  # fmt: skip
    dev = FakeDevice({"validated": validated, "request": True, "reboot_ok": True}, record, slot_after, tmp_path)
    result: dict[str, Any] = {"report": {}}
    try:
        dev._deliver(result)
    except action.Refused as exc:
        result.update(failed=True, msg=str(exc))
    return dev, result


def test_deliver_applies_verifies_and_records(tmp_path: Path):
    dev, result = deliver(tmp_path, {}, "B")
    assert not result.get("failed") and result["report"]["details"]["capsule"]["status"] == "applied"
    assert dev.record["status"] == "applied" and dev.record["slot_after"] == "B"
    assert dev.record["sha256"] == hashlib.sha256(capsule_blob()).hexdigest()
    names = [n for n, _arg in dev.calls]
    assert names.index("ansible.legacy.reboot") < names.index("edgeslim.jetson.memory_snapshot", names.index(
        "ansible.legacy.reboot"))  # fmt: skip
    # the same capsule again: not delivered, the device is read for drift
    dev2, again = deliver(tmp_path, dev.record, "B")
    assert again["report"]["details"]["capsule"]["status"] == "unchanged" and again["drift"] == []
    assert "ansible.legacy.reboot" not in [n for n, _arg in dev2.calls]


def test_rejected_capsule_cancelled_and_previous_record_put_back(tmp_path: Path):
    previous = {"status": "applied", "sha256": "0" * 64, "slot_after": "A"}
    dev, result = deliver(tmp_path, previous, "A")
    assert result["failed"] and result["msg"].startswith("capsule delivery failed: the capsule was not applied")
    assert result["msg"].endswith("-- request cancelled, staged capsule removed (the device boots the firmware it had)")
    assert ("edgeslim.jetson.uefi_capsule", "cancelled") in dev.calls
    assert dev.record == previous
    assert result["report"]["details"]["capsule"]["status"] == "failed"
    # no previous record: the pending one is forgotten
    dev, result = deliver(tmp_path, {}, "A")
    assert result["failed"] and dev.record == {}


def test_lost_connection_at_the_reboot_runs_the_rescue(tmp_path: Path):
    from ansible.errors import AnsibleConnectionFailure

    class Lost(FakeDevice):
        def _action(self, name: str, args: dict[str, Any], what: str) -> dict[str, Any]:
            if name.endswith("reboot"):
                raise AnsibleConnectionFailure("timed out waiting for the device")
            return super()._action(name, args, what)

    src = tmp_path / "TEGRA_BL.Cap"
    src.write_bytes(capsule_blob())
    validated = {"chip": "t234", "src": str(src), "dest": "/esp/EFI/UpdateCapsule/TEGRA_BL.Cap", "slot_before": "A"}
    dev = Lost({"validated": validated, "request": True, "reboot_ok": True}, {}, "B", tmp_path)
    with pytest.raises(action.Refused, match=r"^capsule delivery failed: timed out waiting for the device -- request"):
        dev._deliver({"report": {}})
    assert ("edgeslim.jetson.uefi_capsule", "cancelled") in dev.calls and dev.record == {}


def test_peer_specs_from_the_play_hosts_registered_jetson_info():
    dev = FakeDevice({"bup_specs": SPECS}, {}, "B", Path("."))
    dev._vars = {
        "inventory_hostname": "nano",
        "ansible_play_hosts": ["nano", "agx", "skipped", "own-map"],
        "hostvars": {
            "nano": {"__carveouts_info": {"soc": "t234", "module": {"module": "p3767-0005"}}},
            "agx": {"__carveouts_info": {"soc": "t234", "module": {"module": "p3701-0000"}}},
            "skipped": {"__carveouts_info": {"skipped": True}},
            "own-map": {"__carveouts_info": {"soc": "t234", "module": {"module": "p3767-0003"}},
                        "carveouts_capsule_bup_specs": {"p3767": "t23x_custom_bl_spec"}},
        },
    }  # fmt: skip
    assert dev._peer_specs() == ["t23x_agx_bl_spec", "t23x_custom_bl_spec"]


def test_boolean_options_read_as_ansible_does():
    assert action.flag("false", True) is False and action.flag("no", True) is False and action.flag(0, True) is False
    assert action.flag("yes", False) is True and action.flag(True, False) is True
    assert action.flag(None, True) is True and action.flag("", False) is False
