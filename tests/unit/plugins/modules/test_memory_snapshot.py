"""memory_snapshot through main(): contract 1 structure, samples, units, check mode, bad input."""

from __future__ import annotations

import pytest
from ansible_collections.edgeslim.jetson.plugins.modules import memory_snapshot
from conftest import FIXTURES
from modhelper import run_module

MEMINFO = str(FIXTURES / "meminfo" / "orin-nano-r36.txt")
SHOW = (
    "Id=gdm.service\nControlGroup=\nMemoryCurrent=104857600\nActiveState=active\nLoadState=loaded\n\n"
    "Id=nope.service\nControlGroup=\nMemoryCurrent=[not set]\nActiveState=inactive\nLoadState=not-found\n"
)


def run(args: dict, check: bool = False, commands: dict | None = None) -> dict:
    commands = commands or {}
    calls = []

    def run_command(argv):
        calls.append(argv)
        for key, result in commands.items():
            if key in " ".join(argv):
                return result
        return (0, "boot-1\n", "")

    args = {"meminfo_path": MEMINFO, "interval": 0, "boot_id_command": ["true"], **args}
    res = run_module(memory_snapshot.main, args, check=check, run_command=run_command, bin_path="/bin/systemctl")
    res["_calls"] = calls
    return res


def test_contract_structure():
    res = run({"samples": 3})
    snap = res["snapshot"]
    assert res["changed"] is False
    assert set(snap) >= {"timestamp", "epoch", "boot_id", "samples", "settle_seconds", "caches_dropped", "meminfo_kb",
                         "meminfo_mb", "spread_kb", "units"}  # fmt: skip
    assert snap["meminfo_kb"]["MemTotal"] == 7802880 and snap["meminfo_mb"]["MemTotal"] == 7620.0
    assert snap["meminfo_kb"]["NvMapMemUsed"] == 126452
    assert snap["spread_kb"]["MemAvailable"] == 0 and snap["samples"] == 3
    assert snap["boot_id"] == "boot-1"
    assert snap["timestamp"].endswith("Z")


def test_units_in_one_systemctl_call():
    res = run({"units": ["gdm.service", "nope.service"]}, commands={"show": (0, SHOW, "")})
    snap = res["snapshot"]
    assert snap["units"]["gdm.service"]["memory_kb"] == 102400
    assert snap["units"]["gdm.service"]["source"] == "memory_current"
    assert snap["units_missing"] == ["nope.service"]
    assert sum("show" in c for c in res["_calls"]) == 1


def test_drop_caches_is_skipped_in_check_mode():
    res = run({"drop_caches": True}, check=True)
    assert res["snapshot"]["caches_dropped"] is False and res["changed"] is False
    assert ["sync"] not in res["_calls"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"samples": 0}, "samples must be >= 1"),
        ({"settle": -1}, "must be >= 0"),
        ({"units": ["*", "gdm.service"]}, "cannot be combined"),
        ({"meminfo_path": str(FIXTURES / "meminfo" / "truncated.txt")}, "line 3"),
        ({"meminfo_path": "/nonexistent/meminfo"}, "No such file"),
    ],
)
def test_bad_input_fails_cleanly(args, message):
    res = run(args)
    assert res["failed"] and message in res["msg"], res


def test_failing_boot_id_command():
    res = run({"boot_id_command": ["false"]}, commands={"false": (1, "", "nope")})
    assert res["failed"] and "boot_id_command" in res["msg"]
